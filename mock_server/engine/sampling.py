"""Seeded sampling and prompt logprobs over a frozen copy of a model's weights.

Tokens are drawn one at a time from the temperature-scaled, top-k / top-p filtered next-token
distribution with a `torch.Generator` seeded per request, so the same seed gives the same
tokens. Each draw costs one uniform number and one pass over the candidates (inverse CDF), and
a top-p nucleus is found without sorting the whole vocabulary (`_nucleus`): on a 152k-token
vocabulary a token then costs about the output projection, not a full sort plus a random
number per vocabulary entry (`torch.multinomial`).

The logprobs reported for sampled tokens are the model's own (temperature 1, unfiltered)
logprobs, computed afterwards by `target_logprobs` over the whole sequence: the same function,
on the same input, that a training forward over that sequence runs, so on-policy importance
ratios are exactly 1. Prompt logprobs come from the same function too (position 0 has no value
and is NaN), so a snapshot reproduces the training forward bit for bit.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mock_server.engine.errors import InvalidInputError
from mock_server.engine.model import (
    Adapter,
    BaseWeights,
    OutputHead,
    derive_seed,
    target_logprobs,
    topk_logprobs,
)
from mock_server.engine.tokenizer import decode_bytes


@dataclass(frozen=True)
class SampleSpec:
    prompt: Tensor  # (L,) int64
    seed: int  # the caller derives one when the client gave none
    num_samples: int = 1
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_k: int = -1  # <= 0 = no top-k filter
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] | None = None  # None = the model's EOS; () = never stop
    stop_strings: tuple[str, ...] = ()
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    target_prompt_logprobs: Tensor | None = None  # (L-1, K) int64 ids, -1 = no target
    topk_sample_logprobs: int = 0  # k most likely tokens at each sampled position
    prompt_alt_tokens_k: int = 0  # draws at each prompt position after the first


@dataclass(frozen=True)
class SampledSequence:
    tokens: list[int]
    logprobs: list[float]
    stop_reason: str  # "stop" | "length"
    topk: tuple[Tensor, Tensor] | None = None  # ids (n, k) int64, logprobs (n, k) float32


@dataclass(frozen=True)
class SampleResult:
    sequences: list[SampledSequence]
    prompt_logprobs: Tensor | None = None  # (L,) float32, NaN at position 0
    topk_prompt_logprobs: tuple[Tensor, Tensor] | None = None  # ids (L, k), logprobs (L, k)
    target_prompt_logprobs: Tensor | None = None  # (L-1, K) float32, 0.0 where id was -1
    prompt_alt_tokens: tuple[Tensor, Tensor] | None = None  # tokens (L-1, k), logprobs (L-1, k)
    extra: dict[str, float] = field(default_factory=dict)


def validate_spec(spec: SampleSpec, vocab_size: int, max_context: int) -> None:
    prompt = spec.prompt
    if prompt.dim() != 1 or prompt.numel() == 0 or prompt.dtype != torch.int64:
        raise InvalidInputError("prompt", "expected a non-empty sequence of token ids")
    if int(prompt.min()) < 0 or int(prompt.max()) >= vocab_size:
        raise InvalidInputError("prompt", f"token ids must lie in [0, {vocab_size})")
    if spec.num_samples < 1:
        raise InvalidInputError("num_samples", f"must be >= 1, got {spec.num_samples}")
    if spec.max_tokens < 1:
        raise InvalidInputError(
            "sampling_params.max_tokens", f"must be >= 1, got {spec.max_tokens}"
        )
    if prompt.numel() + spec.max_tokens > max_context:
        raise InvalidInputError(
            "sampling_params.max_tokens",
            f"prompt ({prompt.numel()}) + max_tokens ({spec.max_tokens}) exceeds the "
            f"context length {max_context}",
        )
    if not (spec.temperature >= 0 and spec.temperature < float("inf")):
        raise InvalidInputError(
            "sampling_params.temperature", f"must be >= 0, got {spec.temperature}"
        )
    if not 0 < spec.top_p <= 1:
        raise InvalidInputError("sampling_params.top_p", f"must be in (0, 1], got {spec.top_p}")
    for name in ("topk_prompt_logprobs", "topk_sample_logprobs", "prompt_alt_tokens_k"):
        value = getattr(spec, name)
        if not 0 <= value <= vocab_size:
            raise InvalidInputError(name, f"must be in [0, {vocab_size}], got {value}")
    for token in spec.stop_token_ids or ():
        if not 0 <= token < vocab_size:
            raise InvalidInputError(
                "sampling_params.stop", f"stop token {token} outside the vocabulary"
            )
    targets = spec.target_prompt_logprobs
    if targets is not None:
        if targets.dim() != 2 or targets.shape[0] != prompt.numel() - 1:
            raise InvalidInputError(
                "target_prompt_logprobs",
                f"expected shape [L-1, K] = [{prompt.numel() - 1}, K], got {list(targets.shape)}",
            )
        if targets.numel() and (int(targets.min()) < -1 or int(targets.max()) >= vocab_size):
            raise InvalidInputError("target_prompt_logprobs", "ids must be -1 or in the vocabulary")


# The top-p nucleus without a full sort: token probabilities are binned by log-probability
# (bins 1/64 nat wide below the most likely token; everything further down shares the last
# bin), the bins' masses accumulate from the top, and only the one bin where the running mass
# crosses top_p is sorted. O(V) plus the sort of one bin (a few hundred of 152k tokens).
_BINS_PER_NAT = 64
_BINS = 2048


def _candidates(logits: Tensor, spec: SampleSpec) -> tuple[Tensor, Tensor | None]:
    """The tokens a draw may pick and their probabilities: (probs (n,), token ids (n,) or
    None for the whole vocabulary in id order). Temperature scales the logits; top-k keeps the
    k most likely; top-p keeps, in descending probability, each token until the ones before it
    already reach `top_p` (the first always stays), as in the usual nucleus sampling."""
    logits = logits / spec.temperature
    ids: Tensor | None = None
    if 0 < spec.top_k < logits.numel():
        logits, ids = logits.topk(spec.top_k)  # descending
    probs = torch.softmax(logits, dim=0)
    if spec.top_p >= 1.0:
        return probs, ids
    keep = _nucleus(probs, spec.top_p)
    kept = keep.nonzero()[:, 0]
    return probs[kept], kept if ids is None else ids[kept]


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Mask (n,) of the tokens whose more likely tokens hold less than `top_p` of the mass."""
    logp = probs.log()
    depth = ((logp.max() - logp) * _BINS_PER_NAT).clamp(max=_BINS - 1).to(torch.int64)
    mass = torch.zeros(_BINS).index_add_(0, depth, probs)  # (bins,), most likely bin first
    inclusive = mass.cumsum(dim=0)
    crossing = int((inclusive >= top_p).to(torch.int64).argmax())  # 0 if never: keep 1st bin
    if not bool(inclusive[crossing] >= top_p):
        crossing = _BINS - 1  # float32 totals can end just short of top_p: keep everything
    keep = depth < crossing
    inside = (depth == crossing).nonzero()[:, 0]
    ranked, order = probs[inside].sort(descending=True)
    above = (inclusive[crossing] - mass[crossing]) + ranked.cumsum(dim=0) - ranked
    keep[inside[order[above < top_p]]] = True
    if not bool(keep.any()):  # the most likely token always stays
        keep[probs.argmax()] = True
    return keep


