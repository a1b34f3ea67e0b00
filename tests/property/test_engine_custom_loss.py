"""Custom-loss training through the engine: the chain-rule identity and the sum semantics it needs.

The identity of spec/custom-loss.md: a forward pass gives logprobs l, the client computes
g = dC/dl, and a cross-entropy pass with weights -g accumulates exactly dC/dtheta, provided
the server's cross-entropy is linear and unnormalised. In a deterministic float32 engine the
result is bit-identical to direct autograd, so most assertions here are `torch.equal`.
Clauses checked: DET-4, LOSS-4, LOSS-5, LOSS-6, LOSS-9, OPT-3, LOSS-15 (forward_backward_per_datum).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from mock_server.engine import AdamConfig, DatumLossResult
from tests.support.engine_data import (
    TEST_MODELS,
    Batch,
    CustomLoss,
    assert_grads_close,
    assert_grads_equal,
    batches,
    custom_loss_backward,
    direct_autograd_grads,
    forward_logprobs,
    grads,
    sgd_like_adam,
    some_gradient_is_nonzero,
    twin,
    twins_and_batch,
    warm_model,
)

# ----- custom losses a client might send -----


def dpo_loss(batch: Batch, beta: float) -> CustomLoss:
    """DPO over interleaved (chosen, rejected) datums, as the cookbook's compute_dpo_loss.

    Reward of a datum = <mask, logprobs> - reference; loss = mean over pairs of
    -log sigmoid(beta * (reward_chosen - reward_rejected)).
    """
    # completion tokens: a random subset that always includes the last token
    masks = [(w > 0).float().index_fill(0, torch.tensor([-1]), 1.0) for w in batch.floats("mask")]
    reference = [r.sum() for r in batch.floats("reference", -6.0, -1.0)]

    def loss(logprobs: Sequence[Tensor]) -> Tensor:
        rewards = [
            (lp * m).sum() - ref for lp, m, ref in zip(logprobs, masks, reference, strict=True)
        ]
        margins = [rewards[i] - rewards[i + 1] for i in range(0, len(rewards), 2)]
        return -F.logsigmoid(beta * torch.stack(margins)).mean()

    return loss


def decision_loss(batch: Batch, kind: str, last_row_only: bool) -> CustomLoss:
    """A [T, K] loss (cookbook decisions / SDFT style): softmax over the K candidates of a row,
    then Brier score or KL(target || p) against a per-row target distribution."""
    target_dists = [torch.softmax(3 * x, dim=-1) for x in batch.floats("target")]

    def loss(logprobs: Sequence[Tensor]) -> Tensor:
        per_datum = []
        for lp, target in zip(logprobs, target_dists, strict=True):
            rows, y = (lp[-1:], target[-1:]) if last_row_only else (lp, target)
            if kind == "brier":
                per_row = (torch.softmax(rows, dim=-1) - y).pow(2).sum(dim=-1)
            else:
                per_row = (y * (y.log() - torch.log_softmax(rows, dim=-1))).sum(dim=-1)
            # touch every row so each datum's logprobs get a gradient, as the SDK requires
            per_datum.append(per_row.sum() + 0.0 * lp.sum())
        return torch.stack(per_datum).mean()

    return loss


# ----- 1. chain-rule identity -----


@pytest.mark.spec("DET-4", "CL-7", "LOSS-9")
@given(
    base_model=st.sampled_from(TEST_MODELS),
    data=st.data(),
    beta=st.floats(0.05, 2.0),
)
def test_custom_dpo_gradient_is_bitwise_the_direct_autograd_gradient(base_model, data, beta):
    model = warm_model(base_model)
    batch = data.draw(batches(model.vocab_size, min_datums=2, max_datums=4, even=True))
    loss_fn = dpo_loss(batch, beta)

    loss, result = custom_loss_backward(model, batch, loss_fn)

    expected = direct_autograd_grads(model, batch, loss_fn)
    assert some_gradient_is_nonzero(expected)
    assert_grads_equal(grads(model), expected)
    assert torch.isfinite(loss)
    # the backward phase recomputes the logprobs; a deterministic engine reproduces them
    forward = forward_logprobs(model, batch)
    for out, lp in zip(result.loss_fn_outputs, forward, strict=True):
        assert torch.equal(out["logprobs"], lp)


@pytest.mark.spec("DET-4", "LOSS-7", "LOSS-9")
@given(
    base_model=st.sampled_from(TEST_MODELS),
    data=st.data(),
    kind=st.sampled_from(["brier", "kl"]),
    last_row_only=st.booleans(),
)
def test_custom_multi_target_loss_gradient_is_bitwise_the_direct_autograd_gradient(
    base_model, data, kind, last_row_only
):
    model = warm_model(base_model)
    k = data.draw(st.integers(2, 4), label="K")
    batch = data.draw(batches(model.vocab_size, max_datums=3, k=k))
    loss_fn = decision_loss(batch, kind, last_row_only)

    _, result = custom_loss_backward(model, batch, loss_fn)

    for out, targets in zip(result.loss_fn_outputs, batch.targets, strict=True):
        assert out["logprobs"].shape == targets.shape  # [T, K] in, [T, K] out
    expected = direct_autograd_grads(model, batch, loss_fn)
    assert some_gradient_is_nonzero(expected)
    assert_grads_equal(grads(model), expected)


# ----- 2. custom mean-NLL == cross_entropy with weights 1/N == local AdamW on autograd -----


@pytest.mark.spec("DET-4", "LOSS-4", "OPT-1")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data(), lr=st.floats(1e-4, 1e-1))
def test_custom_mean_nll_step_equals_cross_entropy_with_weights_one_over_n_and_local_adamw(
    base_model, data, lr
):
    custom, builtin, batch = twins_and_batch(base_model, data)
    n = batch.num_tokens

    def mean_nll(logprobs: Sequence[Tensor]) -> Tensor:
        return -torch.cat(list(logprobs)).sum() / n

    custom_loss_backward(custom, batch, mean_nll)
    builtin.forward_backward(batch.datums(weights=[w / n for w in batch.ones()]), "cross_entropy")
    # the reference: autograd of the mean NLL, then torch's own AdamW on a copy of the adapters
    reference_grads = direct_autograd_grads(custom, batch, mean_nll)
    assert_grads_equal(grads(custom), reference_grads)
    assert_grads_equal(grads(builtin), reference_grads)

    adam = AdamConfig(learning_rate=lr)
    reference = {name: p.requires_grad_(True) for name, p in custom.weights().items()}
    custom.optim_step(adam)
    builtin.optim_step(adam)
    for name, p in reference.items():
        p.grad = reference_grads[name]
    torch.optim.AdamW(
        list(reference.values()),
        lr=lr,
        betas=(adam.beta1, adam.beta2),
        eps=adam.eps,
        weight_decay=adam.weight_decay,
        foreach=False,
        fused=False,
    ).step()
    assert custom.digest(include_optimizer=True) == builtin.digest(include_optimizer=True)
    for name, p in custom.adapter.items():
        assert torch.equal(p.detach(), reference[name]), name


# ----- 3. linearity in the weights -----


@pytest.mark.spec("LOSS-5", "LOSS-9")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_gradient_of_four_times_the_weights_is_exactly_four_times_the_gradient(base_model, data):
    model, other, batch = twins_and_batch(base_model, data)
    weights = batch.floats("weights")

    model.forward_backward(batch.datums(weights=weights), "cross_entropy")
    other.forward_backward(batch.datums(weights=[4 * w for w in weights]), "cross_entropy")

    assert some_gradient_is_nonzero(grads(model))
    assert_grads_equal(grads(other), {name: 4 * g for name, g in grads(model).items()})


@pytest.mark.spec("LOSS-6")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_gradients_of_two_calls_accumulate_as_a_sum(base_model, data):
    accumulated, single, batch = twins_and_batch(base_model, data)
    weights = batch.floats("weights")

    accumulated.forward_backward(batch.datums(weights=weights), "cross_entropy")
    accumulated.forward_backward(batch.datums(weights=[3 * w for w in weights]), "cross_entropy")
    single.forward_backward(batch.datums(weights=[4 * w for w in weights]), "cross_entropy")

    # a sum of two float32 gradients vs one: equal up to rounding, not bitwise
    assert_grads_close(grads(accumulated), grads(single), rtol=1e-5)


# ----- 4. zero weights -----


@pytest.mark.spec("LOSS-5")
@given(
    base_model=st.sampled_from(TEST_MODELS),
    data=st.data(),
    lr=st.floats(1e-4, 1.0),
    beta1=st.floats(0.0, 0.99),
    eps=st.floats(1e-12, 1e-3),
    via_custom_loss=st.booleans(),
)
def test_zero_weights_give_zero_loss_and_leave_parameters_bit_identical_after_adamw(
    base_model, data, lr, beta1, eps, via_custom_loss
):
    model = warm_model(base_model)  # fresh Adam state: a zero gradient gives a zero update
    batch = data.draw(batches(model.vocab_size))
    before = model.digest()

    if via_custom_loss:
        _, result = custom_loss_backward(
            model, batch, lambda lps: 0.0 * torch.cat([lp.reshape(-1) for lp in lps]).sum()
        )
    else:
        result = model.forward_backward(batch.datums(weights=batch.zeros()), "cross_entropy")

    assert result.metrics["loss:sum"] == 0.0
    assert not some_gradient_is_nonzero(grads(model))
    metrics = model.optim_step(AdamConfig(learning_rate=lr, beta1=beta1, eps=eps))
    assert metrics["optimizer_step:sum"] == 1.0  # the step ran; it just moved nothing
    assert model.digest() == before


# ----- 5. permutation of datums -----


@pytest.mark.spec("LOSS-2", "LOSS-4")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_permuting_datums_permutes_outputs_bitwise_and_keeps_the_gradient(base_model, data):
    model, permuted_model, batch = twins_and_batch(base_model, data, min_datums=2)
    order = data.draw(st.permutations(range(len(batch))), label="order")
    weights = batch.floats("weights")

    result = model.forward_backward(batch.datums(weights=weights), "cross_entropy")
    permuted = permuted_model.forward_backward(
        batch.permuted(order).datums(weights=[weights[i] for i in order]), "cross_entropy"
    )

    for position, original in enumerate(order):
        for key in ("logprobs", "elementwise_loss"):
            assert torch.equal(
                permuted.loss_fn_outputs[position][key], result.loss_fn_outputs[original][key]
            )
    # a different summation order over datums: equal up to rounding
    assert abs(permuted.metrics["loss:sum"] - result.metrics["loss:sum"]) <= 1e-5 * max(
        1.0, abs(result.metrics["loss:sum"])
    )
    assert_grads_close(grads(permuted_model), grads(model), rtol=1e-5)


# ----- 11. SGD-emulating Adam makes gradient scale visible -----

SGD_TOLERANCE = 1e-4  # of max |eta * grad| per tensor; measured ~3e-6 (the emulation error |g|/eps)


def _update_error(model, batch: Batch, weights: list[Tensor], eta: float, reference: dict):
    """Apply one SGD-like AdamW step on CE(weights); return the worst per-tensor
    max |update + eta*g| / max |eta*g|, not counting float32 rounding of the parameter itself
    (2 ulps of |p|: p + step is rounded, and so is the difference read back)."""
    before = model.weights()
    model.forward_backward(batch.datums(weights=weights), "cross_entropy")
    model.optim_step(sgd_like_adam(eta))
    worst = 0.0
    for name, p in model.adapter.items():
        expected = -eta * reference[name]
        scale = expected.abs().max().item()
        if scale == 0:
            continue
        after = p.detach()
        rounding = (
            2 * torch.finfo(torch.float32).eps * torch.maximum(after.abs(), before[name].abs())
        )
        error = ((after - before[name] - expected).abs() - rounding).clamp(min=0)
        worst = max(worst, error.max().item() / scale)
    return worst


@pytest.mark.spec("OPT-3")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data(), eta=st.sampled_from([0.3, 1.0]))
def test_sgd_emulating_adam_moves_parameters_by_minus_eta_times_the_gradient(base_model, data, eta):
    model, probe, batch = twins_and_batch(base_model, data, max_len=6)
    weights = batch.floats("weights")
    probe.forward_backward(batch.datums(weights=weights), "cross_entropy")
    gradient = grads(probe)

    assert _update_error(model, batch, weights, eta, gradient) <= SGD_TOLERANCE


@pytest.mark.spec("OPT-3", "LOSS-4")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_sgd_emulation_exposes_a_divide_by_token_count_bug_that_default_adam_hides(
    base_model, data
):
    """Emulate an engine that divides CE by the token count N (weights / N) and compare."""
    model = warm_model(base_model)
    batch = data.draw(batches(model.vocab_size, min_datums=2, max_len=6))
    n = batch.num_tokens
    weights = batch.floats("weights")
    probe = twin(model)
    probe.forward_backward(batch.datums(weights=weights), "cross_entropy")
    gradient = grads(probe)

    # under SGD emulation the buggy update is off by (1 - 1/N) >= 1/2 of its size
    buggy_error = _update_error(twin(model), batch, [w / n for w in weights], 1.0, gradient)
    assert buggy_error > 100 * SGD_TOLERANCE

    # under default Adam the first update is ~lr * sign(g) either way: the bug changes it by
    # under 1% of its size (lr = 1e-4), far too little for a test to notice
    default_adam = AdamConfig()
    correct, buggy = twin(model), twin(model)
    correct.forward_backward(batch.datums(weights=weights), "cross_entropy")
    buggy.forward_backward(batch.datums(weights=[w / n for w in weights]), "cross_entropy")
    correct.optim_step(default_adam)
    buggy.optim_step(default_adam)
    for name, p in correct.adapter.items():
        difference = (p.detach() - buggy.adapter[name].detach()).abs().max().item()
        assert difference <= 0.01 * default_adam.learning_rate


# ----- 16. forward_backward_per_datum (uploaded custom losses) -----


def _weighted_nll(logprobs: Tensor, inputs: Mapping[str, Tensor]) -> DatumLossResult:
    loss = -(logprobs * inputs["weights"]).sum()
    return DatumLossResult(
        loss,
        {"doubled": 2 * logprobs},
        {
            "custom/nll:sum": loss,
            "custom/tokens:mean": torch.tensor(float(logprobs.numel())),
        },
    )


@pytest.mark.spec("LOSS-15")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_per_datum_loss_sums_losses_reduces_metrics_and_matches_the_builtin_gradient(
    base_model, data
):
    model, builtin, batch = twins_and_batch(
        base_model, data, k=data.draw(st.sampled_from([None, 2]))
    )
    datums = batch.datums(weights=batch.floats("weights"))

    result = model.forward_backward_per_datum(datums, _weighted_nll)
    expected = builtin.forward_backward(datums, "cross_entropy")

    assert result.metrics["loss:sum"] == expected.metrics["loss:sum"]
    per_datum = [
        float(-(o["logprobs"] * d.loss_fn_inputs["weights"]).sum())
        for o, d in zip(result.loss_fn_outputs, datums, strict=True)
    ]
    assert result.metrics["custom/nll:sum"] == sum(per_datum)
    token_counts = [float(t.numel()) for t in batch.targets]
    assert result.metrics["custom/tokens:mean"] == sum(token_counts) / len(batch)
    for out, ref in zip(result.loss_fn_outputs, expected.loss_fn_outputs, strict=True):
        assert torch.equal(out["logprobs"], ref["logprobs"])
        assert torch.equal(out["doubled"], 2 * ref["logprobs"])
    assert_grads_equal(grads(model), grads(builtin))
