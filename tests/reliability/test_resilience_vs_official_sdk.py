"""The resilience rules tinker_ref took from the official SDK 0.38, run side by side with the SDK
on the same faults: both clients must come through, and end where a fault-free run ends.

- A 401 `invalid_token` (the service rejected a JWT before its expiry) on a submission and on a
  poll, and a 402 billing pause of 8 s, during a custom-loss training run in JWT mode: both
  clients exchange their key for a new JWT and replay once, wait the pause out, and end with the
  same metrics, probe logprobs and weights as tinker_ref's fault-free run.
- Nine 429s to a sample submission (tinker_ref used to give up after 8 retries), then a `with`
  block that raises: both clients back off and sample the same tokens, and both report the
  session as "errored".
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mock_server.embedded import serve
from mock_server.faults import FaultPlan
from tests.support.scenario_run import run_client_scenario
from tests.support.sdk_venv import ensure_sdk_venv
from tests.support.server_state import server_view

PROBE = Path(__file__).parents[1] / "support" / "resilience_probe.py"
JWT = {"pjwt_auth_enabled": True}
AUTH_AND_BILLING = FaultPlan.from_json(
    {
        "rules": [
            {"endpoint": "forward_backward", "kind": "status", "status": 401, "nth": 2},
            {"endpoint": "retrieve_future", "kind": "status", "status": 401, "nth": 5},
            {"endpoint": "optim_step", "nth": 2, "kind": "outage", "status": 402, "seconds": 8},
        ]
    }
)
RATE_LIMITED_SAMPLES = FaultPlan.from_json(
    {"rules": [{"endpoint": "asample", "kind": "status", "status": 429, "times": 9}]}
)


def training_run(python: Path | str, sdk: str, plan: FaultPlan | None) -> dict[str, Any]:
    with serve(seed=0, client_config_overrides=JWT, fault_plan=plan) as mock:
        result = run_client_scenario(python, sdk, "http", mock.url)
        result.update(server_view(mock, result["model_id"]))
    return result


@pytest.mark.sdk
@pytest.mark.timeout(400)
def test_both_clients_replay_a_rejected_jwt_and_wait_out_a_billing_pause() -> None:
    official = ensure_sdk_venv("0.38.0")
    runs = [
        (sys.executable, "tinker_ref", None),
        (sys.executable, "tinker_ref", AUTH_AND_BILLING),
        (official, "official", AUTH_AND_BILLING),
    ]
    with ThreadPoolExecutor(len(runs)) as pool:
        clean, ours, theirs = pool.map(lambda run: training_run(*run), runs)
    for faulted in (ours, theirs):
        assert faulted["metrics"] == clean["metrics"]
        assert faulted["probe_logprobs"] == clean["probe_logprobs"]
        assert faulted["digest"] == clean["digest"]
        records = faulted["records"]
        rejected = [r for r in records if r["status"] == 401]
        assert len(rejected) == 2
        for record in rejected:  # each was replayed: the next request to it was answered
            later = [
                r for r in records[record["index"] + 1 :] if r["endpoint"] == record["endpoint"]
            ]
            assert later[0]["status"] == 200
        exchanges = [r for r in records if r["endpoint"].endswith("/auth/token")]
        assert len(exchanges) == 3  # the first JWT, then one new JWT per rejection
        assert len([r for r in records if r["status"] == 402]) >= 2  # paused, tried again


def probe_run(python: Path | str, sdk: str, transport: str) -> dict[str, Any]:
    with serve(grpc=True, seed=0, fault_plan=RATE_LIMITED_SAMPLES) as mock:
        address = mock.grpc_target if transport == "grpc" else mock.url
        result = run_client_scenario(python, sdk, transport, address, script=PROBE)
        records = mock.service.records.records()
    result["sample_statuses"] = [r.status for r in records if r.endpoint.lower().endswith("sample")]
    result["finish_reasons"] = [
        r.body["reason"] if isinstance(r.body["reason"], str) else r.body["reason"]["type"]
        for r in records
        if r.endpoint.endswith(("/finish", "/FinishSession")) and isinstance(r.body, dict)
    ]
    return result


@pytest.mark.sdk
@pytest.mark.timeout(300)
def test_both_clients_sample_through_429s_and_report_a_failed_with_block_as_errored() -> None:
    official = ensure_sdk_venv("0.38.0")
    runs = [
        (official, "official", "http"),
        (sys.executable, "tinker_ref", "http"),
        (sys.executable, "tinker_ref", "grpc"),
    ]
    with ThreadPoolExecutor(len(runs)) as pool:
        results = list(pool.map(lambda run: probe_run(*run), runs))
    theirs = results[0]
    assert len(theirs["tokens"]) == 4
    for result in results:
        assert result["tokens"] == theirs["tokens"]
        assert result["sample_statuses"] == [429] * 9 + [200]
        assert result["finish_reasons"] == ["errored"]
