"""The zero-copy `Tensor` reader (`tinker_ref.codec._wire_reader`) against upb, differentially.

For any byte string, `read_tensor` must either give exactly the fields the generated code parses
(dense / sparse_csr oneof, dtype, shape) or fail exactly where upb's `ParseFromString` fails; and
`decode_tensor` must give the same TensorData as the upb path (`tensor_from_proto`) or, like it,
raise CodecError.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.profiles import examples
from tinker_ref._proto.tinker_ref.wire.v1 import wire_pb2
from tinker_ref.codec import CodecError, decode_tensor, encode_tensor
from tinker_ref.codec._wire_reader import WireFormatError, read_tensor
from tinker_ref.codec._wire_writer import _varint  # two's complement for negatives
from tinker_ref.codec.proto_tensor import tensor_from_proto
from tinker_ref.types import TensorData

_ERROR = "error"


def _upb_fields(payload: bytes) -> Any:
    message = wire_pb2.Tensor()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        return _ERROR
    sparse = None
    if message.HasField("sparse_csr"):
        csr = message.sparse_csr
        sparse = (csr.values, csr.crow_indices, csr.col_indices)
    return (message.dense, sparse, message.dtype, list(message.shape))


def _reader_fields(payload: bytes) -> Any:
    try:
        fields = read_tensor(payload)
    except WireFormatError:
        return _ERROR
    sparse = None
    if fields.sparse is not None:
        csr = fields.sparse
        sparse = (bytes(csr.values), bytes(csr.crow_indices), bytes(csr.col_indices))
    return (bytes(fields.dense), sparse, fields.dtype, fields.shape)


def _td_key(td: TensorData) -> Any:
    crow, col = td.crow_indices_array, td.col_indices_array
    return (
        td.dtype,
        td.shape,
        td.values_array.tobytes(),
        None if crow is None else crow.tobytes(),
        None if col is None else col.tobytes(),
    )


def _upb_tensor(payload: bytes) -> Any:
    message = wire_pb2.Tensor()
    try:
        message.ParseFromString(payload)
        return _td_key(tensor_from_proto(message, "tensor"))
    except (DecodeError, CodecError):
        return _ERROR


def _reader_tensor(payload: bytes) -> Any:
    try:
        return _td_key(decode_tensor(payload))
    except CodecError:
        return _ERROR


def _assert_same(payload: bytes) -> None:
    assert _reader_fields(payload) == _upb_fields(payload), payload.hex()
    assert _reader_tensor(payload) == _upb_tensor(payload), payload.hex()


# ----- generators: valid messages, their fields re-ordered / repeated, and raw byte noise --------


def _field(number: int, wire_type: int, body: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + body


def _delimited(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


_int64 = st.integers(-(2**63), 2**63 - 1)
_small = st.integers(-3, 12)
_blob = st.sampled_from([b"", bytes(4), bytes(8), bytes(range(16)), b"\x00\x00\x80?"]) | st.binary(
    max_size=24
)
_unknown = st.one_of(
    st.builds(lambda n, v: _field(n, 0, _varint(v)), st.integers(5, 2**29 - 1), _int64),
    st.builds(lambda n, b: _field(n, 1, b), st.integers(1, 40), st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: _field(n, 5, b), st.integers(1, 40), st.binary(min_size=4, max_size=4)),
    st.builds(_delimited, st.integers(5, 40), st.binary(max_size=8)),
    st.builds(
        lambda n, body: _field(n, 3, body) + _field(n, 4, b""),
        st.integers(1, 40),
        st.sampled_from([b"", b"\x08\x01", b"\x00\x05", b"\x0b\x0c", b"\x1d\x00\x00\x00\x00"]),
    ),
)
_sparse_field = st.one_of(
    st.builds(_delimited, st.integers(1, 3), _blob),
    st.builds(lambda n, v: _field(n, 0, _varint(v)), st.integers(1, 3), _small),
    _unknown,
)
_tensor_field = st.one_of(
    st.builds(lambda b: _delimited(1, b), _blob),
    st.builds(lambda fields: _delimited(2, b"".join(fields)), st.lists(_sparse_field, max_size=4)),
    st.builds(lambda v: _field(3, 0, _varint(v)), st.integers(-(2**63), 2**64 - 1) | _small),
    st.builds(lambda v: _field(4, 0, _varint(v)), _int64 | _small),
    st.builds(
        lambda vs: _delimited(4, b"".join(_varint(v) for v in vs)), st.lists(_int64 | _small)
    ),
    st.builds(lambda n, b: _delimited(n, b), st.sampled_from([3]), st.binary(max_size=3)),
    st.builds(lambda n, b: _field(n, 5, b), st.integers(1, 4), st.binary(min_size=4, max_size=4)),
    st.builds(lambda n, v: _field(n, 0, _varint(v)), st.integers(1, 2), _small),
    _unknown,
)
_message = st.builds(b"".join, st.lists(_tensor_field, max_size=6))


@st.composite
def _valid_tensor_bytes(draw: st.DrawFn) -> bytes:
    dtype = draw(st.sampled_from(["float32", "int64"]))
    rows, cols = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    array = np.arange(rows * cols, dtype=dtype).reshape(rows, cols)
    if draw(st.booleans()) and rows and cols:
        array[draw(st.integers(0, rows - 1))] = 0
        td = TensorData.from_numpy(array)
        td = TensorData(td.values_array, td.dtype, td.shape, None, None)
        sparse = draw(st.booleans())
        if sparse:
            row_index, col_index = np.nonzero(array)
            crow = np.zeros(rows + 1, dtype=np.int64)
            np.cumsum(np.bincount(row_index, minlength=rows), out=crow[1:])
            td = TensorData(
                array[row_index, col_index], dtype, [rows, cols], crow, col_index.astype(np.int64)
            )
        return encode_tensor(td)
    shape = draw(st.booleans())
    td = TensorData.from_numpy(array if shape else array.reshape(-1))
    return encode_tensor(td)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding with bytes flipped, cut, inserted or fields appended."""
    data = bytearray(draw(_valid_tensor_bytes() | _message))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "append", "prepend"]))
        if kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "append":
            data += draw(_tensor_field)
        else:
            data[0:0] = draw(_tensor_field)
    return bytes(data)


