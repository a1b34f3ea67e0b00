"""The protobuf messages that travel on Tinker's HTTP API, as bytes <-> tinker_ref types.

* `ForwardBackwardRequest` (the body of `POST /api/v1/forward_backward`): numeric loss config is
  dual-written to the legacy `loss_fn_config` map and to `loss_fn_config_v2[k].number`, strings
  only to `v2[k].text`, exactly like the official `request_conv`; the decoder prefers v2.
* `ForwardBackwardOutput` (a forward/backward future's result): per-datum outputs packed as
  `ArrayRecord`s of `BatchedTensor`s (byte offsets, `trailing_shape`); consecutive datums whose
  dtypes and trailing shapes agree share a record, so ragged `[N]` / `[N, K]` outputs work.
* `SampleResponse` (a sampling future's result, spec WIRE-12) lives in `proto_sample`
  and is re-exported here.

Encoders write canonical bytes (`SerializeToString(deterministic=True)` of the same message)
with zero-copy payloads; decoders parse with the generated code and raise `CodecError` naming the
field for anything malformed, never a numpy or protobuf exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinker_ref._proto.tinker_ref.wire.v1 import wire_pb2
from tinker_ref.codec._wire_reader import WireFormatError, read_tensor
from tinker_ref.codec._wire_writer import MessageWriter, little_endian_view, map_key_order
from tinker_ref.codec.errors import CodecError
from tinker_ref.codec.proto_sample import decode_sample_response, encode_sample_response
from tinker_ref.codec.proto_tensor import (
    check_dtype,
    datum_from_proto,
    parse_message,
    read_values,
    tensor_from_fields,
    write_datum,
    write_tensor,
)
from tinker_ref.types import Datum, ForwardBackwardOutput, TensorData

__all__ = [
    "ForwardBackwardRequest",
    "LossFnConfigValue",
    "decode_forward_backward_output",
    "decode_forward_backward_request",
    "decode_sample_response",
    "decode_tensor",
    "encode_forward_backward_output",
    "encode_forward_backward_request",
    "encode_sample_response",
    "encode_tensor",
]

LossFnConfigValue = float | str
# A record with no fields carries only its count; the cap (far above any real batch) keeps a
# corrupt count from allocating one dict per claimed datum without bound.
MAX_DATUMS_PER_RECORD = 1 << 16


# ----- single tensors ----------------------------------------------------------------------------


def encode_tensor(td: TensorData) -> bytes:
    """A `Tensor` message (dense or CSR, little-endian)."""
    return write_tensor(td).to_bytes()


def decode_tensor(payload: bytes, field: str = "tensor") -> TensorData:
    """A `Tensor` read in place by the zero-copy `_wire_reader` (upb's semantics, no arena copy).

    A `bytes` payload is sliced without copying, so the TensorData keeps it alive; any other
    buffer is copied to `bytes` first, as `parse_message` does, so the result is immutable.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError("Tensor", f"expected bytes, got {type(payload).__name__}")
    try:
        fields = read_tensor(payload if type(payload) is bytes else bytes(payload))
    except WireFormatError as exc:
        raise CodecError("Tensor", f"not a valid protobuf message ({exc})") from exc
    return tensor_from_fields(fields, field)


# ----- forward/backward request ------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardBackwardRequest:
    """A decoded `POST /api/v1/forward_backward` body."""

    model_id: str
    seq_id: int
    data: list[Datum]
    loss_fn: str
    loss_fn_config: dict[str, LossFnConfigValue]  # v2 preferred; legacy-only keys are numbers
    forward_only: bool


def encode_forward_backward_request(
    model_id: str,
    seq_id: int,
    data: Sequence[Datum],
    loss_fn: str,
    loss_fn_config: Mapping[str, LossFnConfigValue] | None = None,
    forward_only: bool = False,
) -> bytes:
    if not -(2**31) <= seq_id < 2**31:
        raise ValueError(f"seq_id must fit in int32, got {seq_id}")
    config = dict(loss_fn_config or {})
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"loss_fn_config[{key!r}] must be a float or a str, got {value!r}")
    writer = MessageWriter()
    writer.string(1, model_id)
    writer.varint(2, seq_id)
    for datum in data:
        writer.message(3, write_datum(datum))
    writer.string(4, loss_fn)
    for key in sorted(config, key=map_key_order):
        value = config[key]
        if not isinstance(value, str):
            writer.double_map_entry(5, key, float(value))
    writer.varint(6, forward_only)
    for key in sorted(config, key=map_key_order):
        value = config[key]
        entry_value = MessageWriter()
        if isinstance(value, str):
            entry_value.string(2, value, always=True)
        else:
            entry_value.double(1, float(value), always=True)
        writer.map_entry(7, key, entry_value)
    return writer.to_bytes()


