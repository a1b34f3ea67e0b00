"""Metric rules of the Tinker client: merging chunked results and custom-loss metrics.

`combine_chunk_results` is the official SDK's `combine_fwd_bwd_output_results` (0.38)
rule for rule (spec CL-15): keys come from the first chunk and must
be "name:reduction" with exactly one colon; a key missing from any chunk is dropped, as is an
unknown reduction; "mean" and "slack" weight chunks by their number of datums.

`user_metrics` is where tinker_ref deliberately goes beyond SDK 0.38, which inserts whatever
the user's loss returned (tensors included) into the metrics: keys are stringified and
tensor / numpy / Python numbers become Python numbers, so results serialise and log cleanly;
anything else is a CustomLossError naming the key.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tinker_ref.errors import CustomLossError
from tinker_ref.types import ForwardBackwardOutput

__all__ = ["combine_chunk_results", "merge_custom_loss_metrics", "user_metrics"]


def _weighted_mean(values: Sequence[float], weights: Sequence[int]) -> float:
    return float(np.average(values, weights=weights))


def _hash2(values: Sequence[float]) -> float:
    mask = 0xFFFF_FFFF_FFFF_FFFF
    return float(sum(int(value) & mask for value in values) & mask)


def _reduce(reduction: str, values: Sequence[float], weights: Sequence[int]) -> float | None:
    if reduction == "sum":
        return float(np.sum(values))
    if reduction == "mean":
        return _weighted_mean(values, weights)
    if reduction == "min":
        return float(np.min(values))
    if reduction == "max":
        return float(np.max(values))
    if reduction == "slack":
        return float(np.max(values)) - _weighted_mean(values, weights)
    if reduction == "hash2":
        return _hash2(values)
    return None


def combine_chunk_results(results: Sequence[ForwardBackwardOutput]) -> ForwardBackwardOutput:
    """One logical result from the per-chunk results of one call, in seq_id order."""
    if not results:
        return ForwardBackwardOutput(loss_fn_output_type="", loss_fn_outputs=[], metrics={})
    weights = [len(result.loss_fn_outputs) for result in results]
    metrics: dict[str, float] = {}
    for key in results[0].metrics:
        parts = key.split(":")
        if len(parts) != 2:
            raise ValueError(
                f"server metric key {key!r} must have the form 'name:reduction' (one colon)"
            )
        reduction = parts[1]
        if not all(key in result.metrics for result in results):
            continue
        values = [result.metrics[key] for result in results]
        if reduction == "unique":
            metrics[key] = values[0]
            metrics.update({f"{key}_{i}": v for i, v in enumerate(values[1:], start=1)})
            continue
        reduced = _reduce(reduction, values, weights)
        if reduced is not None:
            metrics[key] = reduced
    return ForwardBackwardOutput(
        loss_fn_output_type=results[0].loss_fn_output_type,
        loss_fn_outputs=[output for result in results for output in result.loss_fn_outputs],
        metrics=metrics,
    )


def _is_torch_tensor(value: Any) -> bool:
    # Checked by module name so that tinker_ref.metrics does not import torch.
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "numel")


def _as_number(key: str, value: Any) -> int | float:
    if isinstance(value, bool | numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.size == 1 and array.dtype.kind in "biuf":
            item = array.reshape(()).item()
            return int(item) if array.dtype.kind in "biu" else float(item)
    elif _is_torch_tensor(value) and value.numel() == 1 and not value.is_complex():
        item = value.detach().reshape(()).item()
        return int(item) if isinstance(item, int) else float(item)
    raise CustomLossError(
        f"custom loss metric {key!r} must be a number or a one-element tensor/array, "
        f"got {type(value).__name__}: {value!r:.80}"
    )


def user_metrics(metrics: Mapping[Any, Any] | None) -> dict[str, int | float]:
    """A loss function's metrics with `str` keys and Python-number values."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise CustomLossError(
            f"a custom loss must return (loss, metrics dict), got metrics of type "
            f"{type(metrics).__name__}"
        )
    return {str(key): _as_number(str(key), value) for key, value in metrics.items()}


def merge_custom_loss_metrics(
    server_metrics: Mapping[str, float], custom_loss: float, user: Mapping[str, int | float]
) -> dict[str, float]:
    """SDK 0.38's rewrite: the server's `loss:sum` (the surrogate CE sum) moves to
    `surrogate_loss:sum`, user metrics are added (overwriting same-named server keys), and
    `loss:sum` becomes the custom loss value."""
    merged: dict[str, float] = dict(server_metrics)
    surrogate = merged.pop("loss:sum", None)
    if surrogate is None:
        raise ValueError("the backward pass reported no 'loss:sum' metric")
    merged.update(user)
    merged["loss:sum"] = custom_loss
    merged["surrogate_loss:sum"] = surrogate
    return merged
