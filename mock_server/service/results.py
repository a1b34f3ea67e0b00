"""Typed results of the service, transport-neutral; front ends encode them.

Forward/backward and sampling futures resolve to `tinker_ref.types.ForwardBackwardOutput` and
`SampleResponse` (protobuf or JSON on the wire, by the client's Accept); every other future and
every immediate answer is one of the dataclasses below.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CreateModelResult:
    model_id: str


@dataclass(frozen=True)
class OptimStepResult:
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SaveWeightsResult:
    path: str


@dataclass(frozen=True)
class SaveWeightsForSamplerResult:
    path: str | None = None  # named save
    sampling_session_id: str | None = None  # ephemeral save


@dataclass(frozen=True)
class SaveWeightsExternalResult:
    path: str
    size_bytes: int


@dataclass(frozen=True)
class LoadWeightsResult:
    path: str
    model_id: str


@dataclass(frozen=True)
class CreateCustomLossResult:
    loss_id: str


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    base_model: str
    arch: str
    tokenizer_id: str
    lora_rank: int
    optimizer_type: str


@dataclass(frozen=True)
class WeightsInfo:
    """What `/weights_info` tells old SDKs (<= 0.25) to recreate a model before loading."""

    base_model: str
    lora_rank: int
    train_attn: bool
    train_mlp: bool
    train_unembed: bool


@dataclass(frozen=True)
class SamplerInfo:
    sampler_id: str
    base_model: str
    model_path: str | None


@dataclass(frozen=True)
class SessionInfo:
    session_id: str


@dataclass(frozen=True)
class SubmittedFuture:
    """What a future-creating POST answers: the request id (and for samples, one sequence
    id per requested sample)."""

    request_id: str
    model_id: str | None = None
    sample_sequence_ids: tuple[str, ...] | None = None
