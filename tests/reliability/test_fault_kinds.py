"""Every fault kind of mock_server/faults.py, survived by the official SDK 0.38 and by tinker_ref.

The run is tests/support/client_scenario.py (custom DPO-style and [T,K] losses, pipelined
optim_steps, a built-in step, a probe forward), with chunks of 2 datums so one call is several
concurrent POSTs. One fault plan puts every kind on it: 503/500/408/429 with and without
Retry-After on POSTs and on polls, responses dropped after the op was applied, responses cut
mid-body (on a POST and on a protobuf result), a held poll, and a POST held 1.5 s so later chunks
overtake it. Each client's faulted run must end exactly like a fault-free run: same metrics,
same probe logprobs, same weights and Adam state (digest), the same number of executed ops
(the model's history), and per (model_id, seq_id) one request_id only, all from the server's
own record. The official SDK's fault-free run equals tinker_ref's
(tests/integration/test_client_vs_official_sdk.py), so both are compared with tinker_ref's.

A poll held past the client's poll timeout: tinker_ref with a 1 s poll timeout (its
`HttpOptions`); the SDK's 45 s is fixed in its code, so that case would cost 45 s per run and
is left to tinker_ref here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import tinker_ref
from mock_server.embedded import serve
from mock_server.faults import FaultPlan
from tests.reliability.runs import (
    BASE_MODEL,
    LORA_SEED,
    batch,
    digest_tensors,
    reference_digest,
    train_steps,
)
from tests.support.scenario_run import run_client_scenario
from tests.support.sdk_venv import ensure_sdk_venv
from tests.support.server_state import request_ids_per_seq_id, server_view
from tinker_ref.transport.http import HttpOptions, HttpTransport

CHUNKED = {"fwdbwd_max_chunk_len": 2}  # 6 DPO datums -> 3 concurrent POSTs per phase

RULES: list[dict[str, Any]] = [
    {"endpoint": "create_session", "kind": "status", "status": 503, "retry_after": 1},
    {"endpoint": "create_model", "kind": "status", "status": 408},
    {"endpoint": "forward_backward", "kind": "drop_after_apply", "nth": 2},
    {"endpoint": "forward_backward", "kind": "status", "status": 500, "nth": 3},
    {"endpoint": "forward_backward", "kind": "delay", "seconds": 1.5, "nth": 5},
    {"endpoint": "forward_backward", "kind": "truncate_after_apply", "nth": 8},
    {"endpoint": "forward_backward", "kind": "status", "status": 429, "retry_after": 1, "nth": 11},
    {"endpoint": "forward_backward", "kind": "status", "status": 429, "nth": 14},
    {"endpoint": "optim_step", "kind": "status", "status": 503, "nth": 1},
    {"endpoint": "optim_step", "kind": "drop_after_apply", "nth": 2},
    {"endpoint": "optim_step", "kind": "truncate_after_apply", "nth": 3},
    {"endpoint": "retrieve_future", "kind": "status", "status": 500, "nth": 4},
    {"endpoint": "retrieve_future", "kind": "status", "status": 408, "nth": 7},
    {"endpoint": "retrieve_future", "kind": "status", "status": 429, "retry_after": 1, "nth": 10},
    {"endpoint": "retrieve_future", "kind": "drop_after_apply", "nth": 13},
    {"endpoint": "retrieve_future", "kind": "truncate_after_apply", "nth": 16},
    {"endpoint": "retrieve_future", "kind": "pending", "seconds": 2, "nth": 19},
]
PLAN = FaultPlan.from_json({"rules": RULES})


def run_scenario(python: Path | str, sdk: str, plan: FaultPlan | None) -> dict[str, Any]:
    """The scenario against a fresh mock (with `plan`); its output plus what the server saw."""
    with serve(seed=0, client_config_overrides=CHUNKED, fault_plan=plan) as mock:
        result = run_client_scenario(python, sdk, "http", mock.url)
        result.update(server_view(mock, result["model_id"]))
    return result


def assert_same_end_and_nothing_twice(faulted: dict[str, Any], clean: dict[str, Any]) -> None:
    fired = {
        (r["endpoint"].removeprefix("/api/v1/"), r["extra"]["fault"])
        for r in faulted["records"]
        if "fault" in r.get("extra", {})
    }
    expected = {(rule.endpoint, rule.describe()) for rule in PLAN.rules}
    assert fired == expected  # every kind was injected
    assert faulted["metrics"] == clean["metrics"]
    assert faulted["probe_logprobs"] == clean["probe_logprobs"]
    assert faulted["digest"] == clean["digest"]  # weights and Adam moments, bit for bit
    assert faulted["executed"] == clean["executed"]  # no op ran twice, none was lost
    per_seq = request_ids_per_seq_id(faulted["records"])
    assert len(per_seq) == len(clean["executed"])
    assert {key: len(ids) for key, ids in per_seq.items() if len(ids) != 1} == {}
    retried = [
        r for r in faulted["records"] if r.get("extra", {}).get("fault") == "drop_after_apply"
    ]
    assert retried  # a dropped response was retried and deduplicated, not re-applied


@pytest.fixture(scope="module")
def clean_run() -> dict[str, Any]:
    return run_scenario(sys.executable, "tinker_ref", None)


@pytest.mark.spec("DET-5", "SEQ-5", "SEQ-10", "FUT-9", "FUT-10")
@pytest.mark.timeout(300)
def test_tinker_ref_survives_every_fault_kind_with_bit_identical_weights(
    clean_run: dict[str, Any],
) -> None:
    assert_same_end_and_nothing_twice(run_scenario(sys.executable, "tinker_ref", PLAN), clean_run)


@pytest.mark.spec("DET-5", "SEQ-5")
@pytest.mark.sdk
@pytest.mark.timeout(300)
def test_the_official_sdk_survives_every_fault_kind_with_bit_identical_weights(
    clean_run: dict[str, Any],
) -> None:
    official = ensure_sdk_venv("0.38.0")
    assert_same_end_and_nothing_twice(run_scenario(official, "official", PLAN), clean_run)


@pytest.mark.spec("DET-5", "FUT-9")
@pytest.mark.timeout(120)
def test_a_poll_held_past_the_client_poll_timeout_is_retried_and_the_run_ends_identically(
    tmp_path: Path,
) -> None:
    steps = [batch(0), batch(1)]
    expected = reference_digest(steps, tmp_path)
    # Polls 2-4 are each held 2.5 s; the client gives up on a poll after 1 s and polls again.
    held = FaultPlan.from_json(
        {
            "rules": [
                {"endpoint": "retrieve_future", "kind": "pending", "seconds": 2.5, "nth": 2},
                {"endpoint": "retrieve_future", "kind": "pending", "seconds": 2.5, "nth": 3},
                {"endpoint": "retrieve_future", "kind": "pending", "seconds": 2.5, "nth": 4},
            ]
        }
    )
    with serve(data_dir=tmp_path / "held", fault_plan=held) as mock:
        client = tinker_ref.ServiceClient(base_url=mock.url, api_key="tml-held")
        client.transport = HttpTransport(mock.url, "tml-held", HttpOptions(poll_timeout=1.0))
        try:
            training = client.create_lora_training_client(
                base_model=BASE_MODEL, rank=4, seed=LORA_SEED
            ).result(timeout=60)
            train_steps(training, steps)
            training.save_state("final").result(timeout=60)
            model = mock.service.ctx.registry.models[training.model_id]
            weights = mock.call(lambda: model.training.weights())  # type: ignore[union-attr]
        finally:
            client.close()
        held_polls = [r for r in mock.service.records.records() if "fault" in r.extra]
    assert len(held_polls) == 3
    assert digest_tensors(weights) == expected
