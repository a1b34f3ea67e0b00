"""Body fingerprints: a digest of what a request *means*, for deduplicating retries.

Two POSTs of one logical op — an SDK retry with a new idempotency key — carry equal values,
though not necessarily equal bytes (map order, compression, JSON spacing). The digest walks the
decoded value instead: dataclasses field by field, mappings in key order, numpy arrays as dtype,
shape and raw bytes, so a 5 MB forward/backward chunk hashes at memory speed. Works the same for
protobuf, JSON and (later) gRPC requests, because it only sees decoded values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def fingerprint(value: object) -> str:
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


# How each type is fed, decided once per type (the first match in `_feeder_for`'s order).
# Dispatch by type rather than an isinstance chain per value keeps a forward/backward request's
# digest cheap on the event loop (it runs on every training submit); the bytes fed, and so the
# digests, are the same either way.
_Feeder = Callable[[Any, Any], None]
_FEEDERS: dict[type, _Feeder] = {}


def _feed(digest: Any, value: object) -> None:
    cls = type(value)
    feeder = _FEEDERS.get(cls)
    if feeder is None:
        feeder = _FEEDERS[cls] = _feeder_for(cls)
    feeder(digest, value)


def _feeder_for(cls: type) -> _Feeder:
    if cls is type(None):
        return lambda digest, _: digest.update(b"N")
    if issubclass(cls, bool):
        return lambda digest, value: digest.update(b"T" if value else b"F")
    if issubclass(cls, int):
        return lambda digest, value: digest.update(b"i" + str(value).encode() + b";")
    if issubclass(cls, float):
        return lambda digest, value: digest.update(b"f" + struct.pack("<d", value))
    if issubclass(cls, str):
        return lambda digest, value: _feed_bytes(digest, b"s", value.encode())
    if issubclass(cls, (bytes, bytearray, memoryview)):
        return lambda digest, value: _feed_bytes(digest, b"b", bytes(value))
    if issubclass(cls, np.ndarray):
        return _feed_array
    if issubclass(cls, Mapping):
        return _feed_mapping
    if issubclass(cls, (list, tuple)):
        return _feed_sequence
    if dataclasses.is_dataclass(cls):
        return _dataclass_feeder(cls)
    raise TypeError(f"cannot fingerprint a {cls.__name__}")


def _feed_array(digest: Any, value: np.ndarray[Any, Any]) -> None:
    digest.update(b"a" + value.dtype.str.encode() + repr(value.shape).encode())
    digest.update(np.ascontiguousarray(value).tobytes())


def _feed_mapping(digest: Any, value: Mapping[Any, Any]) -> None:
    digest.update(b"{%d;" % len(value))
    for key in sorted(value, key=str):
        _feed(digest, str(key))
        _feed(digest, value[key])


def _feed_sequence(digest: Any, value: list[Any] | tuple[Any, ...]) -> None:
    if value and all(type(item) is int for item in value):
        # Token lists: hash as one int64 array instead of item by item (ints beyond int64,
        # which no token list holds, are hashed item by item below).
        try:
            tokens = np.asarray(value, dtype=np.int64)
        except OverflowError:
            pass
        else:
            _feed_array(digest, tokens)
            return
    digest.update(b"[%d;" % len(value))
    for item in value:
        _feed(digest, item)


def _dataclass_feeder(cls: type) -> _Feeder:
    # What `_feed` would write for the class name and each field name, computed once.
    header = b"D" + cls.__name__.encode() + b";"
    names = [(item.name, _str_bytes(item.name)) for item in dataclasses.fields(cls)]

    def feed(digest: Any, value: object) -> None:
        digest.update(header)
        for name, encoded in names:
            digest.update(encoded)
            _feed(digest, getattr(value, name))

    return feed


def _str_bytes(text: str) -> bytes:
    data = text.encode()
    return b"s" + str(len(data)).encode() + b";" + data


def _feed_bytes(digest: Any, tag: bytes, data: bytes) -> None:
    digest.update(tag + str(len(data)).encode() + b";")
    digest.update(data)
