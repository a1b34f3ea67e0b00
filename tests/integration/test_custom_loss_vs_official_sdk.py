"""Differential test: our custom-loss interpreter against the official SDK 0.38's own path.

`tests/support/official_custom_loss_driver.py` runs in the cached `tinker==0.38.0` venv: it
traces realistic losses with the SDK's tracer, encodes them exactly as `create_custom_loss`
POSTs them, and runs them client-side (`run_loss_handle`) on the inputs we send. Here we
compile the same request with `mock_server.engine.custom_loss` and run it datum by datum the way the
engine does (`forward_backward_per_datum`: losses summed left to right from zero, metrics summed
as floats, ":mean" divided by the datum count). Both sides make the same float32 torch calls in
the same order, so loss, metrics and dLoss/dlogprobs must agree bit for bit (compared as hex).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from mock_server.engine.custom_loss import CompiledCustomLoss, CustomLossError, compile_custom_loss

pytestmark = [pytest.mark.spec("LOSS-15"), pytest.mark.sdk]

DRIVER = Path(__file__).resolve().parents[1] / "support" / "official_custom_loss_driver.py"
DATUM_LENGTHS = (5, 1, 8)  # tokens per datum; a 1-token datum catches shape assumptions
K = 4  # candidates per token for the [T, K] losses


def encode_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    values = tensor.reshape(-1).tolist()
    if tensor.dtype.is_floating_point:
        values = [float(v).hex() for v in values]
    dtype = {torch.float32: "float32", torch.int64: "int64"}[tensor.dtype]
    return {"dtype": dtype, "shape": list(tensor.shape), "values": values}


def decode_tensor(encoded: dict[str, Any]) -> torch.Tensor:
    dtype = {"float32": torch.float32, "int64": torch.int64}[encoded["dtype"]]
    values = encoded["values"]
    if dtype.is_floating_point:
        values = [float.fromhex(v) for v in values]
    return torch.tensor(values, dtype=dtype).reshape(encoded["shape"])


def make_datum(loss: str, length: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """logprobs and inputs for one datum of `loss`, float32 except int64 indices."""

    def logprobs(*shape: int) -> torch.Tensor:
        return -torch.rand(shape, generator=g) * 4.0  # in (-4, 0]

    def uniform(*shape: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
        return torch.rand(shape, generator=g) * (high - low) + low

    mask = (torch.rand(length, generator=g) > 0.3).float()
    if loss == "neg_ll":
        return {"logprobs": logprobs(length), "weights": mask}
    if loss == "dpo":
        sign = torch.tensor(1.0 if torch.rand((), generator=g) > 0.5 else -1.0)
        return {
            "logprobs": logprobs(length),
            "ref_logprobs": logprobs(length),
            "weights": mask,
            "sign": sign,
        }
    if loss == "kl_to_target":
        return {
            "logprobs": logprobs(length, K),
            "target_logits": uniform(length, K, low=-3.0, high=3.0),
            "weights": mask,
        }
    if loss == "ppo_clip":
        current = logprobs(length)
        return {
            "logprobs": current,
            "old_logprobs": current + uniform(length, low=-0.4, high=0.4),  # some ratios clip
            "advantages": uniform(length),
            "mask": mask,
        }
    if loss == "gather_ce":
        return {
            "logprobs": logprobs(length, K),
            "target_index": torch.randint(0, K, (length,), generator=g),
            "weights": mask,
        }
    raise AssertionError(loss)


def run_driver(python: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [str(python), str(DRIVER)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, f"driver failed:\n{completed.stderr[-5000:]}"
    reply = json.loads(completed.stdout)
    assert reply["sdk_version"] == "0.38.0"
    results: list[dict[str, Any]] = reply["results"]
    return results


def compile_request(request: dict[str, Any]) -> CompiledCustomLoss:
    # The body goes over HTTP as JSON; decode it from text as the server will.
    body = json.loads(json.dumps(request))
    return compile_custom_loss(body["name"], body["inputs"], body["graph"])


RUNNABLE = ("neg_ll", "dpo", "kl_to_target", "ppo_clip", "gather_ce")
# Losses the SDK traces and accepts on the client, which the server must refuse.
REFUSED = (
    "exp_out",
    "relu_inplace",
    "int_power",
    "draws_noise",
    "reads_uninitialised",
    "int_metric",
)


@pytest.fixture(scope="module")
def official_runs(official_sdk_38: Path) -> dict[str, tuple[list[dict[str, Any]], Any]]:
    """Per loss: (our datums as tensors, the driver's result), from one driver process."""
    g = torch.Generator().manual_seed(20260509)
    datums = {loss: [make_datum(loss, length, g) for length in DATUM_LENGTHS] for loss in RUNNABLE}
    cases = [
        {
            "loss": loss,
            "data": [
                {
                    "logprobs": encode_tensor(datum["logprobs"]),
                    "inputs": {k: encode_tensor(v) for k, v in datum.items() if k != "logprobs"},
                }
                for datum in datums[loss]
            ],
        }
        for loss in RUNNABLE
    ] + [{"loss": loss, "run": False} for loss in REFUSED]
    results = run_driver(official_sdk_38, cases)
    return {result["loss"]: (datums.get(result["loss"], []), result) for result in results}


def run_like_the_engine(
    compiled: CompiledCustomLoss, datums: list[dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, dict[str, float], list[torch.Tensor]]:
    """Sum and reduce exactly as TrainingModel._run does around `as_datum_loss()`."""
    datum_loss = compiled.as_datum_loss()
    leaves = [datum["logprobs"].clone().requires_grad_(True) for datum in datums]
    total = torch.zeros(())
    sums: dict[str, float] = {}
    for index, (datum, logprobs) in enumerate(zip(datums, leaves, strict=True)):
        inputs = {"target_tokens": torch.zeros(logprobs.shape, dtype=torch.int64)} | {
            k: v for k, v in datum.items() if k != "logprobs"
        }
        compiled.check_datum(index, inputs)
        result = datum_loss(logprobs, inputs)
        total = total + result.loss
        for key, value in result.metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
    total.backward()  # type: ignore[no-untyped-call]
    metrics = {k: v / len(datums) if k.endswith(":mean") else v for k, v in sums.items()}
    grads = [leaf.grad for leaf in leaves]
    assert all(grad is not None for grad in grads)
    return total.detach(), metrics, [grad for grad in grads if grad is not None]


@pytest.mark.parametrize("loss", RUNNABLE)
def test_interpreted_loss_metrics_and_gradient_equal_the_sdk_bit_for_bit(
    loss: str, official_runs: dict[str, tuple[list[dict[str, torch.Tensor]], Any]]
) -> None:
    datums, official = official_runs[loss]
    compiled = compile_request(official["request"])
    total, metrics, grads = run_like_the_engine(compiled, datums)

    assert float(total).hex() == official["total_loss"]
    assert {k: v.hex() for k, v in metrics.items()} == official["metrics"]
    assert len(grads) == len(official["grads"])
    for ours, theirs in zip(grads, official["grads"], strict=True):
        expected = decode_tensor(theirs)
        assert ours.shape == expected.shape
        assert [float(v).hex() for v in ours.reshape(-1).tolist()] == theirs["values"]


def test_declared_inputs_match_what_the_sdk_sends(
    official_runs: dict[str, tuple[list[dict[str, torch.Tensor]], Any]],
) -> None:
    _, official = official_runs["dpo"]
    compiled = compile_request(official["request"])
    assert official["request"]["inputs"][0] == {"name": "logprobs", "rank": 1}
    assert compiled.input_names == ("ref_logprobs", "weights", "sign")
    assert compiled.input_ranks == {"logprobs": 1, "ref_logprobs": 1, "weights": 1, "sign": 0}


@pytest.mark.parametrize(
    ("loss", "field", "words"),
    [
        ("exp_out", "graph.nodes[2].kwargs", "'out'"),
        ("relu_inplace", "graph.nodes[3].kwargs.inplace", "in-place"),
        ("draws_noise", "graph.nodes[2].target", "'torch.rand_like' is not in the allow-list"),
        (
            "reads_uninitialised",
            "graph.nodes[2].target",
            "'torch.empty_like' is not in the allow-list",
        ),
    ],
)
def test_graphs_the_sdk_accepts_that_write_draw_noise_or_read_garbage_are_refused_at_upload(
    loss: str,
    field: str,
    words: str,
    official_runs: dict[str, tuple[list[dict[str, torch.Tensor]], Any]],
) -> None:
    _, official = official_runs[loss]
    with pytest.raises(CustomLossError) as caught:
        compile_request(official["request"])
    assert caught.value.field == field
    assert words in caught.value.message


def test_an_sdk_accepted_integer_power_blowup_is_refused_before_it_runs(
    official_runs: dict[str, tuple[list[dict[str, torch.Tensor]], Any]],
) -> None:
    _, official = official_runs["int_power"]
    compiled = compile_request(official["request"])  # legal structure; the cost is in values
    with pytest.raises(CustomLossError) as caught:
        compiled(torch.zeros(3), {"weights": torch.ones(3)})
    assert "node 'pow_1' (operator.pow)" in caught.value.message
    assert "OverflowError" in caught.value.message


def test_an_sdk_accepted_python_int_metric_is_refused_when_it_runs(
    official_runs: dict[str, tuple[list[dict[str, torch.Tensor]], Any]],
) -> None:
    _, official = official_runs["int_metric"]
    compiled = compile_request(official["request"])
    with pytest.raises(CustomLossError) as caught:
        compiled(torch.zeros(3), {"weights": torch.ones(3)})
    assert caught.value.field == "graph.output.metrics['custom/tokens:sum']"
    assert caught.value.message == "must be a one-element tensor, got int"
