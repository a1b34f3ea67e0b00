"""Splitting one forward/backward call into wire requests, exactly as the official SDK 0.38.

A chunk closes when it already holds `max_chunk_len` datums, or when adding the next datum
would push its estimated protobuf size past `max_chunk_bytes` (a datum larger than the limit
still forms a chunk of its own). The size estimate is the SDK's: 4 bytes per token, each
tensor's value bytes, 8 bytes per sparse-CSR index. Both limits come from the server's
`client/config` (defaults 1024 datums, 5 000 000 bytes). Matching the SDK matters: the chunk
boundaries decide the seq_ids a call reserves, which conformance checks compare.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinker_ref.types import Datum, EncodedTextChunk, ImageChunk, TensorData

DEFAULT_MAX_CHUNK_LEN = 1024
DEFAULT_MAX_CHUNK_BYTES = 5_000_000
_BYTES_PER_TOKEN = 4  # tokens travel as int32
_BYTES_PER_SPARSE_INDEX = 8  # CSR indices travel as int64


def _tensor_bytes(tensor: TensorData) -> int:
    count = tensor.values_array.nbytes
    for indices in (tensor.crow_indices_array, tensor.col_indices_array):
        if indices is not None:
            count += _BYTES_PER_SPARSE_INDEX * indices.size
    return count


def estimate_datum_bytes(datum: Datum) -> int:
    """The SDK's estimate of a datum's protobuf size in bytes."""
    total = 0
    for chunk in datum.model_input.chunks:
        if isinstance(chunk, ImageChunk):
            total += len(chunk.data)
        elif isinstance(chunk, EncodedTextChunk):
            total += chunk.length * _BYTES_PER_TOKEN
    return total + sum(_tensor_bytes(t) for t in datum.loss_fn_inputs.values())


def chunk_data(
    data: Sequence[Datum],
    max_chunk_len: int = DEFAULT_MAX_CHUNK_LEN,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> list[list[Datum]]:
    """Consecutive chunks covering `data` in order (empty data -> no chunk)."""
    chunks: list[list[Datum]] = []
    current: list[Datum] = []
    current_bytes = 0
    for datum in data:
        size = estimate_datum_bytes(datum)
        if current and (current_bytes + size > max_chunk_bytes or len(current) == max_chunk_len):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(datum)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks
