"""Optimizer selection (at model creation) and per-step hyperparameters of other families.

Mirrors SDK 0.38's `tinker.types.optimizer`: a training model's optimizer is fixed when it is
created (`optimizer=AdamOptimizerConfig()`, the default, or `DimuonOptimizerConfig()`), and each
`optim_step` passes the matching hyperparameters (`AdamParams`, in `training.py`, or
`DimuonParams`). The JSON forms are the request bodies the SDK sends: `optimizer_config` of
`create_model` / `load_weights`, and `optimizer_params` of `optim_step` (AdamParams travel as
`adam_params` instead).

The mock trains with AdamW only: it refuses a Dimuon model with a 4xx naming
`optimizer_config.type`, because Tinker's public docs do not define Dimuon's update rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from tinker_ref.types.training import AdamParams

__all__ = [
    "AdamOptimizerConfig",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "OptimParams",
    "OptimizerConfig",
    "optim_params_to_json",
    "optimizer_config_to_json",
]


@dataclass(frozen=True)
class AdamOptimizerConfig:
    """AdamW, the default optimizer; its hyperparameters come with each step (`AdamParams`)."""

    type: Literal["adamw"] = "adamw"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type}


@dataclass(frozen=True)
class DimuonOptimizerConfig:
    """Selects the Dimuon optimizer for a training model (SDK 0.38: `version` 1)."""

    type: Literal["dimuon"] = "dimuon"
    version: Literal[1] = 1

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version}


@dataclass(frozen=True, kw_only=True)
class DimuonParams:
    """Hyperparameters of one Dimuon step; `learning_rate` has no default (as in the SDK)."""

    type: Literal["dimuon"] = "dimuon"
    learning_rate: float  # >= 0
    grad_clip_norm: float = 0.0  # <= 0 disables clipping
    beta1: float = 0.9  # momentum EMA coefficient, in [0, 1)

    def __post_init__(self) -> None:
        for name in ("learning_rate", "grad_clip_norm", "beta1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"DimuonParams.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"DimuonParams.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.learning_rate < 0:
            raise ValueError(f"DimuonParams.learning_rate must be >= 0, got {self.learning_rate}")
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"DimuonParams.beta1 must be in [0, 1), got {self.beta1}")

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "learning_rate": self.learning_rate,
            "grad_clip_norm": self.grad_clip_norm,
            "beta1": self.beta1,
        }


OptimizerConfig: TypeAlias = AdamOptimizerConfig | DimuonOptimizerConfig
OptimParams: TypeAlias = AdamParams | DimuonParams


def optimizer_config_to_json(config: OptimizerConfig | None) -> dict[str, Any]:
    """The `optimizer_config` of a creation request; None is AdamW, as the SDK sends it."""
    if config is None:
        return AdamOptimizerConfig().to_json()
    if not isinstance(config, (AdamOptimizerConfig, DimuonOptimizerConfig)):
        raise TypeError(
            f"optimizer must be AdamOptimizerConfig or DimuonOptimizerConfig, got {config!r}"
        )
    return config.to_json()


def optim_params_to_json(params: OptimParams) -> tuple[str, dict[str, Any]]:
    """`(body key, value)` of an optim_step: Adam travels as `adam_params`, any other
    family as `optimizer_params` (the SDK's serializer does the same)."""
    if isinstance(params, AdamParams):
        return "adam_params", params.to_json()
    if isinstance(params, DimuonParams):
        return "optimizer_params", params.to_json()
    raise TypeError(f"Expected AdamParams or DimuonParams, got {type(params).__name__}")
