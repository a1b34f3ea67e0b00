"""SDK 0.38's newer surface through the official SDK and through tinker_ref: the same requests.

`tests/support/surface_scenario.py` is one script run by both clients (only the import
differs): a server-side custom loss, checkpoints with TTL/metadata/overwrite, an external
export, the REST API (training runs, checkpoints, TTL, publish, delete, sessions, project,
copies, weights info, samplers, external URLs, billing, audit), every sampling option the mock
serves, inflight samplers, and the newest features the mock refuses (Dimuon, `stable_reinforce`).
Each client gets a fresh mock with the same seed that runs custom losses server-side and injects
the same faults (a 503 on the first `save_weights`, a 429 with Retry-After on the first
`GET checkpoints`, a 500 on the first `copy_weights`); the server's record of what each client
sent (endpoint, method, query, seq_id, decoded body, status) must be identical, and so must
what the clients returned (spec WIRE-15, WIRE-19, WIRE-21).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mock_server.embedded import serve
from mock_server.faults import FaultPlan, FaultRule
from tests.support.server_state import recorded_requests
from tests.support.subprocesses import run_json

SCENARIO = Path(__file__).resolve().parents[1] / "support" / "surface_scenario.py"
# Polls, heartbeats, telemetry, dynamic config: their number depends on timing, not on calls.
TIMING_ENDPOINTS = {
    "/api/v1/retrieve_future",
    "/api/v1/session_heartbeat",
    "/api/v1/telemetry",
    "/api/v1/client/dynamic_config",
}
FAULTS = FaultPlan(
    rules=(
        FaultRule(endpoint="save_weights", kind="status", status=503),
        FaultRule(endpoint="checkpoints", kind="status", status=429, retry_after=0.2),
        FaultRule(endpoint="copy_weights", kind="status", status=500),
    )
)
ENVIRONMENT = {"TINKER_TAGS": "surface", "TINKER_PROJECT_ID": "proj-surface"}


def run_surface_scenario(python: Path | str, sdk: str) -> dict[str, Any]:
    with serve(
        seed=0,
        record_tensors=True,
        client_config_overrides={"custom_loss_server_side": True},
        fault_plan=FAULTS,
    ) as mock:
        output = run_json(
            [python, SCENARIO, sdk, mock.url],
            timeout=300,
            env={**os.environ, "TINKER_TELEMETRY": "0", **ENVIRONMENT},
        )
        return {"output": output, "records": recorded_requests(mock)}


@pytest.fixture(scope="module")
def official_run(official_sdk_38: Path) -> dict[str, Any]:
    return run_surface_scenario(official_sdk_38, "official")


@pytest.fixture(scope="module")
def reference_run() -> dict[str, Any]:
    return run_surface_scenario(sys.executable, "tinker_ref")


def operations(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "method": record["method"],
            "endpoint": record["endpoint"],
            "query": record.get("extra", {}).get("query"),
            "fault": record.get("extra", {}).get("fault"),
            "seq_id": record["seq_id"],
            "body": record["body"],
            "content_type": record["headers"].get("content-type"),
            "status": record["status"],
        }
        for record in run["records"]
        if record["endpoint"] not in TIMING_ENDPOINTS
    ]


@pytest.mark.spec("WIRE-15", "WIRE-19", "WIRE-21")
@pytest.mark.sdk
def test_the_server_records_the_same_requests_for_the_new_surface(
    official_run: dict[str, Any], reference_run: dict[str, Any]
) -> None:
    official, reference = operations(official_run), operations(reference_run)
    assert [(op["method"], op["endpoint"]) for op in reference] == [
        (op["method"], op["endpoint"]) for op in official
    ]
    for ours, theirs in zip(reference, official, strict=True):
        assert ours == theirs
    endpoints = {op["endpoint"].removeprefix("/api/v1/").split("/")[0] for op in official}
    assert {
        "create_custom_loss",
        "save_weights_external",
        "training_runs",
        "checkpoints",
        "sessions",
        "copy_weights",
        "weights_info",
        "samplers",
        "billing",
        "audit",
        "asample",
    } <= endpoints
    faulted = [op for op in official if op["fault"] is not None]
    assert [op["status"] for op in faulted] == [503, 429, 500]  # each retried, identically


@pytest.mark.spec("WIRE-15", "WIRE-20", "SMP-9")
@pytest.mark.sdk
def test_both_clients_return_the_same_and_refuse_the_same(
    official_run: dict[str, Any], reference_run: dict[str, Any]
) -> None:
    ours, theirs = reference_run["output"], official_run["output"]
    assert ours == theirs
    assert theirs["loss_handle"] == ["weighted_nll", True]  # uploaded: runs on the server
    assert theirs["inflight_adopted"] is True
    assert theirs["dimuon_model"].endswith(": 422")
    assert theirs["stable_reinforce"].endswith(": 422")
    assert theirs["deleted_again"] == "NotFoundError: 404"
