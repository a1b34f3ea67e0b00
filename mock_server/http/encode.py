"""Typed service results -> HTTP response payloads, in the wire era the client asked for.

Forward/backward and sampling results are protobuf when the client's `Accept` names
`application/x-protobuf` (SDK >= 0.25) and JSON otherwise (SDK <= 0.24, Tinkex); everything
else is JSON. JSON bodies carry the `type` discriminators the SDK's strict pydantic models
accept (spec FUT-5, WIRE-5, WIRE-7). Failures are always JSON `{"error", "category"}`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mock_server.engine import ModelSpec
from mock_server.http.bodies import JSON, PROTOBUF
from mock_server.service.futures import Failure
from mock_server.service.results import (
    CreateCustomLossResult,
    CreateModelResult,
    LoadWeightsResult,
    ModelInfo,
    OptimStepResult,
    SamplerInfo,
    SaveWeightsExternalResult,
    SaveWeightsForSamplerResult,
    SaveWeightsResult,
    SubmittedFuture,
    WeightsInfo,
)
from tinker_ref.codec import (
    encode_forward_backward_output,
    encode_sample_response,
    forward_backward_output_to_json,
)
from tinker_ref.types import ForwardBackwardOutput, SampleResponse


class EncodingError(TypeError):
    """A result type the HTTP front end does not know how to encode (a server bug)."""


def dumps(value: Any) -> str:
    # NaN stays NaN (Python's json reads it back); compact separators keep bodies small.
    return json.dumps(value, separators=(",", ":"))


def wire_format(result: object, accept: str) -> str:
    """The media type a finished future's result goes out in."""
    protobuf_capable = isinstance(result, (ForwardBackwardOutput, SampleResponse))
    return PROTOBUF if protobuf_capable and PROTOBUF in accept.lower() else JSON


def encode_result(result: object, wire: str) -> bytes:
    if isinstance(result, ForwardBackwardOutput):
        if wire == PROTOBUF:
            return encode_forward_backward_output(result)
        return dumps(forward_backward_output_to_json(result)).encode()
    if isinstance(result, SampleResponse):
        if wire == PROTOBUF:
            return encode_sample_response(result)
        return dumps(sample_response_json(result)).encode()
    return dumps(result_json(result)).encode()


def result_json(result: object) -> dict[str, Any]:
    if isinstance(result, CreateModelResult):
        return {"type": "create_model", "model_id": result.model_id}
    if isinstance(result, OptimStepResult):
        return {"type": "optim_step", "metrics": result.metrics}
    if isinstance(result, SaveWeightsResult):
        return {"type": "save_weights", "path": result.path}
    if isinstance(result, SaveWeightsForSamplerResult):
        body: dict[str, Any] = {"type": "save_weights_for_sampler"}
        if result.path is not None:
            body["path"] = result.path
        if result.sampling_session_id is not None:
            body["sampling_session_id"] = result.sampling_session_id
        return body
    if isinstance(result, LoadWeightsResult):
        return {"type": "load_weights", "path": result.path, "model_id": result.model_id}
    if isinstance(result, CreateCustomLossResult):
        return {"type": "create_custom_loss", "loss_id": result.loss_id}
    if isinstance(result, SaveWeightsExternalResult):
        # SaveWeightsExternalResponseInternal: the SDK reads `path` (and size_bytes).
        return {
            "type": "save_weights_external",
            "path": result.path,
            "size_bytes": result.size_bytes,
        }
    raise EncodingError(f"no JSON form for {type(result).__name__}")


def failure_json(failure: Failure) -> dict[str, Any]:
    return {"error": failure.message, "category": failure.category}


def try_again_json(request_id: str) -> dict[str, Any]:
    return {"type": "try_again", "request_id": request_id, "queue_state": "active"}


def submitted_json(submitted: SubmittedFuture) -> dict[str, Any]:
    body: dict[str, Any] = {"request_id": submitted.request_id}
    if submitted.model_id is not None:
        body["model_id"] = submitted.model_id
    if submitted.sample_sequence_ids is not None:
        body["sample_sequence_ids"] = list(submitted.sample_sequence_ids)
    return body


def model_info_json(info: ModelInfo) -> dict[str, Any]:
    return {
        "type": "get_info",
        "model_id": info.model_id,
        "model_data": {
            "arch": info.arch,
            "model_name": info.base_model,
            "tokenizer_id": info.tokenizer_id,
        },
        "is_lora": True,
        "lora_rank": info.lora_rank,
        "model_name": info.base_model,
        "optimizer_config": {"type": info.optimizer_type},
    }


def weights_info_json(info: WeightsInfo) -> dict[str, Any]:
    return {
        "base_model": info.base_model,
        "is_lora": True,
        "lora_rank": info.lora_rank,
        "train_unembed": info.train_unembed,
        "train_mlp": info.train_mlp,
        "train_attn": info.train_attn,
    }


def sampler_json(info: SamplerInfo) -> dict[str, Any]:
    body: dict[str, Any] = {"sampler_id": info.sampler_id, "base_model": info.base_model}
    if info.model_path is not None:
        body["model_path"] = info.model_path
    return body


def capabilities_json(specs: list[ModelSpec]) -> dict[str, Any]:
    return {
        "supported_models": [
            {
                "model_name": spec.name,
                "max_context_length": spec.max_context_length,
                "trainable": True,
                "sampleable": True,
            }
            for spec in specs
        ]
    }


def _float_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def sample_response_json(response: SampleResponse) -> dict[str, Any]:
    """The JSON-era `SampleResponse` (SDK <= 0.24): lists, None for missing prompt logprobs."""
    body: dict[str, Any] = {
        "type": "sample",
        "sequences": [
            {
                "stop_reason": seq.stop_reason,
                "tokens": seq.tokens,
                **({"logprobs": seq.logprobs} if seq.logprobs is not None else {}),
            }
            for seq in response.sequences
        ],
    }
    if response.prompt_logprobs_np is not None:
        body["prompt_logprobs"] = [
            _float_or_none(float(v)) for v in response.prompt_logprobs_np.tolist()
        ]
    if response.topk_prompt_logprobs_np is not None:
        body["topk_prompt_logprobs"] = response.topk_prompt_logprobs_np.to_lists()
    return body