_FUZZ = settings(
    max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_FUZZ
@given(st.binary(max_size=40))
def test_random_bytes_match_upb(payload: bytes) -> None:
    _assert_same(payload)


@_FUZZ
@given(_message)
def test_field_soup_matches_upb(payload: bytes) -> None:
    _assert_same(payload)


@_FUZZ
@given(_mutated())
def test_mutated_valid_tensors_match_upb(payload: bytes) -> None:
    _assert_same(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x1a\x01\x01",  # dtype with wire type 2: unknown field for a singular enum
        b"\x08\x05",  # dense as a varint: unknown
        b"\x10\x05",  # sparse_csr as a varint: unknown
        b"\x21" + bytes(8),  # shape as fixed64: unknown
        b"\x2b\x2c",  # empty unknown group
        b"\x2b\x34",  # mismatched end group
        b"\x2b\x00\x14\x2c",  # field number 0 inside an unknown group (upb allows it there)
        b"\x2b",  # unterminated group
        b"\x2c",  # stray end group
        b"\x2e",  # wire type 6
        b"\x2f",  # wire type 7
        b"\x00\x00",  # field number 0
        b"\x18" + b"\xff" * 9 + b"\x01",  # dtype -1, ten bytes
        b"\x18" + b"\xff" * 9 + b"\x7f",  # ten-byte varint, bits past 64 dropped
        b"\x18" + b"\xff" * 10 + b"\x01",  # eleven-byte varint
        b"\x88\x80\x80\x80\x80\x00\x01",  # six-byte tag
        b"\x88\x80\x80\x80\x70\x01",  # tag above 2**32
        b"\xf8\xff\xff\xff\x0f\x01",  # the largest field number
        b"\x12\x02\x0b\x0c",  # unknown group inside sparse_csr
        b"\x12\x01\x0c",  # stray end group inside sparse_csr
        b"\x12\x03\x0a\x01\x07\x12\x03\x12\x01\x08",  # repeated sparse_csr merges
        b"\x12\x03\x0a\x01\x07\x0a\x01\x09\x12\x03\x12\x01\x08",  # ... not across dense
        b"\x22\x01\x80",  # packed shape cut mid-varint
        b"\x0a\xff\xff\xff\xff\x0f",  # length far past the end
        b"\x20\x02\x22\x02\x03\x04\x20\x05",  # packed and unpacked shape, mixed
        b"\x18\x80\x80\x80\x80\x10",  # dtype 2**32: truncated to int32 0
    ],
)
def test_edge_cases_match_upb(payload: bytes) -> None:
    _assert_same(payload)


@pytest.mark.parametrize("depth", [97, 98, 99, 100, 101])
def test_group_depth_limit_matches_upb(depth: int) -> None:
    groups = b"\x0b" * depth + b"\x0c" * depth
    _assert_same(groups)
    _assert_same(_delimited(2, groups))


def test_decode_reads_the_payload_in_place() -> None:
    array = np.arange(1000, dtype=np.float32)
    payload = encode_tensor(TensorData.from_numpy(array))
    decoded = decode_tensor(payload)
    values = decoded.values_array
    assert not values.flags.writeable
    assert np.shares_memory(values, np.frombuffer(payload, dtype=np.uint8))
    np.testing.assert_array_equal(values, array)
    # any other buffer is copied, so a later write to it cannot change the TensorData
    mutable = bytearray(payload)
    copy = decode_tensor(mutable).values_array
    mutable[-4:] = bytes(4)
    np.testing.assert_array_equal(copy, array)
