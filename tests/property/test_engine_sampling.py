"""Sampling: seeded reproducibility, filters, stop conditions, and logprob parity with the
training forward (spec SMP-6, SMP-7: a sampler snapshot reproduces training logprobs bitwise)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import Tensor

from mock_server.engine import AdamConfig, DatumInput, SampleSpec, derive_seed
from mock_server.engine.model import OutputHead, target_logprobs
from mock_server.engine.sampling import _candidates, _draw, _nucleus
from mock_server.engine.tokenizer import decode_bytes
from tests.support.engine_data import (
    TEST_MODELS,
    TINY_64,
    TINY_512,
    TINY_BYTES,
    fresh_model,
    make_batch,
    shared_engine,
    warm_model,
)


def _prompt(seed: int, vocab_size: int, length: int) -> Tensor:
    return torch.randint(0, vocab_size, (length,), generator=torch.Generator().manual_seed(seed))


def _forward_only_logprobs(model, tokens: Tensor, targets: Tensor) -> Tensor:
    datum = DatumInput(tokens, {"target_tokens": targets, "weights": torch.zeros(targets.shape)})
    result = model.forward_backward([datum], "cross_entropy", forward_only=True)
    return result.loss_fn_outputs[0]["logprobs"]


prompts = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 10))


@pytest.mark.spec("SMP-3")
@given(
    base_model=st.sampled_from(TEST_MODELS),
    prompt=prompts,
    seed=st.integers(0, 2**63 - 1),
    temperature=st.floats(0.3, 2.0),
    top_k=st.sampled_from([-1, 1, 5, 50]),
    top_p=st.floats(0.2, 1.0),
)
def test_same_seed_gives_the_same_samples(base_model, prompt, seed, temperature, top_k, top_p):
    model = warm_model(base_model)
    spec = SampleSpec(
        prompt=_prompt(prompt[0], model.vocab_size, prompt[1]),
        seed=seed,
        num_samples=2,
        max_tokens=6,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
    )
    first = shared_engine().sample(base_model, model.weights(), spec)
    second = shared_engine().sample(base_model, model.weights(), spec)
    assert first.sequences == second.sequences


@pytest.mark.spec("SMP-3", "DET-2")
def test_different_seeds_give_different_samples():
    model = warm_model(TINY_512)
    prompt = _prompt(0, model.vocab_size, 4)
    samples = {
        tuple(
            shared_engine()
            .sample(TINY_512, model.weights(), SampleSpec(prompt, seed=seed, max_tokens=8))
            .sequences[0]
            .tokens
        )
        for seed in range(8)
    }
    assert len(samples) == 8


def _greedy_reference(model, prompt: Tensor, steps: int) -> list[int]:
    """Greedy decoding from full-vocabulary logprobs (a different code path from the sampler)."""
    tokens = prompt.clone()
    every_id = torch.arange(model.vocab_size)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            rows = every_id.expand(tokens.shape[0], -1)  # (T, V): score every id at every row
            logprobs = target_logprobs(model.base, model.adapter, tokens, rows)[-1]
            out.append(int(logprobs.argmax()))
            tokens = torch.cat([tokens, torch.tensor(out[-1:])])
    return out


@pytest.mark.spec("SMP-4")
@given(prompt=prompts, seed=st.integers(0, 2**32 - 1), temperature=st.floats(0.5, 2.0))
def test_temperature_zero_is_greedy_argmax_and_top_k_one_is_the_same(prompt, seed, temperature):
    model = warm_model(TINY_64)
    p = _prompt(prompt[0], model.vocab_size, prompt[1])
    greedy = shared_engine().sample(
        TINY_64,
        model.weights(),
        SampleSpec(p, seed=seed, max_tokens=6, temperature=0.0, stop_token_ids=()),
    )
    top_1 = shared_engine().sample(
        TINY_64,
        model.weights(),
        SampleSpec(p, seed=seed, max_tokens=6, temperature=temperature, top_k=1, stop_token_ids=()),
    )
    assert greedy.sequences[0].tokens == _greedy_reference(model, p, 6)
    assert top_1.sequences[0].tokens == greedy.sequences[0].tokens


@pytest.mark.spec("SMP-5")
@given(prompt=prompts, data=st.data())
def test_a_stop_token_ends_the_sequence_with_stop_reason_stop_else_length(prompt, data):
    model = warm_model(TINY_64)
    p = _prompt(prompt[0], model.vocab_size, prompt[1])

    def greedy(stop_token_ids):
        spec = SampleSpec(p, seed=0, max_tokens=8, temperature=0.0, stop_token_ids=stop_token_ids)
        return shared_engine().sample(TINY_64, model.weights(), spec).sequences[0]

    unstopped = greedy(())
    assert unstopped.stop_reason == "length"
    assert len(unstopped.tokens) == 8

    stop = unstopped.tokens[data.draw(st.integers(0, 7), label="stop position")]
    end = unstopped.tokens.index(stop) + 1  # the first occurrence ends the sequence
    stopped = greedy((stop,))
    assert stopped.stop_reason == "stop"
    assert stopped.tokens == unstopped.tokens[:end]
    # a shorter sequence: same logprobs up to the prefix-invariance rounding (test_engine_forward)
    torch.testing.assert_close(
        torch.tensor(stopped.logprobs), torch.tensor(unstopped.logprobs[:end]), rtol=1e-6, atol=1e-6
    )

    absent = next(t for t in range(model.vocab_size) if t not in unstopped.tokens)
    assert greedy((absent,)) == unstopped


@pytest.mark.spec("SMP-5")
def test_a_stop_string_ends_the_sequence_with_stop_reason_stop_else_length():
    model = warm_model(TINY_BYTES)

    def greedy(prompt: Tensor, stop_strings: tuple[str, ...]):
        spec = SampleSpec(
            prompt,
            seed=0,
            max_tokens=12,
            temperature=0.0,
            stop_token_ids=(),
            stop_strings=stop_strings,
        )
        return shared_engine().sample(TINY_BYTES, model.weights(), spec).sequences[0]

    checked = 0
    for seed in range(20):
        prompt = _prompt(seed, 256, 5)
        unstopped = greedy(prompt, ())
        assert unstopped.stop_reason == "length"
        text = decode_bytes(unstopped.tokens).decode("utf-8", errors="replace")
        ascii_positions = [i for i, t in enumerate(unstopped.tokens) if 32 <= t < 127]
        if not ascii_positions:
            continue
        stop = chr(unstopped.tokens[ascii_positions[-1]])
        end = unstopped.tokens.index(ord(stop)) + 1
        stopped = greedy(prompt, (stop,))
        assert stopped.stop_reason == "stop"
        assert stopped.tokens == unstopped.tokens[:end]
        absent = next(c for c in "~}|{zyxwvutsrqponm" if c not in text)
        assert greedy(prompt, (absent,)) == unstopped
        checked += 1
    assert checked >= 5  # enough greedy outputs contain a printable byte to stop on


@pytest.mark.spec("SMP-6")
@given(
    base_model=st.sampled_from(TEST_MODELS),
    prompt=prompts,
    seed=st.integers(0, 2**32 - 1),
    temperature=st.floats(0.5, 2.0),
)
def test_sampled_token_logprobs_equal_a_training_forward_over_prompt_and_completion_bitwise(
    base_model, prompt, seed, temperature
):
    model = warm_model(base_model)
    p = _prompt(prompt[0], model.vocab_size, prompt[1])
    spec = SampleSpec(p, seed=seed, num_samples=2, max_tokens=6, temperature=temperature)
    for sequence in shared_engine().sample(base_model, model.weights(), spec).sequences:
        full = torch.cat([p, torch.tensor(sequence.tokens)])
        training = _forward_only_logprobs(model, full[:-1], full[1:])[p.shape[0] - 1 :]
        assert torch.equal(torch.tensor(sequence.logprobs), training)


@pytest.mark.spec("SMP-7")
@given(base_model=st.sampled_from(TEST_MODELS), prompt=prompts)
def test_prompt_logprobs_are_nan_then_the_forward_only_logprobs_of_the_prompt_bitwise(
    base_model, prompt
):
    model = warm_model(base_model)
    p = _prompt(prompt[0], model.vocab_size, prompt[1])
    result = shared_engine().sample(
        base_model, model.weights(), SampleSpec(p, seed=0, max_tokens=1, prompt_logprobs=True)
    )
    assert result.prompt_logprobs is not None
    assert result.prompt_logprobs.shape == p.shape
    assert torch.isnan(result.prompt_logprobs[0])
    if p.shape[0] > 1:
        assert torch.equal(result.prompt_logprobs[1:], _forward_only_logprobs(model, p[:-1], p[1:]))


@pytest.mark.spec("SMP-1", "SMP-7")
@given(base_model=st.sampled_from(TEST_MODELS), prompt=prompts)
def test_a_snapshot_taken_before_a_step_still_reproduces_the_pre_step_logprobs(base_model, prompt):
    model = warm_model(base_model)
    p = _prompt(prompt[0], model.vocab_size, max(prompt[1], 2))
    snapshot = model.weights()
    before = _forward_only_logprobs(model, p[:-1], p[1:])

    batch = make_batch(derive_seed("step", prompt[0]), model.vocab_size, (5, 3))
    model.forward_backward(batch.datums(weights=batch.ones()), "cross_entropy")
    model.optim_step(AdamConfig(learning_rate=1e-2))
    assert not torch.equal(_forward_only_logprobs(model, p[:-1], p[1:]), before)  # it moved

    result = shared_engine().sample(
        base_model, snapshot, SampleSpec(p, seed=0, max_tokens=1, prompt_logprobs=True)
    )
    assert torch.equal(result.prompt_logprobs[1:], before)


@pytest.mark.spec("SMP-4")
@given(
    logits=st.lists(st.floats(-30, 30), min_size=1, max_size=400),
    top_p=st.floats(0.001, 0.999),
)
def test_the_top_p_nucleus_is_the_sorted_prefix_whose_preceding_mass_is_below_top_p(logits, top_p):
    probs = torch.softmax(torch.tensor(logits), dim=0)
    ranked, order = probs.double().sort(descending=True, stable=True)
    before = ranked.cumsum(0) - ranked
    # Tokens whose preceding mass lies within float32 rounding of top_p may go either way.
    assume(bool(((before - top_p).abs() > 1e-5).all()))
    expected = torch.zeros(len(logits), dtype=torch.bool)
    expected[order[before < top_p]] = True
    assert torch.equal(_nucleus(probs, top_p), expected)


@pytest.mark.spec("SMP-4")
def test_draws_follow_the_filtered_distribution():
    """10 000 seeded draws land on each candidate about as often as its probability says."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    spec = SampleSpec(torch.tensor([1]), seed=0, top_p=0.9)
    probs, ids = _candidates(logits, spec)
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(logits))
    for _ in range(10_000):
        counts[_draw(probs, ids, generator)] += 1
    expected = torch.zeros(len(logits))
    expected[ids] = probs / probs.sum()
    assert counts[4:].sum() == 0  # outside the nucleus: never drawn
    assert torch.allclose(counts / 10_000, expected, atol=0.015)


