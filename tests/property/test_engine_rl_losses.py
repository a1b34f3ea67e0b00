"""The RL losses: closed-form gradients, clipping, and client re-implementations via custom loss.

Spec LOSS-10 to LOSS-14 (per token, r = exp(l - q), A = advantages):

    importance_sampling  L = -r A                           dL/dl = -A r
    ppo                  L = -min(r A, clamp(r, lo, hi) A)  -A r if the unclipped branch is
                                                            selected, else 0
    cispo                L = -sg(clamp(r, lo, hi)) l A      -clamp(r, lo, hi) A
    dro                  L = -(l A - beta/2 (l - q)^2)      -A + beta (l - q)
    gspo                 ppo with the sequence ratio s = exp(mean over the mask of (l - q))

The unclipped branch is selected when A > 0 and r <= hi, or A < 0 and r >= lo; clamp is
inclusive. Thresholds default to 0.8 / 1.2 and come from loss_fn_config or, per token, from
the clip_*_threshold inputs (LOSS-16). Also checked: clip boundaries, GSPO with a one-token mask,
and client re-implementations through the custom-loss path (DET-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from mock_server.engine import DatumInput, InvalidInputError, derive_seed, get_loss
from tests.support.engine_data import (
    TEST_MODELS,
    Batch,
    CustomLoss,
    assert_grads_close,
    assert_grads_equal,
    batches,
    custom_loss_backward,
    forward_logprobs,
    grads,
    some_gradient_is_nonzero,
    twins_and_batch,
    warm_model,
)

RL_LOSSES = ("importance_sampling", "ppo", "cispo", "dro", "gspo")
CLIPPED_LOSSES = ("ppo", "cispo", "gspo")
THRESHOLD_MODES = ("default", "config", "per_token")


# ----- the closed forms (hand formulas, no autograd) -----


def _unclipped(ratio: Tensor, advantages: Tensor, low, high) -> Tensor:
    """Where the unclipped branch of -min(r A, clamp(r) A) is selected (clamp is inclusive)."""
    return ((advantages > 0) & (ratio <= high)) | ((advantages < 0) & (ratio >= low))


def closed_form(name: str, logprobs: Tensor, inputs: dict, config: dict) -> tuple[Tensor, Tensor]:
    """(elementwise loss, dL/dl) of one datum by the formulas in the module docstring."""
    q, adv = inputs["logprobs"], inputs["advantages"]
    low = inputs.get("clip_low_threshold", config.get("clip_low_threshold"))
    high = inputs.get("clip_high_threshold", config.get("clip_high_threshold"))
    ratio = torch.exp(logprobs - q)
    if name == "importance_sampling":
        return -ratio * adv, -adv * ratio
    if name == "ppo":
        value = -torch.minimum(ratio * adv, torch.clamp(ratio, low, high) * adv)
        return value, torch.where(_unclipped(ratio, adv, low, high), -adv * ratio, 0.0)
    if name == "cispo":
        clipped = torch.clamp(ratio, low, high)
        return -clipped * logprobs * adv, -clipped * adv
    if name == "dro":
        beta = config["beta"]
        drift = logprobs - q
        return -(logprobs * adv - 0.5 * beta * drift**2), -adv + beta * drift
    assert name == "gspo"
    in_ratio = inputs["sequence_ratio_mask"] != 0
    s = torch.exp((logprobs - q)[in_ratio].mean()) if bool(in_ratio.any()) else torch.ones(())
    s = s.expand_as(logprobs)
    value = -torch.minimum(s * adv, torch.clamp(s, low, high) * adv)
    return value, torch.where(_unclipped(s, adv, low, high), -adv * s, 0.0)


def engine_elementwise(name: str, logprobs: Tensor, inputs: dict, config: dict):
    """The engine's elementwise loss and its autograd gradient dL/dl."""
    loss = get_loss(name)
    leaf = logprobs.clone().requires_grad_(True)
    value = loss.elementwise(leaf, inputs, loss.resolve_config(config))
    (gradient,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach(), gradient


# ----- drawn RL inputs -----


@dataclass(frozen=True)
class RlInputs:
    """Per-token RL inputs for one datum (or for each datum of a batch)."""

    inputs: list[dict[str, Tensor]]  # per datum: logprobs, advantages, [clip_*], [mask]
    config: dict[str, float]  # loss_fn_config as a client sends it


def draw_rl_inputs(
    name: str, learner: Sequence[Tensor], seed: int, mode: str, beta: float
) -> RlInputs:
    """Off-policy sampler logprobs q = l - delta (|delta| <= 0.5, so r spans both clip sides),
    advantages in [-2, 2], thresholds by `mode`, a random nonempty-or-empty GSPO mask."""
    g = torch.Generator().manual_seed(derive_seed("rl", seed))
    config: dict[str, float] = {}
    if name == "dro":
        config["beta"] = beta
    if name in CLIPPED_LOSSES and mode == "config":
        config["clip_low_threshold"] = 0.5 + 0.45 * torch.rand((), generator=g).item()
        config["clip_high_threshold"] = 1.05 + 0.5 * torch.rand((), generator=g).item()
    per_datum = []
    for lp in learner:
        n = lp.shape[0]
        delta = torch.rand(n, generator=g) - 0.5
        datum = {"logprobs": lp - delta, "advantages": 4 * torch.rand(n, generator=g) - 2}
        if name in CLIPPED_LOSSES and mode == "per_token":
            datum["clip_low_threshold"] = 0.5 + 0.45 * torch.rand(n, generator=g)
            datum["clip_high_threshold"] = 1.05 + 0.5 * torch.rand(n, generator=g)
        if name == "gspo":
            datum["sequence_ratio_mask"] = (torch.rand(n, generator=g) < 0.6).float()
        per_datum.append(datum)
    return RlInputs(per_datum, config)


def client_loss(name: str, rl: RlInputs) -> CustomLoss:
    """A client's re-implementation of a built-in RL loss, written from the docs' formulas."""
    config = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2} | rl.config

    def loss(logprobs: Sequence[Tensor]) -> Tensor:
        total = torch.zeros(())
        for lp, inputs in zip(logprobs, rl.inputs, strict=True):
            q, adv = inputs["logprobs"], inputs["advantages"]
            low = inputs.get("clip_low_threshold", config["clip_low_threshold"])
            high = inputs.get("clip_high_threshold", config["clip_high_threshold"])
            ratio = torch.exp(lp - q)
            if name == "importance_sampling":
                per_token = -(ratio * adv)
            elif name == "ppo":
                per_token = -torch.min(ratio * adv, torch.clamp(ratio, low, high) * adv)
            elif name == "cispo":
                per_token = -(torch.clamp(ratio, low, high).detach() * lp * adv)
            elif name == "dro":
                per_token = -(lp * adv - 0.5 * config["beta"] * (lp - q) ** 2)
            else:
                in_ratio = inputs["sequence_ratio_mask"] != 0
                log_ratio = (
                    (lp.detach() - q)[in_ratio].mean() if bool(in_ratio.any()) else torch.zeros(())
                )
                s = torch.exp(log_ratio + lp - lp.detach())
                per_token = -torch.min(s * adv, torch.clamp(s, low, high) * adv)
            total = total + per_token.sum()
        return total

    return loss


