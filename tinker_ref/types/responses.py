"""The JSON results of the training API (capabilities, model info, optimizer and checkpoint
futures), named like the official SDK's and parsed leniently: unknown fields are ignored,
required ones must be present (a missing one is a ValueError naming it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tinker_ref.types.optimizer import AdamOptimizerConfig, DimuonOptimizerConfig

__all__ = [
    "GetInfoResponse",
    "GetServerCapabilitiesResponse",
    "LoadWeightsResponse",
    "ModelData",
    "OptimStepResponse",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsResponse",
    "SupportedModel",
]


def _required(body: Mapping[str, Any], key: str, what: str) -> Any:
    if not isinstance(body, Mapping) or key not in body or body[key] is None:
        raise ValueError(f"{what} response lacks the required field {key!r}: {body!r:.200}")
    return body[key]


@dataclass(frozen=True)
class SupportedModel:
    model_name: str | None = None
    max_context_length: int | None = None
    trainable: bool | None = None
    sampleable: bool | None = None


@dataclass(frozen=True)
class GetServerCapabilitiesResponse:
    supported_models: list[SupportedModel]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> GetServerCapabilitiesResponse:
        models = _required(body, "supported_models", "get_server_capabilities")
        return cls(
            [
                SupportedModel(
                    model_name=m.get("model_name"),
                    max_context_length=m.get("max_context_length"),
                    trainable=m.get("trainable"),
                    sampleable=m.get("sampleable"),
                )
                for m in models
            ]
        )


@dataclass(frozen=True)
class ModelData:
    arch: str | None = None
    model_name: str | None = None
    tokenizer_id: str | None = None


@dataclass(frozen=True)
class GetInfoResponse:
    model_id: str
    model_data: ModelData
    is_lora: bool | None = None
    lora_rank: int | None = None
    model_name: str | None = None
    optimizer_config: AdamOptimizerConfig | DimuonOptimizerConfig | None = None
    type: str | None = None  # "get_info"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> GetInfoResponse:
        data = _required(body, "model_data", "get_info")
        optimizer = body.get("optimizer_config")
        optimizer_type = optimizer.get("type") if isinstance(optimizer, Mapping) else None
        return cls(
            model_id=str(_required(body, "model_id", "get_info")),
            model_data=ModelData(
                arch=data.get("arch"),
                model_name=data.get("model_name"),
                tokenizer_id=data.get("tokenizer_id"),
            ),
            is_lora=body.get("is_lora"),
            lora_rank=body.get("lora_rank"),
            model_name=body.get("model_name"),
            optimizer_config=DimuonOptimizerConfig()
            if optimizer_type == "dimuon"
            else AdamOptimizerConfig()
            if optimizer_type == "adamw"
            else None,
            type=body.get("type"),
        )


@dataclass(frozen=True)
class OptimStepResponse:
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> OptimStepResponse:
        return cls({str(k): float(v) for k, v in (body.get("metrics") or {}).items()})


@dataclass(frozen=True)
class SaveWeightsResponse:
    path: str  # tinker://<model_id>/weights/<name>
    type: str | None = None  # "save_weights"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SaveWeightsResponse:
        return cls(str(_required(body, "path", "save_weights")), body.get("type"))


@dataclass(frozen=True)
class SaveWeightsForSamplerResponse:
    path: str | None = None  # named saves: tinker://<model_id>/sampler_weights/<name>
    sampling_session_id: str | None = None  # ephemeral saves
    type: str | None = None  # "save_weights_for_sampler"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SaveWeightsForSamplerResponse:
        return cls(body.get("path"), body.get("sampling_session_id"), body.get("type"))


@dataclass(frozen=True)
class LoadWeightsResponse:
    path: str | None = None
    model_id: str | None = None  # the model loaded into (or created)
    type: str | None = None  # "load_weights"

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> LoadWeightsResponse:
        return cls(body.get("path"), body.get("model_id"), body.get("type"))
