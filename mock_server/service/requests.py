"""Typed requests of the service: one frozen dataclass per operation, transport-neutral.

Front ends decode their wire form (JSON, protobuf, gRPC messages) into these and never pass raw
bodies or codec types on; values inside are `tinker_ref.types` (datums, tensors), which the client
shares. Field names follow the wire so error paths (spec WIRE-13) read the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tinker_ref.types import Datum, TensorData


@dataclass(frozen=True)
class CreateSession:
    tags: tuple[str, ...] = ()
    user_metadata: dict[str, Any] = field(default_factory=dict)
    sdk_version: str | None = None
    project_id: str | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class FinishSession:
    session_id: str
    reason: str | None = None  # "success", "errored" or "interrupted" (SDK 0.38's close)
    detail: str | None = None  # the client's note on the outcome


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 32
    seed: int | None = None  # None: derived from the server seed and the model id
    train_mlp: bool = True
    train_attn: bool = True
    train_unembed: bool = True


@dataclass(frozen=True)
class CreateModel:
    session_id: str
    model_seq_id: int
    base_model: str
    lora: LoraSpec = LoraSpec()
    optimizer_type: str = "adamw"
    user_metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class ForwardBackward:
    """`forward_backward` (or, with `forward_only`, `forward`): datums through a loss."""

    model_id: str
    seq_id: int
    data: tuple[Datum, ...]
    loss_fn: str  # a built-in loss, or "custom" (an uploaded loss named by loss_fn_config)
    loss_fn_config: dict[str, float | str]
    forward_only: bool
    # Drop loss inputs the loss does not read instead of refusing them: the JSON-era `/forward`
    # of SDK 0.15 (its custom-loss forward) sends the caller's datums unchanged.
    ignore_unused_inputs: bool = False


@dataclass(frozen=True)
class AdamStep:
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass(frozen=True)
class OptimStep:
    model_id: str
    seq_id: int
    adam: AdamStep | None  # None when another optimiser was requested
    optimizer_type: str = "adamw"  # e.g. "dimuon" under `optimizer_params` (not supported)


@dataclass(frozen=True)
class SaveWeights:
    """`save_state`: weights and optimizer state under `tinker://<model>/weights/<name>`."""

    model_id: str
    seq_id: int
    name: str
    overwrite: bool = False
    ttl_seconds: int | None = None
    user_metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class SaveWeightsForSampler:
    """Named (`name` set) or ephemeral (`sampling_session_seq_id` set) sampler weights."""

    model_id: str
    seq_id: int
    name: str | None = None
    sampling_session_seq_id: int | None = None
    kind: str = "snapshot"
    ttl_seconds: int | None = None
    user_metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class SaveWeightsExternal:
    """`save_weights_external`: the weights under `tinker://<model>/external_weights/<name>`."""

    model_id: str
    seq_id: int
    name: str
    ttl_seconds: int | None = None
    age_encryption_recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadWeights:
    """Either into an existing model (`model_id` + `seq_id`), or creating one
    (`session_id` + `model_seq_id`, the create-via-load of `create_training_client_from_state`)."""

    path: str
    optimizer: bool = False
    model_id: str | None = None
    seq_id: int | None = None
    session_id: str | None = None
    model_seq_id: int | None = None
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None
    optimizer_type: str | None = None  # `optimizer_config.type` of a create-via-load
    weights_access_token: str | None = None  # accepted; the mock has no cross-account access


@dataclass(frozen=True)
class CreateSamplingSession:
    session_id: str
    sampling_session_seq_id: int
    model_path: str | None = None
    base_model: str | None = None


@dataclass(frozen=True)
class SampleParams:
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | tuple[str, ...] | tuple[int, ...] | None = None  # () disables EOS
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


@dataclass(frozen=True)
class Sample:
    sampling_session_id: str
    seq_id: int
    prompt: tuple[int, ...]  # token ids, text chunks concatenated
    num_samples: int = 1
    params: SampleParams = SampleParams()
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: TensorData | None = None  # int64 [L-1, K], -1 = no target
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None
    record_stability_info: bool = False  # accepted: sequence ids are returned either way


@dataclass(frozen=True)
class CustomLossInputSpec:
    name: str
    rank: int


@dataclass(frozen=True)
class CreateCustomLoss:
    session_id: str
    custom_loss_seq_id: int
    name: str
    inputs: tuple[CustomLossInputSpec, ...]
    graph: dict[str, Any]


@dataclass(frozen=True)
class MalformedOp:
    """A request to a sequenced endpoint that could not be read in full, though its `model_id`
    and `seq_id` could: it consumes that seq_id like any rejected op, so the client's next op
    does not wait out the gap timeout (the client moves on to the next id either way)."""

    model_id: str
    seq_id: int
    endpoint: str  # e.g. "optim_step": with the body digest, tells a retry from another op
    body_digest: str  # sha256 of what the client sent: a retry of the same bytes is recognised
    message: str  # the MalformedRequest it gets (and every retry of it gets again)
    field: str | None


# ----- the REST API's changes (rest_ops.py); its reads take no request object -----


@dataclass(frozen=True)
class DeleteCheckpoint:
    training_run_id: str
    checkpoint_id: str  # "<kind>/<name>", e.g. "weights/step-10"


@dataclass(frozen=True)
class SetCheckpointTtl:
    training_run_id: str
    checkpoint_id: str
    ttl_seconds: int | None  # None: never expires
    # Wall-clock seconds when the call arrived: the expiry counts from here, also on replay.
    requested_at: float


@dataclass(frozen=True)
class SetCheckpointPublic:
    training_run_id: str
    checkpoint_id: str
    public: bool


@dataclass(frozen=True)
class AssignSessionProject:
    session_id: str
    project_id: str


@dataclass(frozen=True)
class CopyWeights:
    source_path: str  # tinker://<run>/<kind>/<name>
    destination_project_id: str | None
    ttl_seconds: int | None
    requested_at: float  # wall-clock seconds when the call arrived (the copy's created_at)
