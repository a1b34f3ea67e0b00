"""A minimal zero-copy protobuf wire-format reader for the `Tensor` message (and a tolerant
peek at two top-level fields of any message).

Why not the protobuf library: `ParseFromString` copies a 4 MB `dense` payload into its arena and
`message.dense` copies it out again, so decoding alone cost about twice a `tobytes()`. Here the
payload fields come back as `memoryview` slices of the caller's immutable `bytes`, which
`np.frombuffer` reads in place (the decoded TensorData then keeps the whole payload alive).

Semantics are upb's (the default Python backend), checked byte for byte against it by the
differential property tests in tests/unit/test_codec_reader.py:

* scalar fields and the `encoding` oneof: the last occurrence wins; a `sparse_csr` that follows a
  `sparse_csr` MERGES into it (its own fields last-wins), one that follows `dense` starts afresh;
* `shape` (repeated int64) accepts packed and unpacked occurrences, mixed, in order;
* a known field with an unexpected wire type is kept as an unknown field, i.e. skipped;
* unknown fields are skipped, unknown groups included (nested, end tags must match, depth is
  limited as upb limits it); a stray end-group tag, wire types 6/7, field number 0, a tag over
  five bytes or 2**32, a varint over ten bytes, or anything truncated is malformed;
* varints keep their low 64 bits; int64 reads two's complement, the open enum `dtype` int32.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SparseFields", "TensorFields", "WireFormatError", "peek_fields", "read_tensor"]

_VARINT, _FIXED64, _LEN, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_MASK64 = (1 << 64) - 1
# upb's default depth limit: the top-level message may hold 100 - 1 levels of nesting below it.
_DEPTH_LIMIT = 100


class WireFormatError(ValueError):
    """The bytes are not a valid protobuf encoding (the caller names the message)."""


@dataclass
class SparseFields:
    values: bytes | memoryview
    crow_indices: bytes | memoryview
    col_indices: bytes | memoryview


@dataclass
class TensorFields:
    """A parsed `Tensor`: `sparse` is set when the oneof holds `sparse_csr`."""

    dense: bytes | memoryview
    sparse: SparseFields | None
    dtype: int
    shape: list[int]


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value masked to 64 bits, position after it)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise WireFormatError("varint longer than ten bytes")


def _tag(buf: bytes, pos: int, end: int, in_group: bool = False) -> tuple[int, int, int]:
    """(field number, wire type, position after the tag); upb allows field 0 only in a group."""
    byte = buf[pos]
    if byte < 0x80:
        tag, after = byte, pos + 1
    else:
        tag, after = _varint(buf, pos, end)
        if after - pos > 5 or tag > 0xFFFFFFFF:
            raise WireFormatError("tag too long")
    number, wire_type = tag >> 3, tag & 7
    if number == 0 and not in_group:
        raise WireFormatError("field number 0")
    return number, wire_type, after


def _length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, end) of a length-delimited value whose length varint starts at `pos`."""
    size, pos = _varint(buf, pos, end)
    if size > end - pos:
        raise WireFormatError("length-delimited field runs past the end")
    return pos, pos + size


def _skip(buf: bytes, pos: int, end: int, number: int, wire_type: int, depth: int) -> int:
    """Position after the value of an unknown field whose tag ended at `pos`."""
    if wire_type == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire_type in (_FIXED64, _FIXED32):
        pos += 8 if wire_type == _FIXED64 else 4
        if pos > end:
            raise WireFormatError("truncated fixed-width field")
        return pos
    if wire_type == _LEN:
        return _length(buf, pos, end)[1]
    if wire_type == _START_GROUP:
        depth -= 1
        if depth < 0:
            raise WireFormatError("nesting too deep")
        while pos < end:
            inner, inner_type, pos = _tag(buf, pos, end, in_group=True)
            if inner_type == _END_GROUP:
                if inner != number:
                    raise WireFormatError("mismatched end-group tag")
                return pos
            pos = _skip(buf, pos, end, inner, inner_type, depth)
        raise WireFormatError("unterminated group")
    raise WireFormatError(f"invalid wire type {wire_type}")  # 4 (stray end group), 6, 7


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _read_sparse(
    buf: bytes, view: memoryview, pos: int, end: int, into: SparseFields, depth: int
) -> None:
    while pos < end:
        number, wire_type, pos = _tag(buf, pos, end)
        if wire_type == _LEN and 1 <= number <= 3:
            start, pos = _length(buf, pos, end)
            value = view[start:pos]
            if number == 1:
                into.values = value
            elif number == 2:
                into.crow_indices = value
            else:
                into.col_indices = value
        else:
            pos = _skip(buf, pos, end, number, wire_type, depth)


def read_tensor(payload: bytes) -> TensorFields:
    """Parse a serialized `Tensor`; raise WireFormatError where upb's parser would fail."""
    buf = payload
    view = memoryview(buf)
    empty = view[0:0]
    fields = TensorFields(dense=empty, sparse=None, dtype=0, shape=[])
    pos, end = 0, len(buf)
    depth = _DEPTH_LIMIT
    while pos < end:
        number, wire_type, pos = _tag(buf, pos, end)
        if number == 1 and wire_type == _LEN:
            start, pos = _length(buf, pos, end)
            fields.dense = view[start:pos]
            fields.sparse = None
        elif number == 2 and wire_type == _LEN:
            start, pos = _length(buf, pos, end)
            if depth - 1 < 0:
                raise WireFormatError("nesting too deep")
            if fields.sparse is None:
                fields.sparse = SparseFields(empty, empty, empty)
                fields.dense = empty
            _read_sparse(buf, view, start, pos, fields.sparse, depth - 1)
        elif number == 3 and wire_type == _VARINT:
            value, pos = _varint(buf, pos, end)
            value &= 0xFFFFFFFF
            fields.dtype = value - (1 << 32) if value >= 1 << 31 else value
        elif number == 4 and wire_type == _VARINT:
            value, pos = _varint(buf, pos, end)
            fields.shape.append(_int64(value))
        elif number == 4 and wire_type == _LEN:
            start, pos = _length(buf, pos, end)
            while start < pos:
                value, start = _varint(buf, start, pos)
                fields.shape.append(_int64(value))
        else:
            pos = _skip(buf, pos, end, number, wire_type, depth)
    return fields


def peek_fields(payload: bytes, strings: int, integers: int) -> tuple[str | None, int | None]:
    """The top-level string field `strings` and int32/int64 field `integers` of a message that
    may not parse as a whole, read as far as the bytes are valid (last occurrence wins, as in a
    full parse). For naming a malformed request's `(model_id, seq_id)`; never raises."""
    text: str | None = None
    number_value: int | None = None
    buf, pos, end = payload, 0, len(payload)
    try:
        while pos < end:
            number, wire_type, pos = _tag(buf, pos, end)
            if number == strings and wire_type == _LEN:
                start, pos = _length(buf, pos, end)
                text = bytes(buf[start:pos]).decode("utf-8")
            elif number == integers and wire_type == _VARINT:
                value, pos = _varint(buf, pos, end)
                number_value = _int64(value)
            else:
                pos = _skip(buf, pos, end, number, wire_type, _DEPTH_LIMIT)
    except (WireFormatError, UnicodeDecodeError, IndexError):
        pass  # what was read before the damage stands
    return text, number_value
