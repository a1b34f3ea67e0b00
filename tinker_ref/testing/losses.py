"""The loss maths the state machine predicts with, written from the spec, not from the engine.

Built-in losses (spec LOSS-9 to LOSS-14) as elementwise torch formulas over one
datum's target logprobs l (shaped like its `target_tokens`): the backend sums them over tokens
and datums and never normalises, so a prediction is `sum_datums elementwise(...).sum()`.

The custom-loss catalogue holds the four user losses `forward_backward_custom` is driven with:
mean NLL, a DPO-style pairwise loss, a [T, K] distribution (Brier) loss, and a loss that
returns tensor metrics under a non-string key. They are ordinary user code; what the suite
checks is the custom-loss *path* (weights = -dC/dl, metric rewrite), with these as inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tinker_ref.types import Datum

Inputs = Mapping[str, Tensor]
Config = Mapping[str, float]
Elementwise = Callable[[Tensor, Inputs, Config], Tensor]

# Absolute ratio bounds when the request names none (spec LOSS-11: 0.8 / 1.2, inclusive clamp).
CLIP_DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}


def _clip(inputs: Inputs, config: Config) -> tuple[float, float]:
    low = config.get("clip_low_threshold", CLIP_DEFAULTS["clip_low_threshold"])
    high = config.get("clip_high_threshold", CLIP_DEFAULTS["clip_high_threshold"])
    return low, high


def cross_entropy(lp: Tensor, inputs: Inputs, config: Config) -> Tensor:
    return -(lp * inputs["weights"])


def importance_sampling(lp: Tensor, inputs: Inputs, config: Config) -> Tensor:
    return -(torch.exp(lp - inputs["logprobs"]) * inputs["advantages"])


def ppo(lp: Tensor, inputs: Inputs, config: Config) -> Tensor:
    ratio, advantages = torch.exp(lp - inputs["logprobs"]), inputs["advantages"]
    low, high = _clip(inputs, config)
    return -torch.minimum(ratio * advantages, torch.clamp(ratio, low, high) * advantages)


def cispo(lp: Tensor, inputs: Inputs, config: Config) -> Tensor:
    ratio = torch.exp(lp - inputs["logprobs"])
    low, high = _clip(inputs, config)
    # the clipped ratio is a constant weight (stop-gradient); only l carries the gradient
    return -(torch.clamp(ratio, low, high).detach() * lp * inputs["advantages"])


def dro(lp: Tensor, inputs: Inputs, config: Config) -> Tensor:
    drift = lp - inputs["logprobs"]
    return -(lp * inputs["advantages"] - 0.5 * config["beta"] * drift * drift)


def gspo(lp: Tensor, inputs: Inputs, config: Config) -> Tensor:
    mask = inputs["sequence_ratio_mask"] != 0
    constant = lp.detach()
    # one sequence-level ratio s = exp(mean over the mask of (l - q)), carried per token so that
    # each token's gradient is A_t * s; an empty mask gives s = 1
    log_ratio = (constant - inputs["logprobs"])[mask].mean() if bool(mask.any()) else 0.0
    ratio = torch.exp(log_ratio + lp - constant)
    advantages = inputs["advantages"]
    low, high = _clip(inputs, config)
    return -torch.minimum(ratio * advantages, torch.clamp(ratio, low, high) * advantages)


BUILTIN_LOSSES: dict[str, Elementwise] = {
    "cross_entropy": cross_entropy,
    "importance_sampling": importance_sampling,
    "ppo": ppo,
    "cispo": cispo,
    "dro": dro,
    "gspo": gspo,
}


# ----- custom-loss catalogue ----------------------------------------------------------------

CustomLoss = Callable[[list[Datum], list[Tensor]], tuple[Tensor, dict[Any, Any]]]


def _input(datum: Datum, key: str) -> Tensor:
    return datum.loss_fn_inputs[key].to_torch()


def mean_nll(data: list[Datum], logprobs: list[Tensor]) -> tuple[Tensor, dict[Any, Any]]:
    """Token-mean negative log-likelihood over the weighted tokens of the batch."""
    weights = [_input(d, "weights") for d in data]
    total = torch.stack([-(lp * w).sum() for lp, w in zip(logprobs, weights, strict=True)]).sum()
    count = torch.stack([w.abs().sum() for w in weights]).sum().clamp(min=1.0)
    return total / count, {"nll:mean": float((total / count).detach())}


DPO_BETA = 0.5


def dpo_pairwise(data: list[Datum], logprobs: list[Tensor]) -> tuple[Tensor, dict[Any, Any]]:
    """Datums come as (chosen, rejected) pairs; `ref_logprobs` (a client-only input, never sent)
    holds the reference model's logprobs. L = mean_pairs -log sigmoid(beta * margin)."""
    sums = [
        ((lp - _input(d, "ref_logprobs")) * _input(d, "weights")).sum()
        for d, lp in zip(data, logprobs, strict=True)
    ]
    margins = torch.stack([sums[i] - sums[i + 1] for i in range(0, len(sums), 2)])
    loss = -torch.nn.functional.logsigmoid(DPO_BETA * margins).mean()
    accuracy = float((margins > 0).float().mean())
    return loss, {"dpo_loss": float(loss.detach()), "accuracy": accuracy}


def distribution_brier(data: list[Datum], logprobs: list[Tensor]) -> tuple[Tensor, dict[Any, Any]]:
    """[T, K] targets: the last row scores K candidate tokens; Brier score of their renormalised
    probabilities against the target distribution in the last row of `weights`, mean over datums.
    Only the last row gets gradient, so the backward weights travel as sparse CSR."""
    losses = []
    for datum, lp in zip(data, logprobs, strict=True):
        probs = torch.softmax(lp[-1], dim=0)  # (K,)
        losses.append(((probs - _input(datum, "weights")[-1]) ** 2).sum())
    loss = torch.stack(losses).mean()
    return loss, {"brier:mean": float(loss.detach())}


def tensor_metrics(data: list[Datum], logprobs: list[Tensor]) -> tuple[Tensor, dict[Any, Any]]:
    """A summed weighted NLL plus a small quadratic; its metrics are tensors, an int, and a
    non-string key, which the client must turn into str keys and Python numbers."""
    weights = [_input(d, "weights") for d in data]
    nll = torch.stack([-(lp * w).sum() for lp, w in zip(logprobs, weights, strict=True)]).sum()
    quadratic = torch.stack([(lp * lp).sum() for lp in logprobs]).sum()
    loss = nll + 0.01 * quadratic
    return loss, {"nll": nll.detach(), 7: quadratic.detach(), "datums": len(data)}


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    loss: CustomLoss
    multi_target: bool  # [T, K] targets
    pairs: bool  # datums come in (chosen, rejected) pairs


CUSTOM_LOSSES: dict[str, CatalogueEntry] = {
    entry.name: entry
    for entry in (
        CatalogueEntry("mean_nll", mean_nll, multi_target=False, pairs=False),
        CatalogueEntry("dpo_pairwise", dpo_pairwise, multi_target=False, pairs=True),
        CatalogueEntry("distribution_brier", distribution_brier, multi_target=True, pairs=False),
        CatalogueEntry("tensor_metrics", tensor_metrics, multi_target=False, pairs=False),
    )
}


def expected_user_metrics(metrics: Mapping[Any, Any]) -> dict[str, float]:
    """What the client must report for a loss's metrics: str keys, Python-number values."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        out[str(key)] = float(value.item()) if isinstance(value, Tensor) else float(value)
    return out
