"""SDK 0.38's request bodies for what the transports' fixed operations cannot express.

The `Transport` protocol (`transport/base.py`) carries the core training API on both HTTP and
gRPC. SDK 0.38 added options on top — `optimizer_config` at creation, `DimuonParams`, a
checkpoint's `user_metadata` and `overwrite`, `weights_access_token`, `kind="inflight"`,
`save_weights_external`, server-side custom losses, every sampling option — and the REST API.
These travel as JSON over HTTP only: `json_wire(transport)` gives the HTTP transport's JSON
methods (`request_json`, `submit_json_op`, `submit_sample`) or raises `ConfigurationError` naming
the feature on the gRPC transport, whose service does not carry it.

Each `*_body` function builds exactly the body the SDK posts (`model_dump(exclude_none=True)`:
None fields left out, defaults written), so the server records the same request from both
clients (spec WIRE-15; tests/integration/test_surface_vs_official_sdk.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from tinker_ref.codec import model_input_to_json, tensor_data_to_json
from tinker_ref.errors import ConfigurationError
from tinker_ref.retry import RetryPolicy
from tinker_ref.transport.base import DeferredResult, LossFnConfig
from tinker_ref.types import LoraConfig, ModelInput, SampleResponse, SamplingParams, TensorData
from tinker_ref.types.optimizer import (
    OptimizerConfig,
    OptimParams,
    optim_params_to_json,
    optimizer_config_to_json,
)

T = TypeVar("T")


class JsonWire(Protocol):
    async def request_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any: ...

    async def submit_json_op(
        self, path: str, body: Mapping[str, Any], request_type: str, decode: Callable[[Any], T]
    ) -> DeferredResult[T]: ...

    async def submit_sample(
        self, body: Mapping[str, Any], *, retry: RetryPolicy | None = None
    ) -> DeferredResult[SampleResponse]: ...

    async def identity_jwt(self) -> str | None: ...


def json_wire(transport: object, feature: str) -> JsonWire:
    """The transport's JSON requests; ConfigurationError naming `feature` on gRPC."""
    if all(
        hasattr(transport, name)
        for name in ("request_json", "submit_json_op", "submit_sample", "identity_jwt")
    ):
        wire: JsonWire = transport  # type: ignore[assignment]
        return wire
    raise ConfigurationError(
        f"{feature} needs the HTTP transport: the gRPC service (tinker_ref.training.v1) does "
        "not carry it; create the ServiceClient with transport='http'"
    )