def _draw(probs: Tensor, ids: Tensor | None, generator: torch.Generator) -> int:
    """Inverse CDF: the first candidate whose cumulative probability exceeds u ~ U(0, total)
    (`total` rather than 1: the float32 running sum need not end exactly at 1)."""
    cumulative = probs.cumsum(dim=0)
    u = torch.rand((), generator=generator) * cumulative[-1]
    index = min(int(torch.searchsorted(cumulative, u, right=True)), probs.numel() - 1)
    return index if ids is None else int(ids[index])


def _stops(generated: list[int], stop_ids: tuple[int, ...], stop_strings: tuple[str, ...]) -> bool:
    if generated[-1] in stop_ids:
        return True
    if stop_strings:
        text = decode_bytes(generated).decode("utf-8", errors="replace")
        return any(s in text for s in stop_strings)
    return False


def sample(base: BaseWeights, weights: Adapter, spec: SampleSpec) -> SampleResult:
    """Sample `spec` from `weights` (an empty dict: the base model) in one go."""
    steps = sample_steps(base, weights, spec)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: SampleResult = done.value
            return result


# As a decorator on a generator function, no_grad holds only while the generator runs: the
# thread that resumes it keeps its own grad mode between tokens (a `with` block would not).
@torch.no_grad()
def sample_steps(
    base: BaseWeights, weights: Adapter, spec: SampleSpec
) -> Generator[None, None, SampleResult]:
    """`sample` one generated token at a time: it yields after each token and returns the
    result, so a caller can pause between tokens (`engine.Unfinished`: other sessions take their
    turns) without changing a bit of the outcome. Validates before the first token."""
    validate_spec(spec, base.spec.vocab_size, base.spec.max_context_length)
    stop_ids = (base.spec.eos_token_id,) if spec.stop_token_ids is None else spec.stop_token_ids
    generator = torch.Generator().manual_seed(spec.seed)
    prompt = spec.prompt
    head = OutputHead(base, weights)
    sequences = []
    for _ in range(spec.num_samples):
        generated: list[int] = []
        stop_reason = "length"
        for _ in range(spec.max_tokens):
            context = torch.cat([prompt, torch.tensor(generated, dtype=torch.int64)])
            logits = head.next_token_logits(base, weights, context)
            if spec.temperature == 0:
                token = int(logits.argmax())
            else:
                token = _draw(*_candidates(logits, spec), generator)
            generated.append(token)
            if _stops(generated, stop_ids, spec.stop_strings):
                stop_reason = "stop"
                break
            yield
        full = torch.cat([prompt, torch.tensor(generated, dtype=torch.int64)])
        logprobs = target_logprobs(base, weights, full[:-1], full[1:])[prompt.numel() - 1 :]
        topk = None
        if spec.topk_sample_logprobs:  # the model's own top-k at each sampled position
            ids, values = topk_logprobs(base, weights, full[:-1], spec.topk_sample_logprobs)
            topk = ids[prompt.numel() - 1 :], values[prompt.numel() - 1 :]
        sequences.append(SampledSequence(generated, logprobs.tolist(), stop_reason, topk))
    return SampleResult(
        sequences=sequences,
        prompt_logprobs=_prompt_logprobs(base, weights, prompt) if spec.prompt_logprobs else None,
        topk_prompt_logprobs=_topk_prompt(base, weights, prompt, spec.topk_prompt_logprobs),
        target_prompt_logprobs=_target_prompt(base, weights, prompt, spec.target_prompt_logprobs),
        prompt_alt_tokens=_prompt_alt_tokens(base, weights, spec),
    )