# ----- closed forms vs the engine's elementwise functions -----


@pytest.mark.spec("LOSS-10", "LOSS-11", "LOSS-12", "LOSS-13", "LOSS-14")
@pytest.mark.parametrize("name", RL_LOSSES)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 12),
    mode=st.sampled_from(THRESHOLD_MODES),
    beta=st.floats(0.0, 1.0),
)
def test_engine_elementwise_loss_and_gradient_match_the_closed_form(name, seed, n, mode, beta):
    g = torch.Generator().manual_seed(seed)
    learner = -0.05 - 6 * torch.rand(n, generator=g)  # l in (-6.05, -0.05]
    rl = draw_rl_inputs(name, [learner], seed, mode, beta)
    inputs = rl.inputs[0]
    config = get_loss(name).resolve_config(rl.config)

    value, gradient = engine_elementwise(name, learner, inputs, rl.config)
    expected_value, expected_gradient = closed_form(name, learner, inputs, config)

    torch.testing.assert_close(value, expected_value, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-6, atol=1e-6)


def _logprob_for_ratio(bound: float) -> Tensor:
    """A float32 l with exp(l) == float32(bound) exactly (so r = bound when q = 0)."""
    target = torch.tensor(bound)
    lp = torch.log(target)
    for _ in range(64):
        ratio = torch.exp(lp)
        if ratio == target:
            return lp
        lp = torch.nextafter(lp, torch.tensor(float("inf") if ratio < target else float("-inf")))
    raise AssertionError(f"no float32 logprob has exp(l) == {bound}")


