"""The message format between the server and its engine processes (`processes.py`): no pickle.

A message is a tree of None, bools, numbers, strings, lists, tuples, dicts, torch tensors, the
engine's own dataclasses and its errors. It travels as frames on a `multiprocessing` pipe: one
JSON header (the tree, with each tensor replaced by its index) and then each tensor's raw bytes.
Decoding builds only the types named in `_DATACLASSES` and `_ERRORS`: a message can never make
the reader import or call anything else (pickle could, which is why the project uses none; see
docs/reliability.md, "No pickle"). Tensors arrive as fresh, contiguous, writable copies.

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
    tensors: list[torch.Tensor] = []
    header = json.dumps(_encode(message, tensors), separators=(",", ":"))
    conn.send_bytes(json.dumps([header, len(tensors)]).encode())
    for tensor in tensors:
        conn.send_bytes(_raw(tensor))


def receive(conn: Connection) -> Any:
    """Read one message from `conn` (blocking; EOFError when the other end closed)."""
    header, count = json.loads(conn.recv_bytes())
    buffers = [conn.recv_bytes() for _ in range(count)]
    return _decode(json.loads(header), buffers)


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


def _encode(value: object, tensors: list[torch.Tensor]) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return {"t": len(tensors) - 1, "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if isinstance(value, tuple):  # torch.Size included
        return {"tuple": [_encode(item, tensors) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and _DATACLASSES.get(name) is type(value):
        fields = {
            f.name: _encode(getattr(value, f.name), tensors) for f in dataclasses.fields(value)
        }
        return {"dataclass": name, "fields": fields}
    raise TypeError(f"an engine message cannot carry a {name}")


def _decode(value: Any, buffers: list[bytes]) -> Any:
    if not isinstance(value, list | dict):
        return value
    if isinstance(value, list):
        return [_decode(item, buffers) for item in value]
    if "t" in value:
        dtype = _DTYPES[value["dtype"]]
        raw = bytearray(buffers[value["t"]])  # writable, owned by the tensor
        if dtype in (torch.bfloat16, torch.float16):
            flat = torch.frombuffer(raw, dtype=torch.int16).view(dtype) if raw else None
        elif dtype == torch.bool:
            flat = torch.frombuffer(raw, dtype=torch.uint8).view(torch.bool) if raw else None
        else:
            flat = torch.frombuffer(raw, dtype=dtype) if raw else None
        if flat is None:  # frombuffer refuses an empty buffer
            return torch.empty(value["shape"], dtype=dtype)
        return flat.reshape(value["shape"])
    if "tuple" in value:
        return tuple(_decode(item, buffers) for item in value["tuple"])
    if "dict" in value:
        return {_decode(k, buffers): _decode(v, buffers) for k, v in value["dict"]}
    cls = _DATACLASSES[value["dataclass"]]
    return cls(**{key: _decode(item, buffers) for key, item in value["fields"].items()})
