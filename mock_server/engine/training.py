"""One trainable model: LoRA adapters over shared frozen base weights, a gradient buffer and AdamW.

Semantics (spec LOSS-4, LOSS-6, LOSS-8, OPT-1, OPT-4, OPT-6):
- `forward_backward` computes each datum's target logprobs and elementwise loss, sums the
  losses left to right over datums (a fixed order, so results are bit-reproducible) and runs
  one backward pass that **adds** into the adapters' `.grad`; nothing is normalised.
- `forward_backward(..., forward_only=True)` runs the same code without autograd: identical
  logprobs, no gradient.
- `optim_step` applies `torch.optim.AdamW(foreach=False, fused=False)` with the request's
  hyperparameters (global-norm clipping first when `grad_clip_norm > 0`), then clears the
  gradients. A step with no gradient accumulated since the last one is **skipped**: weights,
  Adam moments and the Adam step count stay as they are, and weight decay is not applied
  (reported as `optimizer_step:sum = 0`).
- Every request is validated in full before any compute, so a rejected one changes nothing.

The caller (a front end) guarantees that calls on one model never overlap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mock_server.engine.errors import CheckpointError, InvalidInputError
from mock_server.engine.losses import ConfigValue, get_loss
from mock_server.engine.model import (
    Adapter,
    BaseWeights,
    LoraConfig,
    init_adapter,
    target_logprobs,
)


@dataclass(frozen=True)
class DatumInput:
    """One training example as the engine sees it."""

    tokens: Tensor  # (N,) int64 model-input token ids
    loss_fn_inputs: Mapping[str, Tensor]  # e.g. target_tokens (N,) or (N, K) int64, weights float32


@dataclass(frozen=True)
class ForwardBackwardResult:
    loss_fn_outputs: list[dict[str, Tensor]]  # per datum, input order: logprobs, elementwise_loss
    metrics: dict[str, float]  # "name:reduction" keys; always has "loss:sum"


@dataclass(frozen=True)
class DatumLossResult:
    loss: Tensor  # scalar; summed over datums into the request's loss
    outputs: dict[str, Tensor]  # extra per-datum outputs next to "logprobs"
    metrics: dict[str, Tensor]  # "name:sum" or "name:mean" scalars


# (logprobs shaped like target_tokens, the datum's loss_fn_inputs) -> its loss
DatumLoss = Callable[[Tensor, Mapping[str, Tensor]], DatumLossResult]


@dataclass(frozen=True)
class AdamConfig:
    """The official AdamParams with the official defaults."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0  # 0 = no clipping

    def validate(self) -> None:
        checks = {
            "learning_rate": self.learning_rate >= 0,
            "beta1": 0 <= self.beta1 < 1,
            "beta2": 0 <= self.beta2 < 1,
            "eps": self.eps >= 0,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip_norm": self.grad_clip_norm >= 0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or value != value or value in (float("inf"), float("-inf")):
                raise InvalidInputError(f"adam_params.{name}", f"out of range: {value!r}")


@dataclass(frozen=True)
class OptimizerState:
    """AdamW state per adapter parameter: step count and both moments."""

    tensors: dict[str, Tensor]  # "<param>.step" () , "<param>.exp_avg", "<param>.exp_avg_sq"


class TrainingModel:
    def __init__(self, base: BaseWeights, lora: LoraConfig, lora_seed: int) -> None:
        if lora.rank < 1:
            raise InvalidInputError("lora_config.rank", f"must be >= 1, got {lora.rank}")
        if not (lora.train_attn or lora.train_mlp or lora.train_unembed):
            raise InvalidInputError(
                "lora_config", "at least one of train_attn, train_mlp, train_unembed must be true"
            )
        self.base = base
        self.lora = lora
        self.lora_seed = lora_seed
        self.adapter: Adapter = {
            name: t.requires_grad_(True) for name, t in init_adapter(base, lora, lora_seed).items()
        }
        self._optimizer = self._new_optimizer()

    def _new_optimizer(self) -> torch.optim.AdamW:
        return torch.optim.AdamW(list(self.adapter.values()), foreach=False, fused=False)

    @property
    def vocab_size(self) -> int:
        return self.base.spec.vocab_size

    # ----- forward / backward -----

    def validate_tokens(self, index: int, tokens: Tensor) -> None:
        where = f"data[{index}].model_input"
        if tokens.dtype != torch.int64 or tokens.dim() != 1:
            raise InvalidInputError(where, "expected a 1-D int64 token sequence")
        if tokens.numel() == 0:
            raise InvalidInputError(where, "is empty; a datum needs at least one input token")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise InvalidInputError(
                where, f"token id {bad} outside the vocabulary [0, {self.vocab_size})"
            )

    def forward_backward(
        self,
        data: Sequence[DatumInput],
        loss_fn: str,
        loss_fn_config: Mapping[str, ConfigValue] | None = None,
        forward_only: bool = False,
    ) -> ForwardBackwardResult:
        """A built-in loss: per-token elementwise losses, summed over tokens and datums."""
        loss = get_loss(loss_fn)
        config = loss.resolve_config(loss_fn_config or {})
        for index, datum in enumerate(data):
            self.validate_tokens(index, datum.tokens)
            loss.validate(index, datum.tokens.shape[0], datum.loss_fn_inputs, self.vocab_size)

        def datum_loss(logprobs: Tensor, inputs: Mapping[str, Tensor]) -> DatumLossResult:
            elementwise = loss.elementwise(logprobs, inputs, config)
            return DatumLossResult(elementwise.sum(), {"elementwise_loss": elementwise}, {})

        return self._run(data, datum_loss, forward_only)

    def forward_backward_per_datum(
        self,
        data: Sequence[DatumInput],
        datum_loss: DatumLoss,
        forward_only: bool = False,
    ) -> ForwardBackwardResult:
        """A loss given as a function of one datum's logprobs (e.g. an uploaded custom loss).

        The caller validates `loss_fn_inputs` beyond target_tokens. Datum losses are summed;
        metrics "name:sum" are summed over datums and "name:mean" averaged over datums.
        """
        for index, datum in enumerate(data):
            self.validate_tokens(index, datum.tokens)
            targets = datum.loss_fn_inputs.get("target_tokens")
            if targets is None or targets.dtype != torch.int64 or targets.dim() not in (1, 2):
                raise InvalidInputError(
                    f"data[{index}].loss_fn_inputs.target_tokens", "required: int64 [N] or [N, K]"
                )
            if targets.shape[0] != datum.tokens.shape[0]:
                raise InvalidInputError(
                    f"data[{index}].loss_fn_inputs.target_tokens",
                    f"first dimension {targets.shape[0]} != model_input length "
                    f"{datum.tokens.shape[0]}",
                )
            if targets.numel() and (
                int(targets.min()) < 0 or int(targets.max()) >= self.vocab_size
            ):
                raise InvalidInputError(
                    f"data[{index}].loss_fn_inputs.target_tokens",
                    f"token ids must lie in [0, {self.vocab_size})",
                )
        return self._run(data, datum_loss, forward_only)

    def _run(
        self, data: Sequence[DatumInput], datum_loss: DatumLoss, forward_only: bool
    ) -> ForwardBackwardResult:
        outputs: list[dict[str, Tensor]] = []
        metric_sums: dict[str, float] = {}
        total = torch.zeros(())
        with torch.set_grad_enabled(not forward_only):
            for datum in data:
                targets = datum.loss_fn_inputs["target_tokens"]
                logprobs = target_logprobs(self.base, self.adapter, datum.tokens, targets)
                result = datum_loss(logprobs, datum.loss_fn_inputs)
                total = total + result.loss  # left to right: a fixed reduction order
                outputs.append(
                    {"logprobs": logprobs.detach()}
                    | {name: t.detach() for name, t in result.outputs.items()}
                )
                for key, value in result.metrics.items():
                    metric_sums[key] = metric_sums.get(key, 0.0) + float(value.detach())
            if not forward_only and total.requires_grad:
                total.backward()  # type: ignore[no-untyped-call]
        metrics = {
            key: value / len(data) if key.endswith(":mean") else value
            for key, value in metric_sums.items()
        }
        metrics["loss:sum"] = float(total.detach())
        return ForwardBackwardResult(outputs, metrics)

    def has_gradient(self) -> bool:
        return any(p.grad is not None for p in self.adapter.values())

    # ----- optimizer -----

    def optim_step(self, adam: AdamConfig) -> dict[str, float]:
        adam.validate()
        params = list(self.adapter.values())
        if not self.has_gradient():
            return {"optimizer_step:sum": 0.0, "grad_norm:max": 0.0}
        grads = [p.grad for p in params if p.grad is not None]
        if adam.grad_clip_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, adam.grad_clip_norm, foreach=False)
        else:
            norm = torch.nn.utils.get_total_norm(grads, foreach=False)
        for group in self._optimizer.param_groups:
            group.update(
                lr=adam.learning_rate,
                betas=(adam.beta1, adam.beta2),
                eps=adam.eps,
                weight_decay=adam.weight_decay,
            )
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return {"optimizer_step:sum": 1.0, "grad_norm:max": float(norm)}

    # ----- state: snapshots, checkpoints, digests -----

    def weights(self) -> Adapter:
        """A detached copy of the adapter weights (a sampler snapshot)."""
        return {name: p.detach().clone() for name, p in self.adapter.items()}

    def optimizer_state(self) -> OptimizerState:
        tensors: dict[str, Tensor] = {}
        for name, param in self.adapter.items():
            for key, value in self._optimizer.state.get(param, {}).items():
                tensors[f"{name}.{key}"] = value.detach().clone()
        return OptimizerState(tensors)

    def load(self, weights: Mapping[str, Tensor], optimizer: OptimizerState | None) -> None:
        """Replace adapter weights (and Adam state, or reset it); clears pending gradients."""
        expected = {name: p.shape for name, p in self.adapter.items()}
        got = {name: t.shape for name, t in weights.items()}
        if expected != got:
            raise CheckpointError(
                "checkpoint adapters do not fit this model: expected "
                f"{_shapes(expected)}, got {_shapes(got)}"
            )
        with torch.no_grad():
            for name, param in self.adapter.items():
                param.copy_(weights[name])
                param.grad = None
        self._optimizer = self._new_optimizer()
        if optimizer is not None:
            for name, param in self.adapter.items():
                state = {
                    key: optimizer.tensors[f"{name}.{key}"].clone()
                    for key in ("step", "exp_avg", "exp_avg_sq")
                    if f"{name}.{key}" in optimizer.tensors
                }
                if state:
                    self._optimizer.state[param] = state

    def digest(self, include_optimizer: bool = False) -> str:
        """sha256 over adapter bytes (and Adam state) in name order: equal iff bit-identical."""
        h = hashlib.sha256()
        tensors = dict(self.weights())
        if include_optimizer:
            tensors.update(self.optimizer_state().tensors)
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].contiguous().numpy().tobytes())
        return h.hexdigest()


def _shapes(shapes: Mapping[str, torch.Size]) -> str:
    return ", ".join(f"{name}{list(shape)}" for name, shape in sorted(shapes.items()))
