"""Translation of lower layers' input errors into the service's error tree.

The engine raises `InvalidInputError(field, message)`; inside `validating()` it becomes
`InvalidArgument` (HTTP 422) with the same field path, so front ends see one error tree. (Codec
errors never get here: the front ends decode, and map `CodecError` to `MalformedRequest`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mock_server.engine import InvalidInputError
from mock_server.service.errors import InvalidArgument, MalformedRequest


@contextmanager
def validating() -> Iterator[None]:
    try:
        yield
    except InvalidInputError as exc:
        raise InvalidArgument(exc.message, exc.field) from exc


def check_seq_id(seq_id: int) -> None:
    if seq_id < 1:
        raise MalformedRequest(
            f"must be >= 1 (seq_id 0 is the model's creation), got {seq_id}", "seq_id"
        )


def check_tokens(where: str, tokens: torch.Tensor, vocab_size: int) -> None:
    if tokens.numel() == 0:
        raise InvalidArgument("is empty; at least one token is required", where)
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise InvalidArgument(f"token id {bad} outside the vocabulary [0, {vocab_size})", where)
