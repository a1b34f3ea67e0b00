"""Protobuf forms of the building blocks: TensorData <-> `Tensor`, chunks <-> `Chunk`,
Datum <-> `Datum` (package `tinker_ref.wire.v1`, field-for-field the official `tinker_public`).

Writers append to a `MessageWriter` (canonical bytes, zero-copy payloads); readers take a parsed
message and raise `CodecError` naming the field for anything malformed. Bulk data is read with
`np.frombuffer` over the message's immutable bytes, so decoding copies nothing it need not.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError, Message

from tinker_ref._proto.tinker_ref.wire.v1 import wire_pb2
from tinker_ref.codec._wire_reader import SparseFields, TensorFields
from tinker_ref.codec._wire_writer import MessageWriter, little_endian_view, map_key_order
from tinker_ref.codec.errors import CodecError
from tinker_ref.types import (
    Datum,
    EncodedTextChunk,
    ImageChunk,
    ImageFormat,
    ModelInput,
    ModelInputChunk,
    PromptProvenanceSpan,
    ProvenanceSpan,
    SampledProvenanceSpan,
    TensorData,
    TensorDtype,
)

__all__ = [
    "WIRE_DTYPES",
    "check_dtype",
    "chunk_from_proto",
    "datum_from_proto",
    "parse_message",
    "read_values",
    "tensor_from_fields",
    "tensor_from_proto",
    "write_chunk",
    "write_datum",
    "write_tensor",
]

# proto DType -> (little-endian wire dtype, public TensorDtype it decodes to). INT32 widens to
# int64 and BFLOAT16 to float32, as in the official response decoder.
WIRE_DTYPES: dict[int, tuple[str, TensorDtype]] = {
    wire_pb2.DTYPE_FLOAT32: ("<f4", "float32"),
    wire_pb2.DTYPE_INT64: ("<i8", "int64"),
    wire_pb2.DTYPE_INT32: ("<i4", "int64"),
    wire_pb2.DTYPE_BFLOAT16: ("<u2", "float32"),
}
_PUBLIC_TO_PROTO = {"float32": wire_pb2.DTYPE_FLOAT32, "int64": wire_pb2.DTYPE_INT64}
_INT32 = np.iinfo(np.int32)


_MessageT = TypeVar("_MessageT", bound=Message)


def parse_message(message_type: type[_MessageT], payload: bytes) -> _MessageT:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(message_type.__name__, f"expected bytes, got {type(payload).__name__}")
    message = message_type()
    try:
        message.ParseFromString(bytes(payload))
    except DecodeError as exc:
        raise CodecError(message_type.__name__, f"not a valid protobuf message ({exc})") from exc
    return message


# ----- tensors -----------------------------------------------------------------------------------


def write_tensor(td: TensorData, *, as_int32: bool = False) -> MessageWriter:
    """`Tensor` for `td`; `as_int32` writes an int64 tensor as DTYPE_INT32 (prompt alt tokens)."""
    values = td.values_array
    if as_int32:
        if td.dtype != "int64":
            raise ValueError(f"only an int64 tensor can be written as int32, got {td.dtype}")
        if values.size and (values.min() < _INT32.min or values.max() > _INT32.max):
            raise ValueError("tensor values do not fit in int32")
        proto_dtype, wire_dtype = wire_pb2.DTYPE_INT32, "<i4"
    else:
        proto_dtype = _PUBLIC_TO_PROTO[td.dtype]
        wire_dtype = "<f4" if td.dtype == "float32" else "<i8"
    writer = MessageWriter()
    crow, col = td.crow_indices_array, td.col_indices_array
    if crow is not None and col is not None:
        csr = MessageWriter()
        csr.bytes_field(1, little_endian_view(values, wire_dtype))
        csr.bytes_field(2, little_endian_view(crow, "<i8"))
        csr.bytes_field(3, little_endian_view(col, "<i8"))
        writer.message(2, csr)
    else:
        writer.bytes_field(1, little_endian_view(values, wire_dtype), always=True)
    writer.varint(3, proto_dtype)
    if td.shape is not None:
        writer.packed_varints(4, td.shape)
    return writer


def check_dtype(proto_dtype: int, field: str) -> tuple[str, TensorDtype]:
    """(little-endian wire dtype, public dtype) of a proto DType, or CodecError."""
    found = WIRE_DTYPES.get(proto_dtype)
    if found is None:
        raise CodecError(
            field,
            f"unsupported dtype {proto_dtype}; expected DTYPE_FLOAT32 (1), DTYPE_INT64 (2), "
            "DTYPE_INT32 (3) or DTYPE_BFLOAT16 (4)",
        )
    return found


def read_values(raw: bytes | memoryview, wire_dtype: str, field: str) -> npt.NDArray[Any]:
    """Read-only flat native array of `raw` in `wire_dtype`, widened to its public dtype."""
    itemsize = np.dtype(wire_dtype).itemsize
    if len(raw) % itemsize:
        raise CodecError(
            field, f"{len(raw)} bytes is not a whole number of {itemsize}-byte {wire_dtype} values"
        )
    array = np.frombuffer(raw, dtype=wire_dtype)
    if wire_dtype == "<u2":
        # bfloat16 is the top half of a float32: shift into place (exact for every bf16 value).
        array = (array.astype(np.uint32) << 16).view(np.float32)
    elif wire_dtype == "<i4":
        array = array.astype(np.int64)
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    else:
        return array  # a read-only view of immutable bytes: TensorData keeps it without a copy
    array.flags.writeable = False
    return array


def tensor_from_proto(message: wire_pb2.Tensor, field: str) -> TensorData:
    """TensorData from a `Tensor`; an empty `shape` means 1-D (`shape=None`)."""
    sparse = None
    if message.HasField("sparse_csr"):
        csr = message.sparse_csr
        sparse = SparseFields(csr.values, csr.crow_indices, csr.col_indices)
    return tensor_from_fields(
        TensorFields(message.dense, sparse, message.dtype, list(message.shape)), field
    )


def tensor_from_fields(fields: TensorFields, field: str) -> TensorData:
    """TensorData from a `Tensor` read by `_wire_reader.read_tensor` (or from a parsed message)."""
    wire_dtype, dtype = check_dtype(fields.dtype, f"{field}.dtype")
    csr = fields.sparse
    values = read_values(
        csr.values if csr is not None else fields.dense,
        wire_dtype,
        f"{field}.sparse_csr.values" if csr is not None else f"{field}.dense",
    )
    shape = fields.shape or None
    if shape is not None and min(shape) < 0:
        raise CodecError(f"{field}.shape", f"dimensions must be >= 0, got {shape}")
    if csr is not None:
        crow = read_values(csr.crow_indices, "<i8", f"{field}.sparse_csr.crow_indices")
        col = read_values(csr.col_indices, "<i8", f"{field}.sparse_csr.col_indices")
        if shape is None or len(shape) != 2:
            raise CodecError(
                f"{field}.shape", f"a sparse CSR tensor needs a 2-D shape, got {shape}"
            )
        return _build(field + ".sparse_csr", values, dtype, shape, crow, col)
    if shape is not None and math.prod(shape) != values.size:
        raise CodecError(
            f"{field}.dense",
            f"has {values.size} values but shape {shape} needs {math.prod(shape)}",
        )
    return _build(field, values, dtype, shape, None, None)


def _build(
    field: str,
    values: npt.NDArray[Any],
    dtype: TensorDtype,
    shape: list[int] | None,
    crow: npt.NDArray[Any] | None,
    col: npt.NDArray[Any] | None,
) -> TensorData:
    try:
        return TensorData(values, dtype, shape, crow, col)
    except (ValueError, TypeError) as exc:
        raise CodecError(field, str(exc)) from exc


# ----- chunks and datums -------------------------------------------------------------------------


def write_chunk(chunk: ModelInputChunk) -> MessageWriter:
    writer = MessageWriter()
    inner = MessageWriter()
    if isinstance(chunk, EncodedTextChunk):
        inner.bytes_field(1, np.asarray(chunk.tokens, dtype="<i4").tobytes())
        writer.message(1, inner)
    elif isinstance(chunk, ImageChunk):
        inner.bytes_field(1, chunk.data)
        inner.string(2, chunk.format)
        if chunk.expected_tokens is not None:
            inner.varint(3, chunk.expected_tokens, always=True)
        writer.message(2, inner)
    else:
        raise TypeError(f"unsupported model input chunk {type(chunk).__name__}")
    return writer


def chunk_from_proto(message: wire_pb2.Chunk, field: str) -> ModelInputChunk:
    kind = message.WhichOneof("chunk")
    if kind == "encoded_text":
        raw = message.encoded_text.tokens
        tokens = read_values(raw, "<i4", f"{field}.encoded_text.tokens")
        return EncodedTextChunk(tokens)
    if kind == "image":
        image = message.image
        if image.format not in ("png", "jpeg"):
            raise CodecError(
                f"{field}.image.format", f"expected 'png' or 'jpeg', got {image.format!r}"
            )
        if image.HasField("override_dimensions"):
            raise CodecError(f"{field}.image.override_dimensions", "is not supported")
        expected = image.expected_tokens if image.HasField("expected_tokens") else None
        if expected is not None and expected < 0:
            raise CodecError(f"{field}.image.expected_tokens", f"must be >= 0, got {expected}")
        image_format: ImageFormat = "png" if image.format == "png" else "jpeg"
        return ImageChunk(data=image.data, format=image_format, expected_tokens=expected)
    if kind == "dmel":
        raise CodecError(f"{field}.dmel", "audio (dmel) chunks are not supported")
    raise CodecError(field, "chunk is empty; expected encoded_text or image")


def _write_span(span: ProvenanceSpan) -> MessageWriter:
    inner = MessageWriter()
    inner.string(1, span.sequence_id)
    inner.varint(2, span.offset)
    inner.varint(3, span.length)
    writer = MessageWriter()
    writer.message(2 if isinstance(span, SampledProvenanceSpan) else 1, inner)
    return writer


def _span_from_proto(message: wire_pb2.ProvenanceSpan, field: str) -> ProvenanceSpan:
    kind = message.WhichOneof("span")
    if kind is None:
        raise CodecError(field, "span is empty; expected prompt_tokens or sampled_tokens")
    inner = message.prompt_tokens if kind == "prompt_tokens" else message.sampled_tokens
    span_type = PromptProvenanceSpan if kind == "prompt_tokens" else SampledProvenanceSpan
    try:
        return span_type(sequence_id=inner.sequence_id, offset=inner.offset, length=inner.length)
    except ValueError as exc:
        raise CodecError(f"{field}.{kind}", str(exc)) from exc


def write_datum(datum: Datum) -> MessageWriter:
    writer = MessageWriter()
    for chunk in datum.model_input.chunks:
        writer.message(1, write_chunk(chunk))
    for name in sorted(datum.loss_fn_inputs, key=map_key_order):
        writer.map_entry(2, name, write_tensor(datum.loss_fn_inputs[name]))
    for span in datum.model_input_spans or ():
        writer.message(3, _write_span(span))
    for span in datum.loss_fn_input_spans or ():
        writer.message(4, _write_span(span))
    return writer


def datum_from_proto(message: wire_pb2.Datum, field: str) -> Datum:
    chunks = [
        chunk_from_proto(chunk, f"{field}.model_input[{index}]")
        for index, chunk in enumerate(message.model_input)
    ]
    inputs = {
        name: tensor_from_proto(message.loss_fn_inputs[name], f"{field}.loss_fn_inputs[{name!r}]")
        for name in sorted(message.loss_fn_inputs)
    }
    input_spans = [
        _span_from_proto(span, f"{field}.model_input_spans[{index}]")
        for index, span in enumerate(message.model_input_spans)
    ]
    loss_spans = [
        _span_from_proto(span, f"{field}.loss_fn_input_spans[{index}]")
        for index, span in enumerate(message.loss_fn_input_spans)
    ]
    if bool(input_spans) != bool(loss_spans):
        raise CodecError(
            f"{field}.model_input_spans",
            "provenance comes as a pair: model_input_spans and loss_fn_input_spans must both "
            f"be set or both be empty, got {len(input_spans)} and {len(loss_spans)} spans",
        )
    try:
        return Datum(
            ModelInput(chunks),
            inputs,
            input_spans or None,
            loss_spans or None,
        )
    except (ValueError, TypeError) as exc:
        raise CodecError(field, str(exc)) from exc