def decode_forward_backward_request(payload: bytes) -> ForwardBackwardRequest:
    message = parse_message(wire_pb2.ForwardBackwardRequest, payload)
    config: dict[str, LossFnConfigValue] = {}
    for key in sorted(set(message.loss_fn_config_v2) | set(message.loss_fn_config)):
        if key in message.loss_fn_config_v2:
            value = message.loss_fn_config_v2[key]
            kind = value.WhichOneof("value")
            if kind is None:
                raise CodecError(f"loss_fn_config_v2[{key!r}]", "holds neither number nor text")
            config[key] = value.number if kind == "number" else value.text
        else:
            config[key] = message.loss_fn_config[key]
    return ForwardBackwardRequest(
        model_id=message.model_id,
        seq_id=message.seq_id,
        data=[datum_from_proto(d, f"data[{index}]") for index, d in enumerate(message.data)],
        loss_fn=message.loss_fn,
        loss_fn_config=config,
        forward_only=message.forward_only,
    )


# ----- forward/backward output -------------------------------------------------------------------


def encode_forward_backward_output(output: ForwardBackwardOutput) -> bytes:
    """Canonical `ForwardBackwardOutput` bytes; every datum must have the same output names.

    CSR outputs are densified (a BatchedTensor is dense). The wire keeps only each datum's
    element count and trailing shape, so an `[N, 0]` output decodes as `[0, 0]` (the SDK's rule).
    """
    writer = MessageWriter()
    writer.string(1, output.loss_fn_output_type)
    for record in _records(output.loss_fn_outputs):
        writer.message(2, record)
    for key in sorted(output.metrics, key=map_key_order):
        writer.double_map_entry(3, key, output.metrics[key])
    return writer.to_bytes()


def _records(outputs: Sequence[Mapping[str, TensorData]]) -> list[MessageWriter]:
    """One `ArrayRecord` per run of consecutive datums with equal dtypes and trailing shapes."""
    if not outputs:
        return []
    names = sorted(outputs[0], key=map_key_order)  # the record writer's map order
    runs: list[tuple[Any, list[dict[str, Any]]]] = []  # (signature, per-datum dense arrays)
    for index, output in enumerate(outputs):
        if sorted(output, key=map_key_order) != names:
            raise ValueError(
                f"loss_fn_outputs[{index}] has fields {sorted(output)} but loss_fn_outputs[0] has "
                f"{names}; every datum of one result needs the same fields"
            )
        arrays: dict[str, Any] = {}
        signature = []
        for name in names:
            td = output[name]
            if len(td.dense_shape) == 0:
                raise ValueError(
                    f"loss_fn_outputs[{index}][{name!r}] is 0-D; per-datum outputs need a "
                    "leading dimension"
                )
            arrays[name] = td.to_numpy() if td.is_sparse else td.values_array
            signature.append((name, td.dtype, td.dense_shape[1:]))
        if runs and runs[-1][0] == signature:
            runs[-1][1].append(arrays)
        else:
            runs.append((signature, [arrays]))
    return [_record(signature, datums) for signature, datums in runs]


def _record(signature: Any, datums: list[dict[str, Any]]) -> MessageWriter:
    record = MessageWriter()
    for name, dtype, trailing_shape in signature:
        wire_dtype = "<f4" if dtype == "float32" else "<i8"
        chunks = [little_endian_view(datum[name], wire_dtype) for datum in datums]
        offsets = np.zeros(len(chunks) + 1, dtype="<i8")  # BYTE offsets, (num_datums + 1,)
        np.cumsum([chunk.nbytes for chunk in chunks], out=offsets[1:])
        tensor = MessageWriter()
        tensor.bytes_field(1, *chunks)
        tensor.bytes_field(2, offsets.tobytes())
        tensor.varint(3, wire_pb2.DTYPE_FLOAT32 if dtype == "float32" else wire_pb2.DTYPE_INT64)
        tensor.packed_varints(4, trailing_shape)
        record.map_entry(2, name, tensor)
    record.varint(3, len(datums))
    return record