def _allowed_tokens(logits: Tensor, top_k: int, top_p: float) -> set[int]:
    """Tokens the filters may keep, with a little slack at the top-p boundary for rounding."""
    keep = set(range(logits.numel()))
    if top_k > 0:
        kth = logits.topk(top_k).values[-1]
        keep &= {int(i) for i in torch.nonzero(logits >= kth).flatten()}
    if top_p < 1.0:
        probs = torch.softmax(logits.double(), dim=0)
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(0) - sorted_probs  # mass of the more likely tokens
        keep &= {int(order[i]) for i in range(order.numel()) if before[i] < top_p + 1e-5}
    return keep


@pytest.mark.spec("SMP-4")
@given(
    prompt=prompts,
    seed=st.integers(0, 2**32 - 1),
    top_k=st.integers(1, 6),
    top_p=st.floats(0.05, 0.9),
)
def test_every_sampled_token_lies_in_the_top_k_and_in_the_top_p_nucleus(prompt, seed, top_k, top_p):
    model = warm_model(TINY_64)
    weights, p = model.weights(), _prompt(prompt[0], model.vocab_size, prompt[1])
    for k, nucleus in ((top_k, 1.0), (-1, top_p), (top_k, top_p)):
        spec = SampleSpec(
            p, seed=seed, num_samples=2, max_tokens=4, top_k=k, top_p=nucleus, stop_token_ids=()
        )
        for sequence in shared_engine().sample(TINY_64, weights, spec).sequences:
            context = p
            head = OutputHead(model.base, weights)
            for token in sequence.tokens:
                logits = head.next_token_logits(model.base, weights, context)
                assert token in _allowed_tokens(logits, k, nucleus), (k, nucleus, token)
                context = torch.cat([context, torch.tensor([token])])


@pytest.mark.spec("SMP-1")
@given(base_model=st.sampled_from(TEST_MODELS), prompt=prompts)
def test_a_base_model_sampler_computes_what_an_untrained_model_computes(base_model, prompt):
    untrained = fresh_model(base_model)  # LoRA B and the bias are zero: the adapters add nothing
    p = _prompt(prompt[0], untrained.vocab_size, max(prompt[1], 2))
    spec = SampleSpec(p, seed=0, max_tokens=1, prompt_logprobs=True)
    result = shared_engine().sample(base_model, {}, spec)  # no adapter at all: the base weights
    assert torch.equal(result.prompt_logprobs[1:], _forward_only_logprobs(untrained, p[:-1], p[1:]))
