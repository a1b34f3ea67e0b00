"""The conformance loss catalogue in torch: what every adapter implements in its own language.

Formulas (conformance/README.md, "Loss catalogue", is the normative text). Per datum i and
position t: ℓ = the logprob tensor the SDK hands the loss (shaped like `target_tokens`: [T] or
[T,K]), w = the datum's `weights` (same shape; ones when absent). Sums run left to right in datum
order, so every adapter reproduces the reference's float32 rounding.

    sum_nll                 C = -Σ_i Σ_t w·ℓ
    mean_nll                C = -(Σ_i Σ_t w·ℓ) / (Σ_i Σ_t w)
    dpo_pair(beta, reference_margins=0)
                            datums (2j, 2j+1) = (chosen, rejected); s_i = Σ_t w·ℓ;
                            C = Σ_j softplus(-(beta·((s_2j - s_2j+1) - m_j)))   (= -log σ(·))
    target_distribution_kl  [T,K] rows, p = w (a distribution per row, zero rows ignored);
                            C = Σ_i Σ_{t,k: p>0} p·(log p - ℓ)
    weighted_margin(margin) C = Σ_i Σ_t w·softplus(margin - ℓ)
    elementwise_nll         returns the vector (-w·ℓ) of every token — NOT a scalar, so the SDK
                            must refuse it (the non-scalar-loss error case)

Metrics: each loss returns `{"custom/<name>:sum": float(C)}`; `weighted_margin` instead returns
raw values on purpose — a 0-d tensor, an int and a float — so the metric-stringification case
sees whether the SDK turns them into numbers.

Standard library and torch only: this file also runs inside official-SDK virtualenvs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

Loss = Callable[[Sequence[Any], Sequence[torch.Tensor]], tuple[torch.Tensor, dict[str, Any]]]


def _weights(datum: Any, like: torch.Tensor) -> torch.Tensor:
    """The datum's `weights` as float32 shaped like its logprobs (ones when absent)."""
    inputs = datum.loss_fn_inputs
    if "weights" not in inputs:
        return torch.ones_like(like)
    value = inputs["weights"]
    tensor = value.to_torch() if hasattr(value, "to_torch") else torch.as_tensor(value)
    if tensor.is_sparse_csr:
        tensor = tensor.to_dense()
    return tensor.to(torch.float32).reshape(like.shape)


def _weighted_sums(data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [(_weights(d, lp) * lp).sum() for d, lp in zip(data, logprobs, strict=True)]


def _total(values: Sequence[torch.Tensor]) -> torch.Tensor:
    total = values[0]
    for value in values[1:]:  # left to right: the order fixes float32 rounding
        total = total + value
    return total


def sum_nll() -> Loss:
    def loss(data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> Any:
        value = -_total(_weighted_sums(data, logprobs))
        return value, {"custom/sum_nll:sum": float(value.item())}

    return loss


def mean_nll() -> Loss:
    def loss(data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> Any:
        weight = _total([_weights(d, lp).sum() for d, lp in zip(data, logprobs, strict=True)])
        value = -_total(_weighted_sums(data, logprobs)) / weight
        return value, {"custom/mean_nll:sum": float(value.item())}

    return loss


def dpo_pair(beta: float, reference_margins: Sequence[float] | None = None) -> Loss:
    def loss(data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> Any:
        if len(data) % 2:
            raise ValueError(f"dpo_pair needs (chosen, rejected) pairs, got {len(data)} datums")
        scores = _weighted_sums(data, logprobs)
        margins = reference_margins or [0.0] * (len(data) // 2)
        terms = [
            F.softplus(-(beta * ((scores[2 * j] - scores[2 * j + 1]) - margins[j])))
            for j in range(len(data) // 2)
        ]
        value = _total(terms)
        return value, {"custom/dpo_pair:sum": float(value.item())}

    return loss


def target_distribution_kl() -> Loss:
    def loss(data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> Any:
        terms = []
        for datum, lp in zip(data, logprobs, strict=True):
            if lp.dim() != 2:
                raise ValueError(f"target_distribution_kl needs [T,K] targets, got {lp.shape}")
            p = _weights(datum, lp)
            positive = p > 0
            # 0·log 0 = 0: only cells with p > 0 contribute (and carry gradient -p).
            log_p = torch.where(positive, p, torch.ones_like(p)).log()
            terms.append(torch.where(positive, p * (log_p - lp), torch.zeros_like(lp)).sum())
        value = _total(terms)
        return value, {"custom/target_distribution_kl:sum": float(value.item())}

    return loss


def weighted_margin(margin: float) -> Loss:
    def loss(data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> Any:
        terms = [
            (_weights(d, lp) * F.softplus(margin - lp)).sum()
            for d, lp in zip(data, logprobs, strict=True)
        ]
        value = _total(terms)
        below = sum(int((lp.detach() < margin).sum().item()) for lp in logprobs)
        # Raw values on purpose (see the module docstring): a tensor, an int, a float.
        return value, {
            "custom/weighted_margin:sum": value.detach(),
            "custom/below_margin:sum": below,
            "custom/margin:mean": float(margin),
        }

    return loss


def elementwise_nll() -> Loss:
    def loss(data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> Any:
        parts = [(-(_weights(d, lp) * lp)).flatten() for d, lp in zip(data, logprobs, strict=True)]
        return torch.cat(parts), {}

    return loss


CATALOGUE: dict[str, Callable[..., Loss]] = {
    "sum_nll": sum_nll,
    "mean_nll": mean_nll,
    "dpo_pair": dpo_pair,
    "target_distribution_kl": target_distribution_kl,
    "weighted_margin": weighted_margin,
    "elementwise_nll": elementwise_nll,
}


class UnknownLoss(KeyError):
    """The case names a loss this adapter does not implement (the case is skipped)."""


def build(spec: Mapping[str, Any]) -> Loss:
    """`{"name": "dpo_pair", "params": {"beta": 0.1}}` -> the loss function."""
    factory = CATALOGUE.get(spec["name"])
    if factory is None:
        raise UnknownLoss(spec["name"])
    return factory(**spec.get("params", {}))
