"""Sampling-side values: `SamplingParams` and the `SampleResponse` a sampling future returns.

Mirrors `tinker.SamplingParams`, `SampledSequence`, `SampleResponse`, `TopkLogprobs` and
`PromptAltTokens`. Like the SDK, per-token arrays are held as numpy (`tokens_np`, `logprobs_np`,
`prompt_logprobs_np` with NaN where a prompt position has no value) and offered as Python lists
through `tokens`, `logprobs`, `prompt_logprobs` (None in place of NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from tinker_ref.types._arrays import arrays_identical, frozen_array
from tinker_ref.types.model_input import check_token_ids
from tinker_ref.types.tensor_data import TensorData

__all__ = [
    "MASK_LOGPROB",
    "PromptAltTokens",
    "SampleResponse",
    "SampledSequence",
    "SamplingParams",
    "StopReason",
    "TopkLogprobs",
]

StopReason: TypeAlias = Literal["stop", "length"]
MASK_LOGPROB = -99999.0  # logprob of an empty top-k cell; its token id is 0


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `stop=None` keeps implicit EOS stopping; `stop=[]` disables it."""

    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = 1.0
    top_k: int = -1  # -1: no limit
    top_p: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_tokens", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"SamplingParams.{name} must be an int or None, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise TypeError(f"SamplingParams.top_k must be an int, got {self.top_k!r}")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"SamplingParams.{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.stop is not None and not isinstance(self.stop, str):
            stop = list(self.stop)
            if not (
                all(isinstance(item, str) for item in stop)
                or all(isinstance(item, int) and not isinstance(item, bool) for item in stop)
            ):
                raise TypeError(
                    f"SamplingParams.stop must be a str, a list of str or a list of token ids, "
                    f"got {self.stop!r}"
                )
            object.__setattr__(self, "stop", stop)

    def to_json(self) -> dict[str, Any]:
        """The JSON body form; None fields are left out, as the SDK does."""
        body: dict[str, Any] = {}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stop is not None:
            body["stop"] = self.stop if isinstance(self.stop, str) else list(self.stop)
        body["temperature"] = self.temperature
        body["top_k"] = self.top_k
        body["top_p"] = self.top_p
        return body