def _beyond(lp: Tensor, upward: bool) -> Tensor:
    """The nearest float32 logprob whose ratio exp(l) differs from exp(lp) in that direction."""
    step = torch.tensor(float("inf") if upward else float("-inf"))
    moved = torch.nextafter(lp, step)
    while torch.exp(moved) == torch.exp(lp):
        moved = torch.nextafter(moved, step)
    return moved


def _one_token_inputs(name: str, adv: float, per_token=None) -> dict[str, Tensor]:
    """The loss inputs of a one-token datum with q = 0, advantage `adv`, per-token thresholds
    `per_token` (low, high) if given, and a one-token GSPO mask."""
    inputs = {"logprobs": torch.zeros(1), "advantages": torch.tensor([adv])}
    if per_token is not None:
        inputs["clip_low_threshold"] = torch.tensor([per_token[0]])
        inputs["clip_high_threshold"] = torch.tensor([per_token[1]])
    if name == "gspo":
        inputs["sequence_ratio_mask"] = torch.ones(1)
    return inputs


def _gradient_at(name: str, lp: Tensor, adv: float, config: dict, per_token=None) -> float:
    """dL/dl of a one-token datum with q = 0 (and a one-token GSPO mask)."""
    inputs = _one_token_inputs(name, adv, per_token)
    _, gradient = engine_elementwise(name, lp.reshape(1), inputs, config)
    return gradient.item()


BOUNDS = {
    "default": ((0.8, 1.2), {}, None),
    "config": ((0.9, 1.1), {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}, None),
    "per_token": ((0.7, 1.3), {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}, (0.7, 1.3)),
}


@pytest.mark.spec("LOSS-11", "LOSS-14")
@pytest.mark.parametrize("name", ["ppo", "gspo"])
@pytest.mark.parametrize("mode", THRESHOLD_MODES)
def test_clipped_gradient_is_zero_just_outside_the_bounds_and_full_just_inside(name, mode):
    (low, high), config, per_token = BOUNDS[mode]
    at_low, at_high = _logprob_for_ratio(low), _logprob_for_ratio(high)
    cases = [
        # (logprob, advantage, clipped?)
        (_beyond(at_high, upward=True), 1.0, True),  # A > 0, r > hi: clipped branch, no gradient
        (_beyond(at_high, upward=False), 1.0, False),
        (_beyond(at_low, upward=False), -1.0, True),  # A < 0, r < lo: clipped branch
        (_beyond(at_low, upward=True), -1.0, False),
        (torch.tensor(-1.0), 1.0, False),  # A > 0, r = 0.37 < lo: unclipped is the minimum
        (torch.tensor(1.0), -1.0, False),  # A < 0, r = 2.7 > hi: unclipped is the minimum
    ]
    for lp, adv, clipped in cases:
        expected = 0.0 if clipped else (-adv * torch.exp(lp)).item()
        assert _gradient_at(name, lp, adv, config, per_token) == pytest.approx(
            expected, rel=1e-6
        ), (lp.item(), adv)


@pytest.mark.spec("LOSS-11", "LOSS-14")
@pytest.mark.parametrize("name", ["ppo", "gspo"])
@pytest.mark.parametrize("mode", THRESHOLD_MODES)
def test_clipped_loss_value_at_the_bounds_is_minus_ratio_times_advantage(name, mode):
    (low, high), config, per_token = BOUNDS[mode]
    for bound, adv in ((high, 1.0), (high, -1.0), (low, 1.0), (low, -1.0)):
        inputs = _one_token_inputs(name, adv, per_token)
        value, _ = engine_elementwise(name, _logprob_for_ratio(bound).reshape(1), inputs, config)
        assert value.item() == pytest.approx(-adv * bound, rel=1e-6)


