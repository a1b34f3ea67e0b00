"""The plain-torch reference model the state machine predicts a backend with.

An architecture (`ReferenceArchitecture`: initial adapter weights + a differentiable
`logprobs(adapter, tokens, targets)`) is supplied by whoever knows the backend's network; for
the mock server the test suite passes the engine's model definition. Everything *about
training* is done here, directly, from the spec (spec/losses.md, DET-4, OPT-1):

- built-in losses: per chunk, datum losses summed left to right into one scalar, one
  `backward()` that adds into `.grad` (the backend's fixed reduction order, so results agree
  to the bit, not merely closely);
- custom losses: C is differentiated **directly** with autograd through the network. g = dC/dl
  is taken once over the whole batch (the client computes the loss once), then pushed through
  each chunk's graph with `torch.autograd.backward(l_chunk, g_chunk)`: no surrogate
  cross-entropy anywhere, so a wrong sign or scale in the backend's custom path shows up;
- `torch.optim.AdamW(foreach=False, fused=False)`, global-norm clipping first, gradients
  cleared after; a step with no gradient since the last one is skipped (the mock's documented
  choice, spec OPT-6);
- save/load copy weights (and Adam state, or start it fresh) and clear pending gradients.

Chunk boundaries matter for bit-equality (gradients and `loss:sum` are summed per request, then
across requests), so callers pass the chunks the client will send.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from tinker_ref.testing.data import DatumSpec
from tinker_ref.testing.losses import BUILTIN_LOSSES, CustomLoss
from tinker_ref.types import AdamParams


class ReferenceArchitecture(Protocol):
    def initial_adapter(self, base_model: str, rank: int, seed: int) -> dict[str, Tensor]:
        """Trainable weights of a fresh model, in the backend's parameter order."""
        ...

    def logprobs(
        self, base_model: str, adapter: Mapping[str, Tensor], tokens: Tensor, targets: Tensor
    ) -> Tensor:
        """log p(targets | prefix), shaped like targets ((N,) or (N, K)), differentiable."""
        ...


@dataclass(frozen=True)
class Prediction:
    logprobs: list[np.ndarray]  # per datum, shaped like its target_tokens, float32
    elementwise: list[np.ndarray] | None  # per-token losses (built-in losses only)
    metrics: dict[str, float]


@dataclass(frozen=True)
class Snapshot:
    weights: dict[str, Tensor]
    optimizer: dict[str, Any]  # AdamW state_dict (deep copy)


class ReferenceModel:
    def __init__(
        self, architecture: ReferenceArchitecture, base_model: str, rank: int, seed: int
    ) -> None:
        self.architecture = architecture
        self.base_model = base_model
        initial = architecture.initial_adapter(base_model, rank, seed)
        self.params = {name: t.detach().clone().requires_grad_(True) for name, t in initial.items()}
        self.optimizer = self._new_optimizer()

    def _new_optimizer(self) -> torch.optim.AdamW:
        return torch.optim.AdamW(list(self.params.values()), foreach=False, fused=False)

    def _logprobs(self, spec: DatumSpec) -> Tensor:
        tokens, inputs = spec.tensors()
        return self.architecture.logprobs(
            self.base_model, self.params, tokens, inputs["target_tokens"]
        )

    # ----- forward / backward -----

    def forward_backward(
        self,
        chunks: Sequence[Sequence[DatumSpec]],
        loss_fn: str,
        config: Mapping[str, float],
        forward_only: bool,
    ) -> Prediction:
        elementwise_fn = BUILTIN_LOSSES[loss_fn]
        logprobs, elementwise, chunk_sums = [], [], []
        for chunk in chunks:
            total = torch.zeros(())
            with torch.set_grad_enabled(not forward_only):
                for spec in chunk:
                    lp = self._logprobs(spec)
                    per_token = elementwise_fn(lp, spec.tensors()[1], config)
                    total = total + per_token.sum()  # left to right, as the backend sums
                    logprobs.append(lp.detach().numpy().copy())
                    elementwise.append(per_token.detach().numpy().copy())
                if not forward_only:
                    total.backward()  # type: ignore[no-untyped-call]
            chunk_sums.append(float(total.detach()))
        # the client merges per-request `loss:sum` values with a float64 sum
        return Prediction(logprobs, elementwise, {"loss:sum": float(np.sum(chunk_sums))})

    def forward_backward_custom(
        self, chunks: Sequence[Sequence[DatumSpec]], loss: CustomLoss
    ) -> tuple[Prediction, dict[Any, Any]]:
        """Returns the prediction (metrics: `loss:sum`, `surrogate_loss:sum`) and the loss's
        raw user metrics; the caller decides how they must be reported."""
        specs = [spec for chunk in chunks for spec in chunk]
        with torch.no_grad():
            values = [self._logprobs(spec) for spec in specs]
        leaves = [v.clone().requires_grad_(True) for v in values]
        loss_value, user_metrics = loss([s.to_datum() for s in specs], leaves)
        loss_value.sum().backward()  # type: ignore[no-untyped-call]
        grads = [leaf.grad for leaf in leaves]
        surrogate_chunks, start = [], 0
        for chunk in chunks:
            chunk_grads = grads[start : start + len(chunk)]
            graphs = [self._logprobs(spec) for spec in chunk]
            torch.autograd.backward(graphs, chunk_grads)  # type: ignore[arg-type]
            # the backend's cross-entropy value for weights -g, summed as it sums: the
            # client reports it as `surrogate_loss:sum`
            total = torch.zeros(())
            for value, grad in zip(values[start : start + len(chunk)], chunk_grads, strict=True):
                assert grad is not None
                total = total + (-(value * -grad)).sum()
            surrogate_chunks.append(float(total))
            start += len(chunk)
        metrics = {
            "loss:sum": float(loss_value.detach().sum().item()),
            "surrogate_loss:sum": float(np.sum(surrogate_chunks)),
        }
        logprobs = [v.numpy().copy() for v in values]
        return Prediction(logprobs, None, metrics), user_metrics

    def has_gradient(self) -> bool:
        return any(p.grad is not None for p in self.params.values())

    # ----- optimizer -----

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        params = list(self.params.values())
        if not self.has_gradient():
            return {"optimizer_step:sum": 0.0, "grad_norm:max": 0.0}
        if adam.grad_clip_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, adam.grad_clip_norm, foreach=False)
        else:
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads, foreach=False)
        for group in self.optimizer.param_groups:
            group.update(
                lr=adam.learning_rate,
                betas=(adam.beta1, adam.beta2),
                eps=adam.eps,
                weight_decay=adam.weight_decay,
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"optimizer_step:sum": 1.0, "grad_norm:max": float(norm)}

    # ----- state -----

    def snapshot(self) -> Snapshot:
        weights = {name: p.detach().clone() for name, p in self.params.items()}
        return Snapshot(weights, copy.deepcopy(self.optimizer.state_dict()))

    def fits(self, snapshot: Snapshot) -> bool:
        shapes = {name: p.shape for name, p in self.params.items()}
        return shapes == {name: t.shape for name, t in snapshot.weights.items()}

    def load(self, snapshot: Snapshot, with_optimizer: bool) -> None:
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(snapshot.weights[name])
                param.grad = None
        self.optimizer = self._new_optimizer()
        if with_optimizer:
            self.optimizer.load_state_dict(copy.deepcopy(snapshot.optimizer))