@dataclass(frozen=True, eq=False)
class TopkLogprobs:
    """Top-k tokens per position as two dense `(length, k)` matrices, row-major.

    Empty cells hold token id 0 and logprob `MASK_LOGPROB`.
    """

    token_ids: npt.NDArray[np.int32]  # (length, k)
    logprobs: npt.NDArray[np.float32]  # (length, k)

    def __post_init__(self) -> None:
        token_ids = frozen_array(np.asarray(self.token_ids), np.dtype(np.int32))
        logprobs = frozen_array(np.asarray(self.logprobs), np.dtype(np.float32))
        if token_ids.ndim != 2 or token_ids.shape != logprobs.shape:
            raise ValueError(
                "TopkLogprobs needs two (length, k) matrices of one shape, got "
                f"token_ids {list(token_ids.shape)} and logprobs {list(logprobs.shape)}"
            )
        object.__setattr__(self, "token_ids", token_ids)
        object.__setattr__(self, "logprobs", logprobs)

    def to_lists(self) -> list[list[tuple[int, float]] | None]:
        """Per position: `(token_id, logprob)` pairs without trailing empty cells, or None when
        the first cell is empty (the SDK's `topk_to_lists` rule)."""
        result: list[list[tuple[int, float]] | None] = []
        for ids_row, logprob_row in zip(
            self.token_ids.tolist(), self.logprobs.tolist(), strict=True
        ):
            pairs = list(zip(ids_row, logprob_row, strict=True))
            if not pairs or pairs[0] == (0, MASK_LOGPROB):
                result.append(None)
                continue
            while pairs[-1] == (0, MASK_LOGPROB):
                pairs.pop()
            result.append(pairs)
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopkLogprobs):
            return NotImplemented
        return arrays_identical(self.token_ids, other.token_ids) and arrays_identical(
            self.logprobs, other.logprobs
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, init=False, eq=False)
class SampledSequence:
    """One generated sequence. `sequence_id` is stamped by the client from the submission."""

    stop_reason: StopReason
    tokens_np: npt.NDArray[np.int32]  # (num_tokens,)
    logprobs_np: npt.NDArray[np.float32] | None  # (num_tokens,) or None if not requested
    topk_logprobs_np: TopkLogprobs | None
    sequence_id: str | None

    def __init__(
        self,
        stop_reason: StopReason,
        tokens: Sequence[int] | npt.NDArray[Any],
        logprobs: Sequence[float] | npt.NDArray[Any] | None = None,
        topk_logprobs: TopkLogprobs | None = None,
        sequence_id: str | None = None,
    ) -> None:
        if stop_reason not in ("stop", "length"):
            raise ValueError(f"stop_reason must be 'stop' or 'length', got {stop_reason!r}")
        if not (isinstance(tokens, np.ndarray) and tokens.dtype == np.int32 and tokens.ndim == 1):
            tokens = np.asarray(check_token_ids(tokens), dtype=np.int32)
        token_array = frozen_array(tokens, np.dtype(np.int32))
        logprob_array = None
        if logprobs is not None:
            logprob_array = frozen_array(np.asarray(logprobs), np.dtype(np.float32))
            if logprob_array.shape != token_array.shape:
                raise ValueError(
                    f"SampledSequence has {token_array.size} tokens but "
                    f"{logprob_array.size} logprobs"
                )
        object.__setattr__(self, "stop_reason", stop_reason)
        object.__setattr__(self, "tokens_np", token_array)
        object.__setattr__(self, "logprobs_np", logprob_array)
        object.__setattr__(self, "topk_logprobs_np", topk_logprobs)
        object.__setattr__(self, "sequence_id", sequence_id)

    @property
    def tokens(self) -> list[int]:
        result: list[int] = self.tokens_np.tolist()
        return result

    @property
    def logprobs(self) -> list[float] | None:
        return None if self.logprobs_np is None else self.logprobs_np.tolist()

    @property
    def topk_logprobs(self) -> list[list[tuple[int, float]] | None] | None:
        return None if self.topk_logprobs_np is None else self.topk_logprobs_np.to_lists()

    def with_sequence_id(self, sequence_id: str) -> SampledSequence:
        return SampledSequence(
            self.stop_reason, self.tokens_np, self.logprobs_np, self.topk_logprobs_np, sequence_id
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SampledSequence):
            return NotImplemented
        return (
            self.stop_reason == other.stop_reason
            and self.sequence_id == other.sequence_id
            and arrays_identical(self.tokens_np, other.tokens_np)
            and arrays_identical(self.logprobs_np, other.logprobs_np)
            and self.topk_logprobs_np == other.topk_logprobs_np
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class PromptAltTokens:
    """`k` draws per prompt position after the first: int64 `tokens` and float32 `logprobs`,
    both `[len(prompt) - 1, k]`."""

    tokens: TensorData
    logprobs: TensorData


@dataclass(frozen=True, init=False, eq=False)
class SampleResponse:
    """The result of a sampling request."""

    sequences: list[SampledSequence]
    prompt_logprobs_np: npt.NDArray[np.float32] | None  # (len(prompt),), NaN = no value
    topk_prompt_logprobs_np: TopkLogprobs | None
    target_prompt_logprobs: TensorData | None  # float32, same shape/layout as the request's
    prompt_cache_hit_tokens: int
    prompt_alt_tokens: PromptAltTokens | None

    def __init__(
        self,
        sequences: Sequence[SampledSequence],
        prompt_logprobs: Sequence[float | None] | npt.NDArray[Any] | None = None,
        topk_prompt_logprobs: TopkLogprobs | None = None,
        target_prompt_logprobs: TensorData | None = None,
        prompt_cache_hit_tokens: int = 0,
        prompt_alt_tokens: PromptAltTokens | None = None,
    ) -> None:
        prompt_array = None
        if prompt_logprobs is not None:
            if not isinstance(prompt_logprobs, np.ndarray):
                prompt_logprobs = [np.nan if v is None else v for v in prompt_logprobs]
            prompt_array = frozen_array(np.asarray(prompt_logprobs), np.dtype(np.float32))
            if prompt_array.ndim != 1:
                raise ValueError(f"prompt_logprobs must be 1-D, got {list(prompt_array.shape)}")
        object.__setattr__(self, "sequences", list(sequences))
        object.__setattr__(self, "prompt_logprobs_np", prompt_array)
        object.__setattr__(self, "topk_prompt_logprobs_np", topk_prompt_logprobs)
        object.__setattr__(self, "target_prompt_logprobs", target_prompt_logprobs)
        object.__setattr__(self, "prompt_cache_hit_tokens", int(prompt_cache_hit_tokens))
        object.__setattr__(self, "prompt_alt_tokens", prompt_alt_tokens)

    @property
    def prompt_logprobs(self) -> list[float | None] | None:
        """Per prompt token logprob, None where there is no value (position 0, say)."""
        if self.prompt_logprobs_np is None:
            return None
        values: list[float | None] = self.prompt_logprobs_np.tolist()
        for index in np.flatnonzero(np.isnan(self.prompt_logprobs_np)):
            values[index] = None
        return values

    @property
    def topk_prompt_logprobs(self) -> list[list[tuple[int, float]] | None] | None:
        if self.topk_prompt_logprobs_np is None:
            return None
        return self.topk_prompt_logprobs_np.to_lists()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SampleResponse):
            return NotImplemented
        return (
            self.sequences == other.sequences
            and arrays_identical(self.prompt_logprobs_np, other.prompt_logprobs_np)
            and self.topk_prompt_logprobs_np == other.topk_prompt_logprobs_np
            and self.target_prompt_logprobs == other.target_prompt_logprobs
            and self.prompt_cache_hit_tokens == other.prompt_cache_hit_tokens
            and self.prompt_alt_tokens == other.prompt_alt_tokens
        )

    __hash__ = None  # type: ignore[assignment]
