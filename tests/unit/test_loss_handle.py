"""`create_custom_loss`'s tracing rules (tinker_ref/loss_handle.py), as SDK 0.38 enforces them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tinker_ref import types
from tinker_ref.loss_handle import check_loss_inputs, encode_graph, run_loss_handle, trace_loss

pytestmark = pytest.mark.spec("WIRE-21")


def weighted(logprobs: torch.Tensor, weights: torch.Tensor) -> Any:
    loss = -(logprobs * weights).sum()
    return loss, {"custom/nll:sum": loss, "custom/w:mean": weights.sum()}


def test_a_traced_loss_runs_per_datum_and_reduces_metrics_by_suffix() -> None:
    handle = trace_loss(weighted, {"logprobs": 1, "weights": 1}, "sess")
    assert handle.input_names == ("weights",) and handle.loss_id is None
    data = [
        types.Datum(
            model_input=types.ModelInput.from_ints([1, 2, 3]),
            loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 0.5, 0.0]},
        ),
        types.Datum(
            model_input=types.ModelInput.from_ints([5]),
            loss_fn_inputs={"target_tokens": [6], "weights": [2.0]},
        ),
    ]
    check_loss_inputs(handle, data)
    logprobs = [torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-0.5])]
    loss, metrics = run_loss_handle(handle, data, logprobs)
    assert float(loss) == 1.0 + 1.0 + 1.0
    assert metrics == {"custom/nll:sum": 3.0, "custom/w:mean": (1.5 + 2.0) / 2}
    nodes = encode_graph(handle).to_json()["nodes"]
    assert [n["op"] for n in nodes][:2] == ["placeholder", "placeholder"]
    assert nodes[-1]["op"] == "output"
    assert any(n["target"] == "operator.mul" for n in nodes)  # `_operator` named publicly


def _inf_loss(logprobs: torch.Tensor) -> Any:
    loss = torch.clamp(logprobs, min=-math.inf).sum()
    return loss, {}


def test_non_finite_constants_travel_as_tagged_floats() -> None:
    nodes = encode_graph(trace_loss(_inf_loss, {"logprobs": 1}, "s")).to_json()["nodes"]
    assert {"float": "-inf"} in [v for n in nodes for v in n["kwargs"].values()]


def first_not_logprobs(weights: torch.Tensor) -> Any:
    return weights.sum(), {}


def leaves_torch(logprobs: torch.Tensor) -> Any:
    return logprobs.sum(), {"custom/x:sum": logprobs.sum().item()}


def bad_metric_name(logprobs: torch.Tensor) -> Any:
    return logprobs.sum(), {"Loss": logprobs.sum()}


CAPTURED = torch.ones(3)


def captures(logprobs: torch.Tensor) -> Any:
    return (logprobs * CAPTURED).sum(), {}


@pytest.mark.parametrize(
    ("fn", "ranks", "message"),
    [
        (first_not_logprobs, {"weights": 1}, "logprobs as its first parameter"),
        (leaves_torch, {"logprobs": 1}, "leaves torch|cannot be traced"),
        (bad_metric_name, {"logprobs": 1}, "custom/<name>:sum"),
        (weighted, {"logprobs": 1}, "input_ranks must give a rank"),
        (weighted, {"logprobs": 0, "weights": 1}, "rank 1"),
    ],
)
def test_losses_the_sdk_refuses_are_refused_with_its_reason(
    fn: Any, ranks: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        trace_loss(fn, ranks, "s")


def test_a_captured_tensor_is_refused() -> None:
    with pytest.raises(ValueError, match=r"captures a tensor|cannot be traced"):
        trace_loss(captures, {"logprobs": 1}, "s")


def test_data_must_carry_every_input_at_its_declared_rank() -> None:
    handle = trace_loss(weighted, {"logprobs": 1, "weights": 1}, "s")
    missing = types.Datum(
        model_input=types.ModelInput.from_ints([1]), loss_fn_inputs={"target_tokens": [2]}
    )
    with pytest.raises(ValueError, match=r"no loss_fn_inputs\['weights'\]"):
        check_loss_inputs(handle, [missing])
