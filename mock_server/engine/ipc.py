"""The message format between the server and its engine processes (`processes.py`): no pickle.

A message is a tree of None, bools, numbers, strings, lists, tuples, dicts, torch tensors, the
engine's own dataclasses and its errors. It travels as one frame on a socket
(`multiprocessing.connection` framing): a 4-byte header length, the JSON header (the tree, each
tensor replaced by its byte size, dtype and shape), then every tensor's raw bytes back to back,
in the order the header names them. Decoding builds only the types named in `_DATACLASSES` and
`_ERRORS`: a message can never make the reader import or call anything else (pickle could,
which is why the project uses none; see docs/reliability.md, "No pickle"). Tensors arrive
contiguous and writable: views of the received frame, which nothing else holds.

Both ends are this project's code; the format is private and may change with it.
"""

from __future__ import annotations

import dataclasses
import json
from multiprocessing.connection import Connection
from typing import Any

import torch

from mock_server.engine.checkpoint import Checkpoint
from mock_server.engine.custom_loss.interpreter import (
    CustomLossError,
    CustomLossLimits,
    CustomLossSource,
)
from mock_server.engine.errors import (
    CheckpointError,
    EngineError,
    InvalidInputError,
    UnknownBaseModelError,
)
from mock_server.engine.model import LoraConfig
from mock_server.engine.sampling import SampledSequence, SampleResult, SampleSpec
from mock_server.engine.training import (
    AdamConfig,
    DatumInput,
    ForwardBackwardResult,
    OptimizerState,
)

_DATACLASSES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        AdamConfig,
        Checkpoint,
        CustomLossLimits,
        CustomLossSource,
        DatumInput,
        ForwardBackwardResult,
        LoraConfig,
        OptimizerState,
        SampledSequence,
        SampleResult,
        SampleSpec,
    )
}
# Errors cross as (class, args, attributes); any other exception arrives as a RemoteError.
_ERRORS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        CheckpointError,
        CustomLossError,
        EngineError,
        InvalidInputError,
        UnknownBaseModelError,
        KeyError,
        ValueError,
    )
}
_DTYPES = {
    str(dtype): dtype
    for dtype in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


class RemoteError(RuntimeError):
    """An engine process failed with an exception the format does not carry by type."""


def send(conn: Connection, message: object) -> None:
    """Write `message` to `conn` (blocking)."""
    raws: list[bytes] = []
    header = json.dumps(_encode(message, raws), separators=(",", ":")).encode()
    conn.send_bytes(b"".join([len(header).to_bytes(4, "little"), header, *raws]))


def receive(conn: Connection) -> Any:
    """Read one message from `conn` (blocking; EOFError when the other end closed)."""
    frame = bytearray(conn.recv_bytes())  # writable: the tensors are views of it
    length = int.from_bytes(frame[:4], "little")
    return _Reader(frame, 4 + length).value(json.loads(frame[4 : 4 + length]))


def error_message(error: BaseException) -> dict[str, Any]:
    """`error` as a message (see `raise_error`)."""
    name = type(error).__name__
    if name not in _ERRORS or type(error) is not _ERRORS[name]:
        return {"error": "RemoteError", "args": [f"{name}: {error}"], "attrs": {}}
    attrs = {key: value for key, value in vars(error).items() if not key.startswith("_")}
    return {"error": name, "args": list(error.args), "attrs": attrs}


def raise_error(message: dict[str, Any]) -> None:
    """Raise the exception `error_message` described, of the same class and attributes."""
    cls = _ERRORS.get(message["error"], RemoteError)
    error = cls.__new__(cls)  # not __init__: the attributes are restored as they were
    error.args = tuple(message["args"])
    vars(error).update(message["attrs"])
    raise error


def _raw(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype in (torch.bfloat16, torch.float16):
        flat = flat.view(torch.int16)  # numpy has no bfloat16; the bytes are what matter
    elif flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat.numpy().tobytes()


def _encode(value: object, raws: list[bytes]) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        raws.append(_raw(value))
        return {"t": len(raws[-1]), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, list):
        return [_encode(item, raws) for item in value]
    if isinstance(value, tuple):  # torch.Size included
        return {"tuple": [_encode(item, raws) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, raws), _encode(v, raws)] for k, v in value.items()]}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and _DATACLASSES.get(name) is type(value):
        fields = {f.name: _encode(getattr(value, f.name), raws) for f in dataclasses.fields(value)}
        return {"dataclass": name, "fields": fields}
    raise TypeError(f"an engine message cannot carry a {name}")


class _Reader:
    """Walks a decoded header; tensors are taken from the frame in the order they were sent."""

    def __init__(self, frame: bytearray, start: int) -> None:
        self.frame = frame
        self.position = start

    def tensor(self, size: int, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
        start, self.position = self.position, self.position + size
        if size == 0:  # frombuffer refuses an empty buffer
            return torch.empty(shape, dtype=dtype)
        stored = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.bool: torch.uint8}
        raw = stored.get(dtype, dtype)
        flat = torch.frombuffer(self.frame, dtype=raw, count=size // _SIZES[raw], offset=start)
        return (flat.view(dtype) if raw != dtype else flat).reshape(shape)

    def value(self, value: Any) -> Any:
        if not isinstance(value, list | dict):
            return value
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if "t" in value:
            return self.tensor(value["t"], _DTYPES[value["dtype"]], value["shape"])
        if "tuple" in value:
            return tuple(self.value(item) for item in value["tuple"])
        if "dict" in value:
            return {self.value(k): self.value(v) for k, v in value["dict"]}
        cls = _DATACLASSES[value["dataclass"]]
        return cls(**{key: self.value(item) for key, item in value["fields"].items()})


_SIZES = {dtype: torch.empty((), dtype=dtype).element_size() for dtype in _DTYPES.values()}