def _prompt_logprobs(base: BaseWeights, weights: Adapter, prompt: Tensor) -> Tensor:
    first = torch.full((1,), float("nan"))
    if prompt.numel() < 2:
        return first
    return torch.cat([first, target_logprobs(base, weights, prompt[:-1], prompt[1:])])


def _topk_prompt(
    base: BaseWeights, weights: Adapter, prompt: Tensor, k: int
) -> tuple[Tensor, Tensor] | None:
    """Row t (t >= 1) holds the k most likely tokens at prompt position t; row 0 is empty."""
    if k == 0:
        return None
    ids = torch.zeros(prompt.numel(), k, dtype=torch.int64)
    values = torch.full((prompt.numel(), k), -99999.0)
    if prompt.numel() >= 2:
        top_ids, top_values = topk_logprobs(base, weights, prompt[:-1], k)
        ids[1:, : top_ids.shape[1]] = top_ids
        values[1:, : top_values.shape[1]] = top_values
    return ids, values


def _target_prompt(
    base: BaseWeights, weights: Adapter, prompt: Tensor, targets: Tensor | None
) -> Tensor | None:
    if targets is None:
        return None
    if targets.shape[0] == 0:
        return torch.zeros(targets.shape)
    present = targets >= 0
    logprobs = target_logprobs(base, weights, prompt[:-1], targets.clamp(min=0))
    return torch.where(present, logprobs, torch.zeros(()))


def _prompt_alt_tokens(
    base: BaseWeights, weights: Adapter, spec: SampleSpec
) -> tuple[Tensor, Tensor] | None:
    """`prompt_alt_tokens_k` draws at every prompt position t >= 1, independently and at the
    request's temperature (0: the most likely token, k times), from the next-token distribution
    given prompt[:t]; row t - 1 holds them with the model's own logprobs (temperature 1, as for
    sampled tokens). A generator of their own, so asking for them never changes the samples."""
    k = spec.prompt_alt_tokens_k
    if k == 0:
        return None
    prompt = spec.prompt
    rows = prompt.numel() - 1
    tokens = torch.zeros(rows, k, dtype=torch.int64)
    logprobs = torch.zeros(rows, k)
    generator = torch.Generator().manual_seed(derive_seed(spec.seed, "prompt_alt_tokens"))
    head = OutputHead(base, weights)
    for t in range(1, prompt.numel()):
        logits = head.next_token_logits(base, weights, prompt[:t])  # (V,)
        if spec.temperature == 0:
            drawn = logits.argmax().repeat(k)
        else:
            probs = torch.softmax(logits / spec.temperature, dim=0)
            drawn = torch.multinomial(probs, k, replacement=True, generator=generator)
        tokens[t - 1] = drawn
        logprobs[t - 1] = torch.log_softmax(logits, dim=0)[drawn]
    return tokens, logprobs
