"""Training-side values: the forward/backward result, Adam hyperparameters, the LoRA config.

Mirrors `tinker.ForwardBackwardOutput`, `tinker.AdamParams` and `tinker.LoraConfig` with the
official defaults. The JSON forms here are the request bodies the SDK sends (all six Adam keys
always present; `None` fields left out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinker_ref.types.tensor_data import TensorData

__all__ = ["AdamParams", "ForwardBackwardOutput", "LoraConfig"]


@dataclass(frozen=True, init=False)
class ForwardBackwardOutput:
    """Per-datum loss outputs (in input order) and the merged metrics of one pass.

    `loss_fn_output_type` is the output record's class name (`"ArrayRecord"` from the protobuf
    wire); metric keys look like `name:reduction` (e.g. `loss:sum`).
    """

    loss_fn_output_type: str
    loss_fn_outputs: list[dict[str, TensorData]]
    metrics: dict[str, float]

    def __init__(
        self,
        loss_fn_output_type: str,
        loss_fn_outputs: Sequence[Mapping[str, TensorData]],
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        if not isinstance(loss_fn_output_type, str):
            raise TypeError(
                f"loss_fn_output_type must be str, got {type(loss_fn_output_type).__name__}"
            )
        outputs: list[dict[str, TensorData]] = []
        for index, output in enumerate(loss_fn_outputs):
            for name, value in output.items():
                if not isinstance(name, str) or not isinstance(value, TensorData):
                    raise TypeError(
                        f"loss_fn_outputs[{index}] must map str to TensorData, "
                        f"got {name!r}: {type(value).__name__}"
                    )
            outputs.append(dict(output))
        checked_metrics: dict[str, float] = {}
        for key, metric in (metrics or {}).items():
            if not isinstance(key, str) or isinstance(metric, bool):
                raise TypeError(f"metrics must map str to float, got {key!r}: {metric!r}")
            checked_metrics[key] = float(metric)
        object.__setattr__(self, "loss_fn_output_type", loss_fn_output_type)
        object.__setattr__(self, "loss_fn_outputs", outputs)
        object.__setattr__(self, "metrics", checked_metrics)


@dataclass(frozen=True)
class AdamParams:
    """AdamW step hyperparameters (official defaults); `weight_decay` is decoupled and
    `grad_clip_norm = 0` means no clipping."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"AdamParams.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"AdamParams.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))

    def to_json(self) -> dict[str, float]:
        """The JSON body form: all six keys, always."""
        return {
            "learning_rate": self.learning_rate,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "grad_clip_norm": self.grad_clip_norm,
        }


@dataclass(frozen=True)
class LoraConfig:
    """Which parts of the base model get LoRA adapters, and their rank."""

    rank: int = 32
    seed: int | None = None  # seeds the adapter initialisation; None lets the server choose
    train_mlp: bool = True
    train_attn: bool = True
    train_unembed: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoraConfig.rank must be a positive int, got {self.rank!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise TypeError(f"LoraConfig.seed must be an int or None, got {self.seed!r}")
        for name in ("train_mlp", "train_attn", "train_unembed"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"LoraConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if not (self.train_mlp or self.train_attn or self.train_unembed):
            raise ValueError(
                "LoraConfig needs at least one of train_mlp, train_attn, train_unembed to be True"
            )

    def to_json(self) -> dict[str, Any]:
        """The JSON body form (`seed` left out when None), in the SDK's field order."""
        body: dict[str, Any] = {"rank": self.rank}
        if self.seed is not None:
            body["seed"] = self.seed
        body["train_unembed"] = self.train_unembed
        body["train_mlp"] = self.train_mlp
        body["train_attn"] = self.train_attn
        return body
