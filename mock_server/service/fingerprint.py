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
from collections.abc import Mapping
from typing import Any

import numpy as np


def fingerprint(value: object) -> str:
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: object) -> None:
    if value is None:
        digest.update(b"N")
    elif isinstance(value, bool):
        digest.update(b"T" if value else b"F")
    elif isinstance(value, int):
        digest.update(b"i" + str(value).encode() + b";")
    elif isinstance(value, float):
        digest.update(b"f" + struct.pack("<d", value))
    elif isinstance(value, str):
        _feed_bytes(digest, b"s", value.encode())
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _feed_bytes(digest, b"b", bytes(value))
    elif isinstance(value, np.ndarray):
        digest.update(b"a" + value.dtype.str.encode() + repr(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        digest.update(b"{%d;" % len(value))
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        if value and all(type(item) is int for item in value):
            # Token lists: hash as one int64 array instead of item by item (ints beyond int64,
            # which no token list holds, are hashed item by item below).
            try:
                tokens = np.asarray(value, dtype=np.int64)
            except OverflowError:
                pass
            else:
                _feed(digest, tokens)
                return
        digest.update(b"[%d;" % len(value))
        for item in value:
            _feed(digest, item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(b"D" + type(value).__name__.encode() + b";")
        for item in dataclasses.fields(value):
            _feed(digest, item.name)
            _feed(digest, getattr(value, item.name))
    else:
        raise TypeError(f"cannot fingerprint a {type(value).__name__}")


def _feed_bytes(digest: Any, tag: bytes, data: bytes) -> None:
    digest.update(tag + str(len(data)).encode() + b";")
    digest.update(data)
