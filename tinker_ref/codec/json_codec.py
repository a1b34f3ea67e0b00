"""JSON forms of TensorData, model-input chunks, Datum and the JSON-era ForwardBackwardOutput.

These are the shapes the official SDK's pydantic models dump with
`model_dump(mode="json", exclude_none=True)` (spec WIRE-6, WIRE-10): used by the JSON-era wire
(SDK <= 0.24 request bodies, results accepted up to 0.23, Tinkex) and by `asample`'s
`target_prompt_logprobs`. Values are Python JSON-ready objects (dicts, lists, numbers, str), not
text; float32 values become the Python floats that represent them exactly, so a JSON round trip
is bit-exact. Non-finite floats stay floats (`json.dumps` writes `NaN`/`Infinity`, which Python
clients read back); `null` in a float32 list is read as NaN.

Decoders validate like the SDK's models (unknown keys refused on request shapes) and raise
`CodecError(field, message)` for any problem.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from tinker_ref.codec.errors import CodecError
from tinker_ref.types import (
    Datum,
    EncodedTextChunk,
    ForwardBackwardOutput,
    ImageChunk,
    ModelInput,
    ModelInputChunk,
    TensorData,
    TensorDtype,
)
from tinker_ref.types.datum import convert_loss_fn_input

__all__ = [
    "chunk_from_json",
    "chunk_to_json",
    "datum_from_json",
    "datum_to_json",
    "forward_backward_output_from_json",
    "forward_backward_output_to_json",
    "model_input_from_json",
    "model_input_to_json",
    "tensor_data_from_json",
    "tensor_data_to_json",
]

_INT64 = np.iinfo(np.int64)
_TENSOR_KEYS = {"data", "dtype", "shape", "sparse_crow_indices", "sparse_col_indices"}


# ----- TensorData --------------------------------------------------------------------------------


def tensor_data_to_json(td: TensorData) -> dict[str, Any]:
    """`{"data", "dtype", "shape"?, "sparse_crow_indices"?, "sparse_col_indices"?}`."""
    body: dict[str, Any] = {"data": td.data, "dtype": td.dtype}
    if td.shape is not None:
        body["shape"] = list(td.shape)
    if td.is_sparse:
        body["sparse_crow_indices"] = td.sparse_crow_indices
        body["sparse_col_indices"] = td.sparse_col_indices
    return body


def tensor_data_from_json(value: object, field: str = "tensor") -> TensorData:
    body = _object(value, field, allowed=_TENSOR_KEYS, required=("data", "dtype"))
    dtype = body["dtype"]
    if dtype not in ("float32", "int64"):
        raise CodecError(f"{field}.dtype", f"expected 'float32' or 'int64', got {dtype!r}")
    data = _numbers(body["data"], dtype, f"{field}.data")
    shape = _optional_ints(body.get("shape"), f"{field}.shape")
    crow = _optional_ints(body.get("sparse_crow_indices"), f"{field}.sparse_crow_indices")
    col = _optional_ints(body.get("sparse_col_indices"), f"{field}.sparse_col_indices")
    try:
        return TensorData(data, dtype, shape, crow, col)
    except (ValueError, TypeError) as exc:
        raise CodecError(field, str(exc)) from exc


def _numbers(value: object, dtype: TensorDtype, field: str) -> npt.NDArray[Any]:
    """A flat JSON list of numbers as an array of `dtype`, without a Python loop when clean."""
    if not isinstance(value, list):
        raise CodecError(field, f"expected a list of numbers, got {type(value).__name__}")
    if not value:
        return np.empty(0, dtype=np.float32 if dtype == "float32" else np.int64)
    try:
        array = np.asarray(value)
        if array.dtype.kind == "O" and dtype == "float32":
            array = np.asarray([math.nan if item is None else item for item in value])
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(field, "expected a flat list of numbers") from exc
    if array.ndim != 1:
        raise CodecError(field, "expected a flat list of numbers, got nested lists")
    kind = array.dtype.kind
    if kind not in "iuf":
        raise CodecError(field, f"expected numbers, got {_describe(value, array)}")
    if dtype == "float32":
        with np.errstate(over="ignore"):  # 1e300 -> inf, as the SDK's float32 conversion does
            return array.astype(np.float32)
    if kind == "f":
        integral = np.isfinite(array) & (array == np.trunc(array))
        if not integral.all():
            raise CodecError(field, f"int64 data must be integers, got {array[~integral][0]!r}")
        out_of_range = bool(np.any((array >= 2.0**63) | (array < -(2.0**63))))
    else:
        out_of_range = kind == "u" and int(array.max()) > _INT64.max
    if out_of_range:
        raise CodecError(field, "int64 data must lie in the int64 range")
    return array.astype(np.int64)


def _describe(value: list[Any], array: npt.NDArray[Any]) -> str:
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return f"{type(item).__name__} {item!r}"
    return f"{array.dtype} values"


def _optional_ints(value: object, field: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise CodecError(field, f"expected a list of integers, got {type(value).__name__}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise CodecError(field, f"expected a list of integers, got {item!r}")
    return value


def _object(
    value: object, field: str, *, allowed: set[str] | None, required: tuple[str, ...]
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CodecError(field, f"expected a JSON object, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(str(key) for key in value if key not in allowed)
        if unknown:
            raise CodecError(field, f"unknown keys {unknown}; allowed are {sorted(allowed)}")
    for key in required:
        if key not in value:
            raise CodecError(f"{field}.{key}", "is required")
    return value


# ----- model input -------------------------------------------------------------------------------


def chunk_to_json(chunk: ModelInputChunk) -> dict[str, Any]:
    if isinstance(chunk, EncodedTextChunk):
        return {"tokens": list(chunk.tokens), "type": "encoded_text"}
    body: dict[str, Any] = {
        "data": base64.b64encode(chunk.data).decode("ascii"),
        "format": chunk.format,
    }
    if chunk.expected_tokens is not None:
        body["expected_tokens"] = chunk.expected_tokens
    body["type"] = "image"
    return body


def chunk_from_json(value: object, field: str = "chunk") -> ModelInputChunk:
    """A chunk by its `type` (inferred from the keys when absent, as the SDK's union does)."""
    body = _object(value, field, allowed=None, required=())
    kind = body.get("type", "encoded_text" if "tokens" in body else "image")
    if kind == "encoded_text":
        body = _object(body, field, allowed={"tokens", "type"}, required=("tokens",))
        tokens = body["tokens"]
        if not isinstance(tokens, list):
            raise CodecError(f"{field}.tokens", f"expected a list, got {type(tokens).__name__}")
        for item in tokens:
            if isinstance(item, bool) or not isinstance(item, int):
                raise CodecError(f"{field}.tokens", f"expected token ids (ints), got {item!r}")
        try:
            return EncodedTextChunk(tokens)
        except ValueError as exc:
            raise CodecError(f"{field}.tokens", str(exc)) from exc
    if kind == "image":
        keys = {"data", "format", "expected_tokens", "type"}
        body = _object(body, field, allowed=keys, required=("data", "format"))
        if not isinstance(body["data"], str):
            raise CodecError(f"{field}.data", "expected a base64 string")
        try:
            data = base64.b64decode(body["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CodecError(f"{field}.data", f"is not valid base64 ({exc})") from exc
        try:
            return ImageChunk(data, body["format"], body.get("expected_tokens"))
        except (ValueError, TypeError) as exc:
            raise CodecError(field, str(exc)) from exc
    if kind in ("image_asset_pointer", "dmel"):
        raise CodecError(f"{field}.type", f"{kind!r} chunks are not supported")
    raise CodecError(f"{field}.type", f"expected 'encoded_text' or 'image', got {kind!r}")


def model_input_to_json(model_input: ModelInput) -> dict[str, Any]:
    return {"chunks": [chunk_to_json(chunk) for chunk in model_input.chunks]}


def model_input_from_json(value: object, field: str = "model_input") -> ModelInput:
    body = _object(value, field, allowed={"chunks"}, required=("chunks",))
    chunks = body["chunks"]
    if not isinstance(chunks, list):
        raise CodecError(f"{field}.chunks", f"expected a list, got {type(chunks).__name__}")
    return ModelInput(
        [chunk_from_json(chunk, f"{field}.chunks[{index}]") for index, chunk in enumerate(chunks)]
    )


# ----- datum -------------------------------------------------------------------------------------


def datum_to_json(datum: Datum) -> dict[str, Any]:
    """`{"loss_fn_inputs": {...}, "model_input": {...}}` (the pydantic field order)."""
    if datum.model_input_spans is not None:
        raise ValueError("provenance spans have no JSON form; send this datum as protobuf")
    return {
        "loss_fn_inputs": {
            name: tensor_data_to_json(td) for name, td in datum.loss_fn_inputs.items()
        },
        "model_input": model_input_to_json(datum.model_input),
    }


def datum_from_json(value: object, field: str = "datum") -> Datum:
    """A Datum; like the SDK's model, a plain list under a known key gets that key's dtype."""
    body = _object(
        value, field, allowed={"loss_fn_inputs", "model_input"}, required=("model_input",)
    )
    raw_inputs = _object(
        body.get("loss_fn_inputs", {}), f"{field}.loss_fn_inputs", allowed=None, required=()
    )
    inputs: dict[str, TensorData] = {}
    for name, raw in raw_inputs.items():
        input_field = f"{field}.loss_fn_inputs[{name!r}]"
        if isinstance(raw, list):
            try:
                inputs[name] = convert_loss_fn_input(name, raw)
            except (ValueError, TypeError) as exc:
                raise CodecError(input_field, str(exc)) from exc
        else:
            inputs[name] = tensor_data_from_json(raw, input_field)
    return Datum(model_input_from_json(body["model_input"], f"{field}.model_input"), inputs)


# ----- forward/backward output (JSON era) --------------------------------------------------------


def forward_backward_output_to_json(output: ForwardBackwardOutput) -> dict[str, Any]:
    """The result body SDKs <= 0.23 accepted: per-datum `{name: TensorData}` dicts + metrics."""
    return {
        "loss_fn_output_type": output.loss_fn_output_type,
        "loss_fn_outputs": [
            {name: tensor_data_to_json(td) for name, td in datum.items()}
            for datum in output.loss_fn_outputs
        ],
        "metrics": dict(output.metrics),
    }


def forward_backward_output_from_json(
    value: object, field: str = "result"
) -> ForwardBackwardOutput:
    # A response model: unknown keys are ignored, as the SDK's BaseModel does.
    body = _object(
        value, field, allowed=None, required=("loss_fn_output_type", "loss_fn_outputs", "metrics")
    )
    output_type = body["loss_fn_output_type"]
    if not isinstance(output_type, str):
        raise CodecError(f"{field}.loss_fn_output_type", f"expected a str, got {output_type!r}")
    raw_outputs = body["loss_fn_outputs"]
    if not isinstance(raw_outputs, list):
        raise CodecError(f"{field}.loss_fn_outputs", "expected a list of objects")
    outputs = []
    for index, raw in enumerate(raw_outputs):
        datum_field = f"{field}.loss_fn_outputs[{index}]"
        datum = _object(raw, datum_field, allowed=None, required=())
        outputs.append(
            {
                str(name): tensor_data_from_json(td, f"{datum_field}[{name!r}]")
                for name, td in datum.items()
            }
        )
    raw_metrics = _object(body["metrics"], f"{field}.metrics", allowed=None, required=())
    metrics: dict[str, float] = {}
    for key, metric in raw_metrics.items():
        if isinstance(metric, bool) or not isinstance(metric, (int, float)):
            raise CodecError(f"{field}.metrics[{key!r}]", f"expected a number, got {metric!r}")
        metrics[str(key)] = float(metric)
    return ForwardBackwardOutput(output_type, outputs, metrics)
