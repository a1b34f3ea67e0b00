"""SDK 0.38's sampling options through tinker_ref against the mock (spec SMP-10)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from mock_server.embedded import serve
from tinker_ref import SamplingClient, ServiceClient, types

MODEL = "tinker-ref/tiny-bytes"
PROMPT = types.ModelInput.from_ints(list(b"the cat sat"))
TIMEOUT = 60

pytestmark = pytest.mark.spec("SMP-10")


@pytest.fixture(scope="module")
def sampler() -> Iterator[SamplingClient]:
    with (
        serve(seed=0) as mock,
        ServiceClient(base_url=mock.url, api_key="tml-sampling-options") as service,
    ):
        yield service.create_sampling_client(base_model=MODEL)


def test_sampled_top_k_rows_are_the_prompt_top_k_of_the_extended_prompt(
    sampler: SamplingClient,
) -> None:
    params = types.SamplingParams(max_tokens=5, seed=3, temperature=0.9)
    with_topk = sampler.sample(PROMPT, 2, params, topk_sample_logprobs=3).result(TIMEOUT)
    plain = sampler.sample(PROMPT, 2, params).result(TIMEOUT)
    assert [s.tokens for s in with_topk.sequences] == [s.tokens for s in plain.sequences]
    for sequence in with_topk.sequences:
        rows = sequence.topk_logprobs
        assert rows is not None and len(rows) == len(sequence.tokens)
        extended = types.ModelInput.from_ints(PROMPT.to_ints() + sequence.tokens)
        reference = sampler.sample(
            extended, 1, params, include_prompt_logprobs=True, topk_prompt_logprobs=3
        ).result(TIMEOUT)
        expected = reference.topk_prompt_logprobs
        assert expected is not None
        assert rows == expected[len(PROMPT.to_ints()) :]  # the same function, bit for bit


def test_prompt_draws_have_the_models_logprobs_and_do_not_change_the_samples(
    sampler: SamplingClient,
) -> None:
    params = types.SamplingParams(max_tokens=3, seed=4, temperature=1.0)
    drawn = sampler.sample(PROMPT, 1, params, prompt_alt_tokens_k=4).result(TIMEOUT)
    assert (
        drawn.sequences[0].tokens
        == sampler.sample(PROMPT, 1, params).result(TIMEOUT).sequences[0].tokens
    )
    alt = drawn.prompt_alt_tokens
    assert alt is not None
    tokens, logprobs = alt.tokens.to_torch(), alt.logprobs.to_torch()
    assert tuple(tokens.shape) == (len(PROMPT.to_ints()) - 1, 4)
    scored = sampler.sample(
        PROMPT,
        1,
        params,
        include_prompt_logprobs=True,
        target_prompt_logprobs=types.TensorData.from_torch(tokens),
    ).result(TIMEOUT)
    assert scored.target_prompt_logprobs is not None
    assert scored.target_prompt_logprobs.to_torch().allclose(logprobs, atol=1e-5)
    greedy = sampler.sample(
        PROMPT,
        1,
        types.SamplingParams(max_tokens=1, temperature=0.0),
        include_prompt_logprobs=True,
        topk_prompt_logprobs=1,
        prompt_alt_tokens_k=2,
    ).result(TIMEOUT)
    assert greedy.prompt_alt_tokens is not None and greedy.topk_prompt_logprobs is not None
    best = [row[0][0] for row in greedy.topk_prompt_logprobs[1:]]  # type: ignore[index]
    assert greedy.prompt_alt_tokens.tokens.tolist() == [[b, b] for b in best]


def test_the_last_n_suffix_leaves_earlier_logprobs_and_top_k_rows_empty(
    sampler: SamplingClient,
) -> None:
    answer = sampler.sample(
        PROMPT,
        1,
        types.SamplingParams(max_tokens=1),
        include_prompt_logprobs=True,
        topk_prompt_logprobs=2,
        prompt_logprobs_last_n=3,
    ).result(TIMEOUT)
    assert answer.prompt_logprobs is not None and answer.topk_prompt_logprobs is not None
    length = len(PROMPT.to_ints())
    assert answer.prompt_logprobs[: length - 3] == [None] * (length - 3)
    assert all(v is not None and not math.isnan(v) for v in answer.prompt_logprobs[-3:])
    assert answer.topk_prompt_logprobs[: length - 3] == [None] * (length - 3)
    assert all(row is not None for row in answer.topk_prompt_logprobs[-3:])
    suffix = sampler.compute_logprobs(PROMPT, prompt_logprobs_last_n=3).result(TIMEOUT)
    assert suffix == answer.prompt_logprobs