def _put(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


# ----- model creation ---------------------------------------------------------------------------


def create_model_body(
    session_id: str,
    model_seq_id: int,
    base_model: str,
    lora: LoraConfig,
    user_metadata: Mapping[str, str] | None,
    optimizer: OptimizerConfig | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": session_id,
        "model_seq_id": model_seq_id,
        "base_model": base_model,
    }
    _put(body, "user_metadata", dict(user_metadata) if user_metadata is not None else None)
    body["lora_config"] = lora.to_json()
    body["optimizer_config"] = optimizer_config_to_json(optimizer)
    body["type"] = "create_model"
    return body


def create_from_state_body(
    session_id: str,
    model_seq_id: int,
    path: str,
    optimizer: bool,
    base_model: str | None,
    user_metadata: Mapping[str, str] | None,
    optimizer_config: OptimizerConfig | None,
    weights_access_token: str | None,
) -> dict[str, Any]:
    """`load_weights` addressed by session: the create-via-load of `..._from_state`."""
    body: dict[str, Any] = {"session_id": session_id, "model_seq_id": model_seq_id}
    _put(body, "base_model", base_model)
    _put(body, "user_metadata", dict(user_metadata) if user_metadata is not None else None)
    body |= {"path": path, "optimizer": optimizer}
    if optimizer_config is not None:
        body["optimizer_config"] = optimizer_config_to_json(optimizer_config)
    _put(body, "weights_access_token", weights_access_token)
    body["type"] = "load_weights"
    return body


# ----- sequenced ops ------------------------------------------------------------------------------


def optim_step_body(model_id: str, seq_id: int, params: OptimParams) -> dict[str, Any]:
    key, value = optim_params_to_json(params)
    body: dict[str, Any] = {"model_id": model_id, "seq_id": seq_id, "type": "optim_step"}
    body[key] = value  # after "type", where the SDK's serializer moves it
    return body


def save_weights_body(
    model_id: str,
    seq_id: int,
    name: str,
    ttl_seconds: int | None,
    overwrite: bool,
    user_metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_id": model_id, "path": name, "seq_id": seq_id}
    _put(body, "ttl_seconds", ttl_seconds)
    body["overwrite"] = overwrite
    _put(body, "user_metadata", dict(user_metadata) if user_metadata is not None else None)
    body["type"] = "save_weights"
    return body


def save_weights_for_sampler_body(
    model_id: str,
    seq_id: int,
    name: str | None,
    sampling_session_seq_id: int | None,
    kind: str | None,
    ttl_seconds: int | None,
    user_metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Named (`name`) or ephemeral (`sampling_session_seq_id` + `kind`) sampler weights."""
    body: dict[str, Any] = {"model_id": model_id}
    _put(body, "path", name)
    _put(body, "sampling_session_seq_id", sampling_session_seq_id)
    body["kind"] = kind if kind is not None else "snapshot"
    body["seq_id"] = seq_id
    _put(body, "ttl_seconds", ttl_seconds)
    _put(body, "user_metadata", dict(user_metadata) if user_metadata is not None else None)
    body["type"] = "save_weights_for_sampler"
    return body


def save_weights_external_body(
    model_id: str,
    seq_id: int,
    name: str,
    ttl_seconds: int | None,
    age_encryption_recipients: Sequence[str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_id": model_id, "path": name, "seq_id": seq_id}
    _put(body, "ttl_seconds", ttl_seconds)
    if age_encryption_recipients is not None:
        body["age_encryption_recipients"] = list(age_encryption_recipients)
    body["type"] = "save_weights_external"
    return body


def load_weights_body(
    model_id: str, seq_id: int, path: str, optimizer: bool, weights_access_token: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_id": model_id, "seq_id": seq_id, "path": path}
    body["optimizer"] = optimizer
    _put(body, "weights_access_token", weights_access_token)
    body["type"] = "load_weights"
    return body


# ----- sampling -----------------------------------------------------------------------------------


def sample_body(
    sampling_session_id: str,
    seq_id: int,
    prompt: ModelInput,
    num_samples: int,
    sampling_params: SamplingParams,
    include_prompt_logprobs: bool,
    topk_prompt_logprobs: int,
    topk_sample_logprobs: int,
    target_prompt_logprobs: TensorData | None,
    prompt_alt_tokens_k: int,
    prompt_logprobs_last_n: int | None,
    record_stability_info: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "num_samples": num_samples,
        "prompt": model_input_to_json(prompt),
        "sampling_params": sampling_params.to_json(),
        "sampling_session_id": sampling_session_id,
        "seq_id": seq_id,
        "prompt_logprobs": include_prompt_logprobs,
        "topk_prompt_logprobs": topk_prompt_logprobs,
        "topk_sample_logprobs": topk_sample_logprobs,
    }
    if target_prompt_logprobs is not None:
        body["target_prompt_logprobs"] = tensor_data_to_json(target_prompt_logprobs)
    body["prompt_alt_tokens_k"] = prompt_alt_tokens_k
    _put(body, "prompt_logprobs_last_n", prompt_logprobs_last_n)
    body["record_stability_info"] = record_stability_info
    body["type"] = "sample"
    return body


# ----- custom losses ------------------------------------------------------------------------------


def create_custom_loss_body(
    session_id: str,
    custom_loss_seq_id: int,
    name: str,
    inputs: Sequence[Mapping[str, Any]],
    graph: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "custom_loss_seq_id": custom_loss_seq_id,
        "name": name,
        "inputs": [dict(i) for i in inputs],
        "graph": dict(graph),
        "type": "create_custom_loss",
    }


def custom_loss_config(loss_id: str) -> LossFnConfig:
    """The `loss_fn_config` of a forward_backward that runs an uploaded loss (`"custom"`)."""
    return {"loss_id": loss_id}
