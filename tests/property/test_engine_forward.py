"""The forward pass: causality, prefix invariance, forward_only (spec LOSS-3, LOSS-8)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mock_server.engine import AdamConfig, DatumInput
from tests.support.engine_data import (
    TEST_MODELS,
    batches,
    forward_logprobs,
    grads,
    warm_model,
)


@pytest.mark.spec("LOSS-3")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_appending_tokens_leaves_earlier_logprobs_unchanged_to_float32_rounding(base_model, data):
    """Prefix invariance: logprobs of a prefix equal the first positions of the full sequence.

    Not bitwise: the two forwards multiply matrices of different sizes (T rows vs n rows), and
    BLAS picks its blocking, hence its summation order, by size; the results differ by a few
    float32 ulps (|diff| ~2e-6 measured at |logprob| ~10). The tolerance is 1e-6 relative.
    """
    model = warm_model(base_model)
    batch = data.draw(batches(model.vocab_size, min_datums=1, max_datums=1, max_len=24))
    tokens, targets = batch.tokens[0], batch.targets[0]
    n = data.draw(st.integers(1, tokens.shape[0]), label="prefix length")
    appended = data.draw(st.integers(1, 24), label="appended tokens")
    g = torch.Generator().manual_seed(batch.seed)
    longer_tokens = torch.cat(
        [tokens, torch.randint(0, model.vocab_size, (appended,), generator=g)]
    )
    longer_targets = torch.cat(
        [targets, torch.randint(0, model.vocab_size, (appended,), generator=g)]
    )

    def logprobs(tok, tgt):
        datum = DatumInput(tok, {"target_tokens": tgt, "weights": torch.zeros(tgt.shape)})
        result = model.forward_backward([datum], "cross_entropy", forward_only=True)
        return result.loss_fn_outputs[0]["logprobs"]

    full = logprobs(longer_tokens, longer_targets)
    prefix = logprobs(tokens[:n], targets[:n])
    torch.testing.assert_close(full[:n], prefix, rtol=1e-6, atol=1e-6)


@pytest.mark.spec("LOSS-3")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_changing_a_later_token_leaves_earlier_logprobs_bitwise_unchanged(base_model, data):
    """Causality of one fixed-length computation: position t reads only tokens <= t.

    Bitwise, unlike prefix invariance: both forwards run on matrices of the same shapes, and a
    later token reaches an earlier row only through an attention weight that is exactly 0.
    """
    model = warm_model(base_model)
    batch = data.draw(batches(model.vocab_size, min_datums=1, max_datums=1, max_len=24))
    tokens, targets = batch.tokens[0], batch.targets[0]
    if tokens.shape[0] < 2:
        tokens, targets = torch.cat([tokens, tokens]), torch.cat([targets, targets])
    j = data.draw(st.integers(1, tokens.shape[0] - 1), label="changed position")
    shift = data.draw(st.integers(1, model.vocab_size - 1), label="token shift")
    changed = tokens.clone()
    changed[j] = (changed[j] + shift) % model.vocab_size

    datums = [
        DatumInput(t, {"target_tokens": targets, "weights": torch.zeros(targets.shape)})
        for t in (tokens, changed)
    ]
    before, after = (
        out["logprobs"]
        for out in model.forward_backward(
            datums, "cross_entropy", forward_only=True
        ).loss_fn_outputs
    )

    assert torch.equal(after[:j], before[:j])
    assert not torch.equal(after[j:], before[j:])  # the change is visible from position j on


@pytest.mark.spec("LOSS-8")
@given(base_model=st.sampled_from(TEST_MODELS), data=st.data())
def test_forward_only_accumulates_no_gradient_and_matches_forward_backward_logprobs(
    base_model, data
):
    model = warm_model(base_model)
    batch = data.draw(batches(model.vocab_size, k=data.draw(st.sampled_from([None, 3]))))
    datums = batch.datums(weights=batch.floats("weights"))
    digest = model.digest(include_optimizer=True)

    forward = model.forward_backward(datums, "cross_entropy", forward_only=True)

    assert not model.has_gradient()
    assert model.optim_step(AdamConfig(learning_rate=1e-2))["optimizer_step:sum"] == 0.0
    assert model.digest(include_optimizer=True) == digest  # no step: weights and Adam unchanged

    backward = model.forward_backward(datums, "cross_entropy")
    assert model.has_gradient()
    assert forward.metrics["loss:sum"] == backward.metrics["loss:sum"]
    for only, full in zip(forward.loss_fn_outputs, backward.loss_fn_outputs, strict=True):
        assert torch.equal(only["logprobs"], full["logprobs"])
        assert torch.equal(only["elementwise_loss"], full["elementwise_loss"])

    # and a forward_only between backward passes leaves the accumulated gradient alone
    accumulated = grads(model)
    forward_logprobs(model, batch)
    for name, gradient in grads(model).items():
        assert torch.equal(gradient, accumulated[name]), name
