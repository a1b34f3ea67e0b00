"""Model inputs: token and image chunks, and the `ModelInput` that strings them together.

Mirrors `tinker.ModelInput`, `tinker.EncodedTextChunk` and `tinker.ImageChunk` (names, fields,
`length` semantics) as frozen dataclasses. Token ids travel as int32 on the wire, so they are
checked against the int32 range here, where the caller can still see which list was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["EncodedTextChunk", "ImageChunk", "ImageFormat", "ModelInput", "ModelInputChunk"]

ImageFormat: TypeAlias = Literal["png", "jpeg"]
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True, init=False)
class EncodedTextChunk:
    """A run of token ids (each must fit in int32)."""

    tokens: list[int]
    type: ClassVar[Literal["encoded_text"]] = "encoded_text"

    def __init__(self, tokens: Sequence[int] | npt.NDArray[Any]) -> None:
        object.__setattr__(self, "tokens", check_token_ids(tokens))

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class ImageChunk:
    """Raw image bytes; `expected_tokens` is the advisory token count (needed for `length`)."""

    data: bytes
    format: ImageFormat
    expected_tokens: int | None = None
    type: ClassVar[Literal["image"]] = "image"

    def __post_init__(self) -> None:
        if isinstance(self.data, (bytearray, memoryview)):
            object.__setattr__(self, "data", bytes(self.data))
        if not isinstance(self.data, bytes):
            raise TypeError(f"ImageChunk.data must be bytes, got {type(self.data).__name__}")
        if self.format not in ("png", "jpeg"):
            raise ValueError(f"ImageChunk.format must be 'png' or 'jpeg', got {self.format!r}")
        if self.expected_tokens is not None and (
            isinstance(self.expected_tokens, bool)
            or not isinstance(self.expected_tokens, int)
            or not 0 <= self.expected_tokens <= _INT32.max
        ):
            raise ValueError(
                f"ImageChunk.expected_tokens must be an int in [0, {_INT32.max}] or None, "
                f"got {self.expected_tokens!r}"
            )

    @property
    def length(self) -> int:
        if self.expected_tokens is None:
            raise ValueError("ImageChunk.expected_tokens must be set to compute the length")
        return self.expected_tokens


ModelInputChunk: TypeAlias = EncodedTextChunk | ImageChunk


@dataclass(frozen=True, init=False)
class ModelInput:
    """A sequence of chunks; its `length` is the number of token positions it occupies."""

    chunks: list[ModelInputChunk]

    def __init__(self, chunks: Sequence[ModelInputChunk]) -> None:
        checked = list(chunks)
        for index, chunk in enumerate(checked):
            if not isinstance(chunk, (EncodedTextChunk, ImageChunk)):
                raise TypeError(
                    f"ModelInput.chunks[{index}] must be EncodedTextChunk or ImageChunk, "
                    f"got {type(chunk).__name__}"
                )
        object.__setattr__(self, "chunks", checked)

    @classmethod
    def from_ints(cls, tokens: Sequence[int] | npt.NDArray[Any]) -> ModelInput:
        return cls([EncodedTextChunk(tokens)])

    @classmethod
    def empty(cls) -> ModelInput:
        return cls([])

    def to_ints(self) -> list[int]:
        """All token ids, in order; raises if any chunk is not text."""
        tokens: list[int] = []
        for chunk in self.chunks:
            if not isinstance(chunk, EncodedTextChunk):
                raise ValueError(
                    f"to_ints needs text chunks only, got a {type(chunk).__name__} chunk"
                )
            tokens.extend(chunk.tokens)
        return tokens

    @property
    def length(self) -> int:
        return sum(chunk.length for chunk in self.chunks)

    def append(self, chunk: ModelInputChunk) -> ModelInput:
        return ModelInput([*self.chunks, chunk])

    def append_int(self, token: int) -> ModelInput:
        return self.append(EncodedTextChunk([token]))


def check_token_ids(tokens: Sequence[int] | npt.NDArray[Any]) -> list[int]:
    """Token ids as a list of Python ints, refusing anything that is not an int32 id."""
    if isinstance(tokens, (str, bytes)):
        raise TypeError(f"tokens must be a list of ints, got {type(tokens).__name__}")
    try:
        array = np.asarray(tokens)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"tokens must be a flat list of ints ({exc})") from exc
    if array.ndim != 1:
        raise ValueError(f"tokens must be a flat list of ints, got shape {list(array.shape)}")
    if array.size == 0:
        return []
    if array.dtype.kind not in "iu":
        raise ValueError(f"tokens must be ints, got {array.dtype} values")
    low, high = int(array.min()), int(array.max())
    if low < _INT32.min or high > _INT32.max:
        bad = low if low < _INT32.min else high
        raise ValueError(
            f"token id {bad} is outside the int32 range [{_INT32.min}, {_INT32.max}] "
            "that the wire uses"
        )
    result: list[int] = array.tolist()
    return result