BOUNDARY_SIDES = [("high", 1.0), ("low", -1.0)]  # the side where r == bound keeps the gradient


@pytest.mark.spec("LOSS-11", "LOSS-14")
@pytest.mark.parametrize(
    ("name", "mode", "side", "adv"),
    [
        *[("ppo", mode, side, adv) for mode in THRESHOLD_MODES for side, adv in BOUNDARY_SIDES],
        *[("gspo", "default", side, adv) for side, adv in BOUNDARY_SIDES],
    ],
)
def test_clipped_gradient_exactly_at_a_bound_is_the_full_unclipped_gradient(name, mode, side, adv):
    (low, high), config, per_token = BOUNDS[mode]
    lp = _logprob_for_ratio(high if side == "high" else low)
    expected = -adv * torch.exp(lp).item()  # inclusive clamp: d clamp(r)/dr = 1 at the bound
    assert _gradient_at(name, lp, adv, config, per_token) == pytest.approx(expected, rel=1e-6)


@pytest.mark.spec("LOSS-16", "LOSS-18")
@pytest.mark.parametrize("name", CLIPPED_LOSSES)
def test_clip_thresholds_come_from_loss_fn_config_and_per_token_inputs_override_them(name):
    lp, adv = _logprob_for_ratio(1.1), 1.0  # r = 1.1: inside the default range
    config = {"clip_low_threshold": 0.9, "clip_high_threshold": 1.05}
    default = _gradient_at(name, lp, adv, {})
    from_config = _gradient_at(name, lp, adv, config)
    per_token = _gradient_at(name, lp, adv, config, per_token=(0.9, 1.3))
    r = torch.exp(lp).item()
    assert default == pytest.approx(-r, rel=1e-6)
    # with hi = 1.05, r = 1.1 is clipped: ppo/gspo lose the gradient, cispo's weight is 1.05
    assert from_config == pytest.approx(-1.05 if name == "cispo" else 0.0, rel=1e-6)
    assert per_token == pytest.approx(-r, rel=1e-6)


@pytest.mark.spec("LOSS-13")
def test_dro_without_beta_is_rejected_with_an_error_naming_beta():
    model = warm_model()
    tokens = torch.tensor([1, 2, 3])
    datum_inputs = {
        "target_tokens": torch.tensor([2, 3, 4]),
        "logprobs": torch.full((3,), -2.0),
        "advantages": torch.ones(3),
    }
    before = model.digest(include_optimizer=True)
    for config in ({}, None):
        with pytest.raises(InvalidInputError) as excinfo:
            model.forward_backward([DatumInput(tokens, datum_inputs)], "dro", config)
        assert "beta" in excinfo.value.field
        assert "beta" in str(excinfo.value)
    assert model.digest(include_optimizer=True) == before
    assert not model.has_gradient()


