"""Runs INSIDE an official-SDK virtualenv: encodes and decodes with `tinker`'s own code.

Protocol (JSON lines, so one process serves a whole test session: importing tinker, which
imports torch, takes seconds): each stdin line is a batch `{"cases": [case, ...]}`, answered by
one stdout line `{"results": [result, ...]}` in the same order. A case that raises gives
`{"error": "Type: msg"}` instead of failing the batch. Bytes travel as base64; tensor values as
the hex of their little-endian bytes, so float bits (NaN payloads, -0.0) survive exactly.

Tensor description (both directions): `{"dtype", "shape" (list or null), "data_hex",
"crow" / "col" (lists or null)}`. Datum description: `{"chunks": [{"tokens": [...]} |
{"image_b64", "format", "expected_tokens"}], "inputs": {name: tensor}, "spans": null |
{"model_input": [span], "loss_fn_inputs": [span]}}` with span `{"kind": "prompt"|"sampled",
"sequence_id", "offset", "length"}`.

Ops:
* `encode_request`: ForwardBackwardRequest -> `request_conv.forward_backward_request_to_proto`,
  `forward_only` set as `resources/training.py` does -> `{"raw", "deterministic"}` (base64).
* `decode_output` / `decode_sample`: base64 bytes -> `response_conv` -> described values.
* `json_tensor` / `json_datum`: the pydantic models' `model_dump(mode="json", exclude_none=True)`.
* `convert_inputs`: raw values (lists, numpy, torch) through the SDK's `Datum` conversion.

Imports only tinker, numpy, the standard library and its sibling `raw_values.py` (torch
lazily, for torch inputs only).
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import traceback
from typing import Any

import numpy as np
from raw_values import raw_value_in
from tinker import types
from tinker.proto import request_conv, response_conv
from tinker.types._pydantic_types.datum import Datum as PydanticDatum
from tinker.types._pydantic_types.tensor_data import TensorData as PydanticTensorData

_NUMPY = {"float32": "<f4", "int64": "<i8"}


def tensor_in(desc: dict[str, Any]) -> types.TensorData:
    values = np.frombuffer(bytes.fromhex(desc["data_hex"]), dtype=_NUMPY[desc["dtype"]]).copy()
    return types.TensorData(
        data=values,
        dtype=desc["dtype"],
        shape=desc["shape"],
        sparse_crow_indices=desc["crow"],
        sparse_col_indices=desc["col"],
    )


def tensor_out(td: types.TensorData) -> dict[str, Any]:
    values = np.ascontiguousarray(td._numpy, dtype=_NUMPY[td.dtype]).reshape(-1)
    return {
        "dtype": td.dtype,
        "shape": None if td.shape is None else [int(d) for d in td.shape],
        "data_hex": values.tobytes().hex(),
        "crow": td.sparse_crow_indices,
        "col": td.sparse_col_indices,
    }


def span_in(desc: dict[str, Any]) -> Any:
    prompt = desc["kind"] == "prompt"
    span_type = types.PromptProvenanceSpan if prompt else types.SampledProvenanceSpan
    return span_type(sequence_id=desc["sequence_id"], offset=desc["offset"], length=desc["length"])


def chunk_in(desc: dict[str, Any]) -> Any:
    if "tokens" in desc:
        return types.EncodedTextChunk(tokens=desc["tokens"])
    return types.ImageChunk(
        data=base64.b64decode(desc["image_b64"]),
        format=desc["format"],
        expected_tokens=desc["expected_tokens"],
    )


def datum_in(desc: dict[str, Any]) -> types.Datum:
    spans = desc.get("spans")
    return types.Datum(
        model_input=types.ModelInput(chunks=[chunk_in(c) for c in desc["chunks"]]),
        loss_fn_inputs={name: tensor_in(t) for name, t in desc["inputs"].items()},
        model_input_spans=None if spans is None else [span_in(s) for s in spans["model_input"]],
        loss_fn_input_spans=None
        if spans is None
        else [span_in(s) for s in spans["loss_fn_inputs"]],
    )


def config_in(desc: dict[str, Any] | None) -> dict[str, float | int | str] | None:
    if desc is None:
        return None
    config: dict[str, float | int | str] = {}
    for key, value in desc.items():
        if "float_hex" in value:
            config[key] = struct.unpack("<d", bytes.fromhex(value["float_hex"]))[0]
        elif "int" in value:
            config[key] = value["int"]
        else:
            config[key] = value["str"]
    return config


def encode_request(case: dict[str, Any]) -> dict[str, Any]:
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=[datum_in(d) for d in case["data"]],
            loss_fn=case["loss_fn"],
            loss_fn_config=config_in(case["loss_fn_config"]),
        ),
        model_id=case["model_id"],
        seq_id=case["seq_id"],
    )
    message = request_conv.forward_backward_request_to_proto(request)
    message.forward_only = case["forward_only"]
    return {
        "raw": base64.b64encode(message.SerializeToString()).decode(),
        "deterministic": base64.b64encode(message.SerializeToString(deterministic=True)).decode(),
    }


def double_hex(value: float) -> str:
    return struct.pack("<d", value).hex()


def decode_output(case: dict[str, Any]) -> dict[str, Any]:
    output = response_conv.deserialize_forward_backward_output(base64.b64decode(case["payload"]))
    return {
        "loss_fn_output_type": output.loss_fn_output_type,
        "metrics": {key: double_hex(value) for key, value in output.metrics.items()},
        "outputs": [
            {name: tensor_out(td) for name, td in datum.items()} for datum in output.loss_fn_outputs
        ],
    }


def topk_out(topk: Any) -> dict[str, Any] | None:
    if topk is None:
        return None
    return {
        "shape": list(topk.token_ids.shape),
        "token_ids_hex": np.ascontiguousarray(topk.token_ids, dtype="<i4").tobytes().hex(),
        "logprobs_hex": np.ascontiguousarray(topk.logprobs, dtype="<f4").tobytes().hex(),
    }


def decode_sample(case: dict[str, Any]) -> dict[str, Any]:
    response = response_conv.deserialize_sample_response(base64.b64decode(case["payload"]))
    prompt = response.prompt_logprobs_np
    alt = response.prompt_alt_tokens
    return {
        "sequences": [
            {
                "stop_reason": seq.stop_reason,
                "tokens_hex": np.ascontiguousarray(seq.tokens_np, dtype="<i4").tobytes().hex(),
                "logprobs_hex": None
                if seq.logprobs_np is None
                else np.ascontiguousarray(seq.logprobs_np, dtype="<f4").tobytes().hex(),
                "topk": topk_out(seq.topk_logprobs_np),
                "topk_lists": seq.topk_logprobs,
            }
            for seq in response.sequences
        ],
        "prompt_logprobs_hex": None
        if prompt is None
        else np.ascontiguousarray(prompt, dtype="<f4").tobytes().hex(),
        "prompt_logprobs_list": response.prompt_logprobs,
        "topk_prompt": topk_out(response.topk_prompt_logprobs_np),
        "target_prompt_logprobs": None
        if response.target_prompt_logprobs is None
        else tensor_out(response.target_prompt_logprobs),
        "prompt_cache_hit_tokens": response.prompt_cache_hit_tokens,
        "prompt_alt_tokens": None
        if alt is None
        else {"tokens": tensor_out(alt.tokens), "logprobs": tensor_out(alt.logprobs)},
    }


def pydantic_tensor(td: types.TensorData) -> PydanticTensorData:
    # The conversion the SDK itself uses for JSON bodies (sampling_client._tensor_data_to_model).
    return PydanticTensorData(
        data=td.data,
        dtype=td.dtype,
        shape=td.shape,
        sparse_crow_indices=td.sparse_crow_indices,
        sparse_col_indices=td.sparse_col_indices,
    )


def json_tensor(case: dict[str, Any]) -> Any:
    return pydantic_tensor(tensor_in(case["tensor"])).model_dump(mode="json", exclude_none=True)


def json_datum(case: dict[str, Any]) -> Any:
    datum = datum_in(case["datum"])
    model = PydanticDatum(
        loss_fn_inputs={name: pydantic_tensor(td) for name, td in datum.loss_fn_inputs.items()},
        model_input=datum.model_input,
    )
    return model.model_dump(mode="json", exclude_none=True)


def convert_inputs(case: dict[str, Any]) -> dict[str, Any]:
    datum = types.Datum(
        model_input=types.ModelInput.from_ints([1]),
        loss_fn_inputs={key: raw_value_in(value) for key, value in case["inputs"].items()},
    )
    return {name: tensor_out(td) for name, td in datum.loss_fn_inputs.items()}


OPS = {
    "encode_request": encode_request,
    "decode_output": decode_output,
    "decode_sample": decode_sample,
    "json_tensor": json_tensor,
    "json_datum": json_datum,
    "convert_inputs": convert_inputs,
}


def run_batch(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for case in cases:
        try:
            results.append({"ok": OPS[case["op"]](case)})
        except Exception as exc:  # reported per case; the test decides whether it is expected
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            results.append({"error": detail})
    return results


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps({"results": run_batch(json.loads(line)["cases"])}) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
