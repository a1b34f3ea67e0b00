"""tinker_ref (HTTP and gRPC) against the official SDK 0.38, on the same custom-loss run.

`tests/support/client_scenario.py` is one script run by both clients (only the import differs):
a DPO-style pairwise loss (negative weights for rejected completions), a [T,K] distribution loss
and a built-in cross-entropy step, each with a pipelined `optim_step`. Each client gets a fresh
mock server with the same seed that records full request bodies; the assertions compare what
the *server* received and what the runs ended with.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from mock_server.embedded import serve
from tests.support.scenario_run import run_client_scenario
from tests.support.server_state import recorded_requests

# Endpoints whose number and timing depend on how fast results arrive, not on the calls made:
# polls, heartbeats and telemetry; and `client/dynamic_config`, which the SDK fetches for sample
# cancellation only — a feature tinker_ref does not implement (it never cancels a sample).
TIMING_ENDPOINTS = {
    "/api/v1/retrieve_future",
    "/api/v1/session_heartbeat",
    "/api/v1/telemetry",
    "/api/v1/client/dynamic_config",
}


def run_scenario(python: Path | str, sdk: str, transport: str = "http") -> dict[str, Any]:
    """Run the scenario against a fresh recording mock; its output plus the server's record."""
    with serve(seed=0, record_tensors=True, grpc=transport == "grpc") as mock:
        address = mock.url if transport == "http" else mock.grpc_target
        result = run_client_scenario(python, sdk, transport, address)
        result["records"] = recorded_requests(mock)
    return result


@pytest.fixture(scope="module")
def official_run(official_sdk_38: Path) -> dict[str, Any]:
    return run_scenario(official_sdk_38, "official")


@pytest.fixture(scope="module")
def reference_http_run() -> dict[str, Any]:
    return run_scenario(sys.executable, "tinker_ref")


@pytest.fixture(scope="module")
def reference_grpc_run() -> dict[str, Any]:
    return run_scenario(sys.executable, "tinker_ref", "grpc")


def operations(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded requests that are operations, without per-request noise (arrival time and
    index, idempotency keys, user agents): endpoint, seq_id, decoded body, content headers."""
    return [
        {
            "method": record["method"],
            "endpoint": record["endpoint"],
            "seq_id": record["seq_id"],
            "body": record["body"],
            "content_type": record["headers"].get("content-type"),
            "content_encoding": record["headers"].get("content-encoding"),
            "status": record["status"],
        }
        for record in run["records"]
        if record["endpoint"] not in TIMING_ENDPOINTS
    ]


@pytest.mark.spec("WIRE-15", "WIRE-8", "CL-10", "SEQ-1")
@pytest.mark.sdk
def test_the_server_records_the_same_requests_from_both_clients(
    official_run: dict[str, Any], reference_http_run: dict[str, Any]
) -> None:
    official, reference = operations(official_run), operations(reference_http_run)
    assert [op["endpoint"] for op in reference] == [op["endpoint"] for op in official]
    # 16 seq_ids: forward, 4 x (custom forward, custom backward, optim_step), built-in fb + optim,
    # probe forward; the custom-loss steps' optim_steps were submitted before their results.
    seq_ids = [op["seq_id"] for op in official if op["seq_id"] is not None]
    assert seq_ids == list(range(1, 17))
    for ours, theirs in zip(reference, official, strict=True):
        # Bodies include every token id and loss_fn_inputs value (the weights = -dloss/dlogprobs
        # of the backward passes) and the body size: the protobuf bodies are byte-for-byte equal.
        assert ours == theirs


@pytest.mark.spec("WIRE-15", "WIRE-16", "DET-1")
@pytest.mark.sdk
def test_same_run_ends_bit_identical_through_official_http_ours_http_and_ours_grpc(
    official_run: dict[str, Any],
    reference_http_run: dict[str, Any],
    reference_grpc_run: dict[str, Any],
) -> None:
    for ours in (reference_http_run, reference_grpc_run):
        assert ours["model_id"] == official_run["model_id"]
        assert ours["metrics"] == official_run["metrics"]  # loss:sum and user metrics
        assert ours["probe_logprobs"] == official_run["probe_logprobs"]  # i.e. the weights
    dpo_losses = [step["loss:sum"] for step in official_run["metrics"][:3]]
    assert dpo_losses[0] > dpo_losses[1] > dpo_losses[2]  # it trained


@pytest.mark.spec("CL-14")
@pytest.mark.sdk
def test_reference_client_returns_str_keys_and_python_floats_where_the_sdk_passes_through(
    official_run: dict[str, Any], reference_http_run: dict[str, Any]
) -> None:
    first_ours = reference_http_run["metric_types"][0]
    first_theirs = official_run["metric_types"][0]
    assert set(first_ours.values()) == {"str:float"}
    # SDK 0.38 inserts user metrics unchanged (spec CL-14): the int key and the tensor value stay.
    assert first_theirs["7"] == "int:Tensor"
    assert first_theirs["margin"] == "str:Tensor"
    assert first_theirs["loss:sum"] == "str:float"