@pytest.mark.spec("LOSS-14")
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 10), data=st.data())
def test_gspo_with_a_one_token_mask_is_ppo_on_that_token(seed, n, data):
    j = data.draw(st.integers(0, n - 1), label="masked token")
    g = torch.Generator().manual_seed(seed)
    learner = -0.05 - 6 * torch.rand(n, generator=g)
    q = learner - (torch.rand(n, generator=g) - 0.5)
    adv = 4 * torch.rand(n, generator=g) - 2
    mask = torch.zeros(n)
    mask[j] = 1.0
    gspo_value, gspo_grad = engine_elementwise(
        "gspo", learner, {"logprobs": q, "advantages": adv, "sequence_ratio_mask": mask}, {}
    )
    ppo_value, ppo_grad = engine_elementwise("ppo", learner, {"logprobs": q, "advantages": adv}, {})

    # on the masked token s = r_j, so GSPO's loss and gradient are PPO's (to rounding:
    # s_j = exp((l_j - q_j) + l_j - l_j) reassociates)
    assert gspo_value[j].item() == pytest.approx(ppo_value[j].item(), rel=1e-6, abs=1e-7)
    assert gspo_grad[j].item() == pytest.approx(ppo_grad[j].item(), rel=1e-6, abs=1e-7)
    # every other token is weighted by the same sequence ratio s = r_j
    s = torch.exp(learner[j] - q[j])
    expected = torch.where(_unclipped(s.expand(n), adv, 0.8, 1.2), -adv * s, 0.0)
    torch.testing.assert_close(gspo_grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.spec("LOSS-14")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_gspo_with_a_one_token_mask_has_the_ppo_parameter_gradient_of_that_token(base_model, data):
    model, ppo_model, batch = twins_and_batch(base_model, data, max_datums=3)
    learner = forward_logprobs(model, batch)
    g = torch.Generator().manual_seed(derive_seed("gspo", batch.seed))
    masks, advantages, sampler = [], [], []
    for lp in learner:
        n = lp.shape[0]
        j = int(torch.randint(0, n, (1,), generator=g))
        mask = torch.zeros(n)
        mask[j] = 1.0
        masks.append(mask)
        advantages.append(mask * (4 * torch.rand(n, generator=g) - 2))  # A only on token j
        sampler.append(lp - (torch.rand(n, generator=g) - 0.5))

    model.forward_backward(
        batch.datums(logprobs=sampler, advantages=advantages, sequence_ratio_mask=masks), "gspo"
    )
    ppo_model.forward_backward(batch.datums(logprobs=sampler, advantages=advantages), "ppo")

    assert_grads_close(grads(model), grads(ppo_model), rtol=1e-5)


# ----- end to end: client re-implementation via the custom path == built-in -----


@pytest.mark.spec("DET-4")
@pytest.mark.parametrize("name", RL_LOSSES)
@given(
    base_model=st.sampled_from(TEST_MODELS),
    data=st.data(),
    mode=st.sampled_from(THRESHOLD_MODES),
    beta=st.floats(0.01, 1.0),
)
def test_client_reimplementation_through_custom_loss_has_the_builtin_gradient_bitwise(
    name, base_model, data, mode, beta
):
    custom, builtin, batch = twins_and_batch(base_model, data)
    rl = draw_rl_inputs(name, forward_logprobs(custom, batch), batch.seed, mode, beta)

    custom_loss_backward(custom, batch, client_loss(name, rl))
    builtin.forward_backward(_rl_datums(batch, rl), name, rl.config)

    # (the gradient may be all zero when every token is clipped; it must still match)
    assert_grads_equal(grads(custom), grads(builtin))


def _rl_datums(batch: Batch, rl: RlInputs):
    keys = rl.inputs[0].keys()
    return batch.datums(**{key: [inputs[key] for inputs in rl.inputs] for key in keys})


@pytest.mark.spec("LOSS-10", "LOSS-11", "LOSS-12", "LOSS-13", "LOSS-14")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_on_policy_rl_losses_have_the_cross_entropy_gradient_with_weights_equal_to_advantages(
    base_model, data
):
    """q = l exactly (r = 1): IS, PPO, CISPO, GSPO and DRO(beta=0) all reduce to CE(w = A)."""
    ce_model = warm_model(base_model)
    batch = data.draw(batches(ce_model.vocab_size))
    on_policy = forward_logprobs(ce_model, batch)
    advantages = batch.floats("advantages", -2.0, 2.0)
    masks = [(a > 0).float() for a in batch.floats("mask")]

    ce = ce_model.forward_backward(batch.datums(weights=advantages), "cross_entropy")
    expected = grads(ce_model)
    assert some_gradient_is_nonzero(expected)
    for name, extra, config in [
        ("importance_sampling", {}, {}),
        ("ppo", {}, {}),
        ("cispo", {}, {}),
        ("gspo", {"sequence_ratio_mask": masks}, {}),
        ("dro", {}, {"beta": 0.0}),
    ]:
        model = warm_model(base_model)
        result = model.forward_backward(
            batch.datums(logprobs=on_policy, advantages=advantages, **extra), name, config
        )
        assert_grads_equal(grads(model), expected)
        if name == "dro":  # DRO(beta=0) is CE(w=A) in value too
            assert result.metrics["loss:sum"] == ce.metrics["loss:sum"]
            for out, ref in zip(result.loss_fn_outputs, ce.loss_fn_outputs, strict=True):
                assert torch.equal(out["elementwise_loss"], ref["elementwise_loss"])
