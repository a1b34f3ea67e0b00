"""`Record`: the base of tinker_ref's plain JSON records, with one decoder and one encoder.

The service's JSON answers (training runs, checkpoints, sessions, billing, ...) and the
request bodies the SDK models are frozen dataclasses here. Rather than one hand-written parser
per class, `Record.from_json` reads any of them from their dataclass annotations: nested
records, `list[...]`, `dict[str, ...]`, optional fields, `Literal` tags (a union of records is
resolved by its members' `type` / `state` / `event` tag), `datetime` and `date` (ISO 8601).
Unknown keys are ignored, as the SDK's response models ignore them; a missing required key or
a value of the wrong JSON type is a `ValueError` naming the dotted path. `to_json` writes the
body form: `None` fields left out (the SDK dumps with `exclude_none`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Self, Union, get_args, get_origin

__all__ = ["Record", "decode", "encode"]

_TAGS = ("type", "state", "event")  # the discriminator fields of the SDK's tagged unions


class Record:
    """Mixin of the JSON record dataclasses (`from_json`, `to_json`)."""

    @classmethod
    def from_json(cls, body: Any) -> Self:
        value: Self = decode(cls, body, cls.__name__)
        return value

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = encode(self)
        return body


def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules[cls.__module__]
    return typing.get_type_hints(cls, vars(module), include_extras=False)


def _tag_value(cls: type, tag: str) -> object:
    field = next((f for f in dataclasses.fields(cls) if f.name == tag), None)
    if field is None or field.default is dataclasses.MISSING:
        return None
    return field.default


def _fail(path: str, expected: str, value: object) -> ValueError:
    return ValueError(f"{path}: expected {expected}, got {value!r:.200}")


def decode(annotation: Any, value: Any, path: str) -> Any:
    """`value` (parsed JSON) as `annotation` describes it; ValueError naming `path`."""
    if annotation is Any or annotation is object:
        return value
    origin = get_origin(annotation)
    if origin is Literal:
        if value not in get_args(annotation):
            raise _fail(path, f"one of {get_args(annotation)}", value)
        return value
    if origin in (Union, types.UnionType):
        return _decode_union(get_args(annotation), value, path)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, list):
            raise _fail(path, "an array", value)
        args = get_args(annotation) or (Any,)
        items = [decode(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
        return items if origin is list or annotation is list else tuple(items)
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, "an object", value)
        args = get_args(annotation) or (str, Any)
        return {str(k): decode(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if annotation is type(None):
        if value is not None:
            raise _fail(path, "null", value)
        return None
    if isinstance(annotation, type):
        return _decode_type(annotation, value, path)
    return value  # an annotation this decoder does not model: keep the JSON value


def _decode_union(members: tuple[Any, ...], value: Any, path: str) -> Any:
    if value is None and type(None) in members:
        return None
    candidates = [m for m in members if m is not type(None)]
    if isinstance(value, Mapping):  # a tagged union of records: pick by the tag
        for tag in _TAGS:
            if tag in value:
                tagged = [
                    m
                    for m in candidates
                    if isinstance(m, type)
                    and dataclasses.is_dataclass(m)
                    and _tag_value(m, tag) == value[tag]
                ]
                if tagged:
                    return decode(tagged[0], value, path)
    errors = []
    for member in candidates:
        try:
            return decode(member, value, path)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError(f"{path}: matches no member of the union ({'; '.join(errors)})"[:600])


def _decode_type(cls: type, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(cls):
        if isinstance(value, cls):
            return value
        from_json = getattr(cls, "from_json", None)
        if from_json is not None and not issubclass(cls, Record):
            return from_json(value)  # a hand-written type (TensorData, ModelInput, ...)
        if not isinstance(value, Mapping):
            raise _fail(path, f"a {cls.__name__} object", value)
        hints = _hints(cls)
        kwargs = {}
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            if field.name in value and value[field.name] is not None:
                kwargs[field.name] = decode(
                    hints[field.name], value[field.name], f"{path}.{field.name}"
                )
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                if field.name in value:  # an explicit null for an optional-less field
                    kwargs[field.name] = decode(hints[field.name], None, f"{path}.{field.name}")
                else:
                    raise ValueError(f"{path}.{field.name}: required field is missing")
        return cls(**kwargs)
    if issubclass(cls, enum.Enum):
        try:
            return cls(value)
        except ValueError:
            raise _fail(path, f"one of {[m.value for m in cls]}", value) from None
    if cls is dt.datetime:
        if not isinstance(value, str):
            raise _fail(path, "an ISO 8601 date-time", value)
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if cls is dt.date:
        if not isinstance(value, str):
            raise _fail(path, "an ISO 8601 date", value)
        return dt.date.fromisoformat(value)
    if cls is bool:
        if not isinstance(value, bool):
            raise _fail(path, "true or false", value)
        return value
    if cls is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "an integer", value)
        return value
    if cls is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, "a number", value)
        return float(value)
    if cls is str:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
        return value
    from_json = getattr(cls, "from_json", None)
    if from_json is not None:
        return from_json(value)
    return value


def encode(value: Any) -> Any:
    """The JSON form of a record (None fields left out), recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not isinstance(value, Record) and hasattr(value, "to_json"):
            return value.to_json()
        return {
            f.name: encode(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if hasattr(value, "to_json"):
        return value.to_json()
    return value