def decode_forward_backward_output(payload: bytes) -> ForwardBackwardOutput:
    """Per-datum outputs in datum order, combined across records (official decoding rules)."""
    message = parse_message(wire_pb2.ForwardBackwardOutput, payload)
    metrics = {key: float(message.metrics[key]) for key in sorted(message.metrics)}
    if not message.loss_fn_outputs:
        return ForwardBackwardOutput(message.loss_fn_output_type or "ArrayRecord", [], metrics)
    outputs: list[dict[str, TensorData]] = []
    names: list[str] | None = None
    for index, record in enumerate(message.loss_fn_outputs):
        field = f"loss_fn_outputs[{index}]"
        record_names = sorted(record.fields)
        if names is not None and record_names != names:
            raise CodecError(
                f"{field}.fields",
                f"has fields {record_names} but loss_fn_outputs[0] has {names}",
            )
        names = record_names
        outputs.extend(_decode_record(record, field))
    output_type = message.loss_fn_output_type.rsplit(":", 1)[-1]
    return ForwardBackwardOutput(output_type, outputs, metrics)


def _decode_record(record: wire_pb2.ArrayRecord, field: str) -> list[dict[str, TensorData]]:
    count = record.num_datums
    if not 0 <= count <= MAX_DATUMS_PER_RECORD:
        raise CodecError(
            f"{field}.num_datums", f"must be in [0, {MAX_DATUMS_PER_RECORD}], got {count}"
        )
    names = sorted(record.fields)
    if count == 0 and names:
        # Records written before num_datums existed: the first field's offsets give the count.
        count = max(len(record.fields[names[0]].offsets) // 8 - 1, 0)
    datums: list[dict[str, TensorData]] = [{} for _ in range(count)]
    for name in names:
        tensor_field = f"{field}.fields[{name!r}]"
        for datum, td in zip(
            datums, _split_batched(record.fields[name], count, tensor_field), strict=True
        ):
            datum[name] = td
    return datums


def _split_batched(tensor: wire_pb2.BatchedTensor, count: int, field: str) -> list[TensorData]:
    wire_dtype, dtype = check_dtype(tensor.dtype, f"{field}.dtype")
    itemsize = np.dtype(wire_dtype).itemsize
    values = read_values(tensor.data, wire_dtype, f"{field}.data")
    offsets = read_values(tensor.offsets, "<i8", f"{field}.offsets")
    if count == 0 and offsets.size == 0:
        return []
    if offsets.size != count + 1:
        raise CodecError(
            f"{field}.offsets",
            f"has {offsets.size} entries but the record has {count} datums (expected {count + 1})",
        )
    if offsets[0] < 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > len(tensor.data):
        raise CodecError(
            f"{field}.offsets",
            f"must be non-decreasing byte offsets within the {len(tensor.data)}-byte data, "
            f"got {offsets.tolist()}",
        )
    if np.any(offsets % itemsize):
        raise CodecError(
            f"{field}.offsets",
            f"must be multiples of the {itemsize}-byte item size, got {offsets.tolist()}",
        )
    trailing_shape = list(tensor.trailing_shape)
    if trailing_shape and min(trailing_shape) < 0:
        raise CodecError(f"{field}.trailing_shape", f"must be >= 0, got {trailing_shape}")
    row_size = math.prod(trailing_shape)
    bounds = (offsets // itemsize).tolist()  # element offsets, (count + 1,)
    result = []
    for index in range(count):
        elements = values[bounds[index] : bounds[index + 1]]
        if (row_size == 0 and elements.size) or (row_size and elements.size % row_size):
            raise CodecError(
                f"{field}.data",
                f"datum {index} has {elements.size} values, not a multiple of the "
                f"trailing shape {trailing_shape}",
            )
        leading = elements.size // row_size if row_size else 0
        try:
            result.append(TensorData(elements, dtype, [leading, *trailing_shape]))
        except ValueError as exc:  # unreachable after the checks above; kept as a typed guard
            raise CodecError(f"{field}.data", f"datum {index}: {exc}") from exc
    return result
