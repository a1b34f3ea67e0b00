"""The client half of custom-loss training, independent of any transport.

`forward_backward_custom(data, loss_fn)` is two ordinary cross-entropy passes around a local
autograd step (spec/custom-loss.md, CL-1 to CL-17):

1. `forward_phase_data(data)`: what the forward pass sends: each datum's model input and
   provenance spans, its `target_tokens`, and its `weights` (zeros shaped like the targets when
   absent); every other key stays on the client (the loss function still sees it).
2. the server returns per-datum logprobs; `run_custom_loss` turns each into a leaf tensor
   shaped like that datum's `target_tokens` ([T] or [T, K]), in input order, calls
   `loss_fn(data, logprobs_list) -> (loss, metrics)`, checks the loss is a scalar, runs
   `loss.backward()` and builds the backward datums with `weights = -dloss/dlogprobs`.
3. the backward pass (same chunk boundaries) accumulates exactly the gradient of the custom
   loss, because the server's cross entropy is the linear, unnormalised sum(-w * logprobs).

The returned metrics are merged by `tinker_ref.metrics.merge_custom_loss_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tinker_ref.errors import CustomLossError
from tinker_ref.metrics import user_metrics
from tinker_ref.types import Datum, TensorData

if TYPE_CHECKING:
    import torch

# (data, one logprob tensor per datum) -> (scalar loss tensor, metrics)
CustomLossFn = Callable[[list[Datum], list["torch.Tensor"]], tuple[Any, Any]]


@dataclass(frozen=True)
class CustomLossResult:
    backward_data: list[Datum]  # the datums of the backward pass, weights = -dloss/dlogprobs
    loss: float  # the custom loss value, reported as `loss:sum`
    metrics: dict[str, int | float]  # the user's metrics, stringified keys, Python numbers


def forward_phase_data(data: Sequence[Datum]) -> list[Datum]:
    """The datums the forward phase sends (only target_tokens and weights travel)."""
    if not data:
        raise CustomLossError("forward_backward_custom needs at least one datum")
    forward: list[Datum] = []
    for index, datum in enumerate(data):
        targets = datum.loss_fn_inputs.get("target_tokens")
        if targets is None:
            raise CustomLossError(f"data[{index}] has no 'target_tokens' in loss_fn_inputs")
        weights = datum.loss_fn_inputs.get("weights")
        if weights is None:
            zeros = np.zeros(targets.dense_shape, dtype=np.float32)
            weights = TensorData.from_numpy(zeros)
        forward.append(
            Datum(
                model_input=datum.model_input,
                loss_fn_inputs={"target_tokens": targets, "weights": weights},
                model_input_spans=datum.model_input_spans,
                loss_fn_input_spans=datum.loss_fn_input_spans,
            )
        )
    return forward


def run_custom_loss(
    data: Sequence[Datum],
    forward_outputs: Sequence[dict[str, TensorData]],
    loss_fn: CustomLossFn,
) -> CustomLossResult:
    """Evaluate the user's loss on the forward logprobs and derive the backward datums."""
    import torch

    if len(forward_outputs) != len(data):
        raise CustomLossError(
            f"the forward pass returned {len(forward_outputs)} outputs for {len(data)} datums"
        )
    logprobs_list: list[torch.Tensor] = []
    for index, (datum, output) in enumerate(zip(data, forward_outputs, strict=True)):
        if "logprobs" not in output:
            raise CustomLossError(f"the forward output of data[{index}] has no 'logprobs'")
        expected = datum.loss_fn_inputs["target_tokens"].dense_shape
        logprobs = output["logprobs"].to_torch()
        if tuple(logprobs.shape) != expected:
            raise CustomLossError(
                f"data[{index}]: server logprobs have shape {list(logprobs.shape)}, "
                f"target_tokens {list(expected)}"
            )
        logprobs_list.append(logprobs.clone().detach().requires_grad_(True))

    returned = loss_fn(list(data), logprobs_list)
    if not isinstance(returned, tuple) or len(returned) != 2:
        raise CustomLossError("a custom loss must return a (loss, metrics) tuple")
    loss, metrics = returned
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise CustomLossError(
            f"a custom loss must return a scalar tensor, got {shape}; reduce it first "
            "(e.g. loss.sum() or loss.mean())"
        )
    if not loss.requires_grad:
        raise CustomLossError(
            "the custom loss does not depend on the logprobs it was given (no autograd graph)"
        )
    converted_metrics = user_metrics(metrics)
    loss_value = float(loss.detach().sum().item())
    loss.sum().backward()  # type: ignore[no-untyped-call]

    backward: list[Datum] = []
    for index, (datum, logprobs) in enumerate(zip(data, logprobs_list, strict=True)):
        if logprobs.grad is None:
            raise CustomLossError(
                f"no gradient reached the logprobs of data[{index}]; a loss that ignores a "
                "datum must still touch it (e.g. add 0.0 * logprobs.sum())"
            )
        negative_gradient = (-logprobs.grad).numpy()
        backward.append(
            Datum(
                model_input=datum.model_input,
                loss_fn_inputs={
                    "target_tokens": datum.loss_fn_inputs["target_tokens"],
                    # the server's CE is sum(-weights * logprobs): weights = -dC/dlogprobs
                    "weights": _as_weights(negative_gradient),
                },
                model_input_spans=datum.model_input_spans,
                loss_fn_input_spans=datum.loss_fn_input_spans,
            )
        )
    return CustomLossResult(backward, loss_value, converted_metrics)


def _as_weights(negative_gradient: np.ndarray[Any, Any]) -> TensorData:
    """Dense for [T]; for [T, K] sparse CSR when that is smaller, as the SDK sends it."""
    return TensorData.from_numpy_sparse(np.ascontiguousarray(negative_gradient, np.float32))
