"""Validation: every bad input is an InvalidInputError naming the field, and changes nothing.

DESIGN.md "Errors": bad input gets an error naming the field and the problem; nothing a bad
request does changes any model's state. Each datum case runs with the bad datum first and last
in its batch (the engine must validate the whole request before computing anything).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from mock_server.engine import (
    LOSSES,
    AdamConfig,
    DatumInput,
    DatumLossResult,
    InvalidInputError,
    LoraConfig,
    SampleSpec,
    TrainingModel,
    UnknownBaseModelError,
    get_spec,
    load_catalog,
)
from tests.support.engine_data import (
    TINY_64,
    grads,
    make_batch,
    shared_engine,
    warm_model,
)

V = 64  # tinker-ref/tiny-64
TOKENS = torch.tensor([1, 2, 3, 4])
TARGETS = torch.tensor([2, 3, 4, 5])


def _rl(**overrides: torch.Tensor) -> dict[str, torch.Tensor]:
    inputs = {
        "target_tokens": TARGETS,
        "logprobs": torch.full((4,), -2.0),
        "advantages": torch.ones(4),
    }
    return inputs | overrides


def _ce(**overrides: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"target_tokens": TARGETS, "weights": torch.ones(4)} | overrides


def _without(inputs: dict[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in inputs.items() if k != key}


def _case(name, loss_fn, inputs, field, fragment, tokens=TOKENS):
    """One bad datum: its loss_fn_inputs (and model_input), the field after "data[i]." that the
    error must name, and a fragment of the message that must explain the problem."""
    return pytest.param(loss_fn, tokens, inputs, field, fragment, id=name)


TARGETS_K2 = TARGETS[:, None].repeat(1, 2)  # (4, 2) multi-target
EMPTY = torch.zeros(0, dtype=torch.int64)
TARGET_FIELD = "loss_fn_inputs.target_tokens"
WEIGHTS_FIELD = "loss_fn_inputs.weights"
# fmt: off
DATUM_CASES = [
    # shapes
    _case("target length != model_input length", "cross_entropy",
          _ce(target_tokens=TARGETS[:3], weights=torch.ones(3)), TARGET_FIELD,
          "model_input length 4"),
    _case("weights shape != target shape", "cross_entropy", _ce(weights=torch.ones(3)),
          WEIGHTS_FIELD, "expected shape [4], got [3]"),
    _case("[N, K] targets with [N] weights", "cross_entropy", _ce(target_tokens=TARGETS_K2),
          WEIGHTS_FIELD, "expected shape [4, 2]"),
    _case("[N, K] targets given to an RL loss", "importance_sampling",
          _rl(target_tokens=TARGETS_K2), TARGET_FIELD, "expected shape [N]"),
    _case("per-token clip threshold of the wrong shape", "ppo",
          _rl(clip_low_threshold=torch.full((3,), 0.8)), "loss_fn_inputs.clip_low_threshold",
          "expected shape [4], got [3]"),
    _case("2-D model_input", "cross_entropy", _ce(), "model_input", "1-D",
          tokens=TOKENS[None, :]),
    _case("empty model_input", "cross_entropy", _ce(target_tokens=EMPTY, weights=torch.zeros(0)),
          "model_input", "empty", tokens=EMPTY),
    # vocabulary
    _case("model_input id above the vocabulary", "cross_entropy", _ce(), "model_input",
          f"token id {V} outside the vocabulary [0, {V})", tokens=torch.tensor([1, 2, V, 4])),
    _case("negative model_input id", "cross_entropy", _ce(), "model_input",
          "token id -1 outside", tokens=torch.tensor([1, -1, 3, 4])),
    _case("target id above the vocabulary", "cross_entropy",
          _ce(target_tokens=torch.tensor([2, 3, 4, V])), TARGET_FIELD, f"token id {V} outside"),
    _case("negative target id", "ppo", _rl(target_tokens=torch.tensor([-3, 3, 4, 5])),
          TARGET_FIELD, "token id -3 outside"),
    # dtypes
    _case("int32 model_input", "cross_entropy", _ce(), "model_input", "int64",
          tokens=TOKENS.int()),
    _case("float target_tokens", "cross_entropy", _ce(target_tokens=TARGETS.float()),
          TARGET_FIELD, "expected dtype int64, got float32"),
    _case("float64 weights", "cross_entropy", _ce(weights=torch.ones(4, dtype=torch.float64)),
          WEIGHTS_FIELD, "expected dtype float32, got float64"),
    _case("int64 advantages", "importance_sampling",
          _rl(advantages=torch.ones(4, dtype=torch.int64)), "loss_fn_inputs.advantages",
          "expected dtype float32, got int64"),
    # non-finite values
    _case("NaN weight", "cross_entropy", _ce(weights=torch.tensor([1.0, math.nan, 1.0, 1.0])),
          WEIGHTS_FIELD, "NaN or infinity"),
    _case("infinite weight", "cross_entropy",
          _ce(weights=torch.tensor([1.0, 1.0, -math.inf, 1.0])), WEIGHTS_FIELD,
          "NaN or infinity"),
    _case("NaN advantage", "ppo", _rl(advantages=torch.tensor([0.0, 1.0, math.nan, 1.0])),
          "loss_fn_inputs.advantages", "NaN or infinity"),
    _case("-inf sampler logprob", "cispo",
          _rl(logprobs=torch.tensor([-1.0, -math.inf, -1.0, -1.0])), "loss_fn_inputs.logprobs",
          "NaN or infinity"),
    # missing and unknown inputs
    _case("missing weights", "cross_entropy", _without(_ce(), "weights"), WEIGHTS_FIELD,
          "requires this input"),
    _case("missing target_tokens", "cross_entropy", _without(_ce(), "target_tokens"),
          TARGET_FIELD, "requires this input"),
    _case("missing advantages", "ppo", _without(_rl(), "advantages"),
          "loss_fn_inputs.advantages", "requires this input"),
    _case("missing sampler logprobs", "importance_sampling", _without(_rl(), "logprobs"),
          "loss_fn_inputs.logprobs", "requires this input"),
    _case("missing sequence_ratio_mask", "gspo", _rl(), "loss_fn_inputs.sequence_ratio_mask",
          "requires this input"),
    _case("unknown extra input", "cross_entropy", _ce(mask=torch.ones(4)),
          "loss_fn_inputs.mask", "does not take this input"),
    _case("weights given to an RL loss", "ppo", _rl(weights=torch.ones(4)), WEIGHTS_FIELD,
          "does not take this input"),
]
# fmt: on


def _model_with_state() -> TrainingModel:
    """Adam state from one step, and a pending gradient: everything a request could disturb."""
    model = warm_model(TINY_64)
    batch = make_batch(1, V, (4, 6))
    model.forward_backward(batch.datums(weights=batch.ones()), "cross_entropy")
    model.optim_step(AdamConfig(learning_rate=1e-2))
    model.forward_backward(batch.datums(weights=batch.floats("w")), "cross_entropy")
    return model


def _assert_rejected_without_effect(
    model: TrainingModel, call: Callable[[], object], field: str, fragment: str
) -> InvalidInputError:
    digest, pending = model.digest(include_optimizer=True), grads(model)
    with pytest.raises(InvalidInputError) as excinfo:
        call()
    assert excinfo.value.field == field
    assert fragment in excinfo.value.message
    assert str(excinfo.value).startswith(f"{field}: ")
    assert model.digest(include_optimizer=True) == digest
    for name, gradient in grads(model).items():
        assert torch.equal(gradient, pending[name]), name
    return excinfo.value


@pytest.mark.spec("LOSS-1", "LOSS-17", "LOSS-19", "WIRE-14")
@pytest.mark.parametrize("bad_position", ["first", "last"])
@pytest.mark.parametrize(("loss_fn", "tokens", "inputs", "field", "fragment"), DATUM_CASES)
def test_a_bad_datum_is_rejected_naming_its_field_and_changes_nothing(
    loss_fn, tokens, inputs, field, fragment, bad_position
):
    good_inputs = _ce() if loss_fn == "cross_entropy" else _rl()
    if loss_fn == "gspo":
        good_inputs["sequence_ratio_mask"] = torch.ones(4)
    good = DatumInput(TOKENS, good_inputs)
    bad = DatumInput(tokens, inputs)
    data = [bad, good] if bad_position == "first" else [good, good, bad]
    index = 0 if bad_position == "first" else len(data) - 1

    with_gradient = _model_with_state()
    _assert_rejected_without_effect(
        with_gradient,
        lambda: with_gradient.forward_backward(data, loss_fn),
        f"data[{index}].{field}",
        fragment,
    )
    without_gradient = warm_model(TINY_64)
    _assert_rejected_without_effect(
        without_gradient,
        lambda: without_gradient.forward_backward(data, loss_fn),
        f"data[{index}].{field}",
        fragment,
    )
    assert not without_gradient.has_gradient()
    # the good datums alone are accepted: the rejection was about the bad one
    without_gradient.forward_backward([d for d in data if d is not bad], loss_fn)


@pytest.mark.spec("LOSS-20")
def test_an_unknown_loss_is_rejected_with_a_message_listing_the_builtin_losses():
    model = _model_with_state()
    error = _assert_rejected_without_effect(
        model,
        lambda: model.forward_backward([DatumInput(TOKENS, _ce())], "cross_entropy_v2"),
        "loss_fn",
        "unknown loss 'cross_entropy_v2'",
    )
    for name in ("cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo"):
        assert name in error.message
    assert set(LOSSES) == {"cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo"}


@pytest.mark.spec("LOSS-18")
@pytest.mark.parametrize(
    ("loss_fn", "config", "field", "fragment"),
    [
        (
            "ppo",
            {"clip_epsilon": 0.2},
            "loss_fn_config.clip_epsilon",
            "accepted keys: clip_high_threshold, clip_low_threshold",
        ),
        (
            "cross_entropy",
            {"clip_low_threshold": 0.8},
            "loss_fn_config.clip_low_threshold",
            "accepted keys: none",
        ),
        ("dro", {"beta": "0.1"}, "loss_fn_config.beta", "expected a number"),
        ("dro", {"beta": True}, "loss_fn_config.beta", "expected a number"),
        ("dro", {"beta": math.nan}, "loss_fn_config.beta", "must be finite"),
        (
            "cispo",
            {"clip_high_threshold": math.inf},
            "loss_fn_config.clip_high_threshold",
            "must be finite",
        ),
    ],
)
def test_a_bad_loss_fn_config_is_rejected_naming_the_key_and_changes_nothing(
    loss_fn, config, field, fragment
):
    model = _model_with_state()
    datum = DatumInput(TOKENS, _ce() if loss_fn == "cross_entropy" else _rl())
    _assert_rejected_without_effect(
        model, lambda: model.forward_backward([datum], loss_fn, config), field, fragment
    )


def test_an_unknown_base_model_is_rejected_with_a_message_listing_the_supported_names():
    with pytest.raises(UnknownBaseModelError) as excinfo:
        shared_engine().create_model("Qwen/Qwen9-1T", LoraConfig(rank=4), 0, "k")
    error = excinfo.value
    assert isinstance(error, InvalidInputError)
    assert error.field == "base_model"
    assert "'Qwen/Qwen9-1T'" in error.message
    for name in load_catalog():
        assert name in error.message
    with pytest.raises(UnknownBaseModelError):
        get_spec("qwen/qwen3-8b")  # names are exact, case included


@pytest.mark.spec("OPT-7")
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", -1e-4),
        ("learning_rate", math.nan),
        ("learning_rate", math.inf),
        ("beta1", 1.0),
        ("beta1", -0.1),
        ("beta2", 1.0),
        ("beta2", math.nan),
        ("eps", -1e-8),
        ("weight_decay", -0.01),
        ("weight_decay", math.inf),
        ("grad_clip_norm", -1.0),
    ],
)
def test_bad_adam_params_are_rejected_naming_the_field_and_change_nothing(field, value):
    model = _model_with_state()
    adam = replace(AdamConfig(), **{field: value})
    _assert_rejected_without_effect(
        model, lambda: model.optim_step(adam), f"adam_params.{field}", "out of range"
    )
    assert model.has_gradient()  # the pending gradient survives for a corrected retry


@pytest.mark.parametrize(
    ("lora", "field"),
    [
        (LoraConfig(rank=4, train_attn=False, train_mlp=False, train_unembed=False), "lora_config"),
        (LoraConfig(rank=0), "lora_config.rank"),
    ],
)
def test_a_lora_config_that_trains_nothing_is_rejected_naming_the_field(lora, field):
    with pytest.raises(InvalidInputError) as excinfo:
        shared_engine().create_model(TINY_64, lora, 0, "k")
    assert excinfo.value.field == field


@pytest.mark.spec("LOSS-19")
@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"weights": torch.ones(4)}, "required"),
        ({"target_tokens": TARGETS.float()}, "required: int64"),
        ({"target_tokens": TARGETS[:3]}, "first dimension 3 != model_input length 4"),
        ({"target_tokens": torch.tensor([1, 2, 3, V])}, f"[0, {V})"),
    ],
)
def test_per_datum_losses_reject_bad_targets_naming_the_field_and_change_nothing(inputs, fragment):
    model = _model_with_state()
    data = [DatumInput(TOKENS, _ce()), DatumInput(TOKENS, inputs)]
    _assert_rejected_without_effect(
        model,
        lambda: model.forward_backward_per_datum(data, _never_called),
        "data[1].loss_fn_inputs.target_tokens",
        fragment,
    )


def _never_called(logprobs, inputs) -> DatumLossResult:
    raise AssertionError("validation must run before any datum loss")


@pytest.mark.spec("WIRE-14")
def test_a_per_datum_loss_that_fails_on_the_last_datum_adds_no_gradient():
    model = warm_model(TINY_64)
    data = [DatumInput(TOKENS, _ce()) for _ in range(3)]
    calls = []

    def fails_on_the_last(logprobs, inputs) -> DatumLossResult:
        calls.append(len(calls))
        if len(calls) == len(data):
            raise InvalidInputError("data[2].loss_fn_inputs", "rejected by the uploaded loss")
        return DatumLossResult(-logprobs.sum(), {}, {})

    _assert_rejected_without_effect(
        model,
        lambda: model.forward_backward_per_datum(data, fails_on_the_last),
        "data[2].loss_fn_inputs",
        "rejected by the uploaded loss",
    )
    assert calls == [0, 1, 2]
    assert not model.has_gradient()


_PROMPT = torch.tensor([1, 2, 3])


@pytest.mark.spec("SMP-4")
@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (SampleSpec(torch.zeros(0, dtype=torch.int64), seed=0), "prompt"),
        (SampleSpec(torch.tensor([1, V]), seed=0), "prompt"),
        (SampleSpec(_PROMPT, seed=0, num_samples=0), "num_samples"),
        (SampleSpec(_PROMPT, seed=0, max_tokens=0), "sampling_params.max_tokens"),
        (SampleSpec(_PROMPT, seed=0, max_tokens=40000), "sampling_params.max_tokens"),
        (SampleSpec(_PROMPT, seed=0, temperature=-0.5), "sampling_params.temperature"),
        (SampleSpec(_PROMPT, seed=0, top_p=0.0), "sampling_params.top_p"),
        (SampleSpec(_PROMPT, seed=0, stop_token_ids=(V,)), "sampling_params.stop"),
        (SampleSpec(_PROMPT, seed=0, topk_prompt_logprobs=-1), "topk_prompt_logprobs"),
        (
            SampleSpec(
                _PROMPT, seed=0, target_prompt_logprobs=torch.zeros(3, 2, dtype=torch.int64)
            ),
            "target_prompt_logprobs",
        ),
    ],
)
def test_a_bad_sample_request_is_rejected_naming_the_field(spec, field):
    model = warm_model(TINY_64)
    with pytest.raises(InvalidInputError) as excinfo:
        shared_engine().sample(TINY_64, model.weights(), spec)
    assert excinfo.value.field == field
