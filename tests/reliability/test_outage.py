"""A two-minute outage: the service answers 503 to every request for 120 s, then recovers, and a
tinker_ref run rides it out over HTTP and over gRPC to the very end a fault-free run reaches.

The run is tests/support/client_scenario.py (custom DPO-style and [T,K] losses with pipelined
optim_steps, a built-in step, a probe forward) in chunks of 2 datums, as a subprocess; the outage
starts at the second optim_step, so a submission, polls of three chunk futures and heartbeats all
meet it. tinker_ref used to give up after 9 attempts (38.5 s); the official SDK 0.38 gives up on
a submission after 300 s, and so does tinker_ref now (tests/unit/test_retry_policy.py).

The four runs (clean and faulted, per transport) go concurrently, each against its own mock, so
the suite pays for the outage once. Besides the bit-identical end: each op applied once, and the
traffic during the outage stays small (every request backs off to 10 s; the SDK re-polls a 5xx at
once).
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mock_server.embedded import serve
from mock_server.faults import FaultPlan
from tests.support.scenario_run import run_client_scenario
from tests.support.server_state import request_ids_per_seq_id, server_view

log = logging.getLogger(__name__)
OUTAGE_SECONDS = 120
OUTAGE = FaultPlan.from_json(
    {
        "rules": [
            {"endpoint": "optim_step", "nth": 2, "kind": "outage", "seconds": OUTAGE_SECONDS},
        ]
    }
)
CHUNKED = {"fwdbwd_max_chunk_len": 2}  # 6 DPO datums -> 3 concurrent POSTs per phase
# Requests answered 503 during the outage, at most: a request backing off at least 0.375, 0.75,
# 1.5, 3, 6, then 7.5 s each time (0.5 s -> 10 s less the most jitter) makes at most 20 tries in
# 120 s. In flight then: the optim_step's submission, the polls of the backward pass's three
# chunk futures, and a heartbeat every 10 s (13): 20 + 3 x 20 + 13 = 93, rounded up. (Measured:
# 84 over HTTP, 81 over gRPC. SDK 0.38 re-polls a 5xx at once: ~180 polls/s against the mock.)
MAX_REQUESTS_DURING_OUTAGE = 100


def scenario(transport: str, plan: FaultPlan | None) -> dict[str, Any]:
    with serve(grpc=True, seed=0, client_config_overrides=CHUNKED, fault_plan=plan) as mock:
        address = mock.grpc_target if transport == "grpc" else mock.url
        result = run_client_scenario(sys.executable, "tinker_ref", transport, address, timeout=500)
        result.update(server_view(mock, result["model_id"]))
    return result


@pytest.mark.timeout(600)
def test_a_120_second_outage_is_ridden_out_bit_identically_over_http_and_grpc() -> None:
    runs = [(t, plan) for t in ("http", "grpc") for plan in (None, OUTAGE)]
    with ThreadPoolExecutor(len(runs)) as pool:
        results = dict(zip(runs, pool.map(lambda run: scenario(*run), runs), strict=True))
    for transport in ("http", "grpc"):
        clean, faulted = results[(transport, None)], results[(transport, OUTAGE)]
        assert faulted["metrics"] == clean["metrics"]
        assert faulted["probe_logprobs"] == clean["probe_logprobs"]
        assert faulted["digest"] == clean["digest"]  # weights and Adam moments, bit for bit
        assert faulted["executed"] == clean["executed"]  # no op ran twice, none was lost
        per_seq = request_ids_per_seq_id(faulted["records"])
        assert {key: ids for key, ids in per_seq.items() if len(ids) != 1} == {}
        down = [r for r in faulted["records"] if "outage" in r.get("extra", {}).get("fault", "")]
        endpoints = {r["endpoint"].rsplit("/", 1)[-1].lower() for r in down}
        # the submission met the outage (gRPC: tinker_ref submits with RunOptimStep)
        assert {"optim_step", "runoptimstep"} & endpoints
        if transport == "http":  # so did polls (gRPC answers on the submitting stream)
            assert "retrieve_future" in endpoints
        assert len(down) <= MAX_REQUESTS_DURING_OUTAGE
        # Measured, not asserted (`-o log_cli=true --log-cli-level=INFO` shows it): how many
        # requests met the outage, and how soon after the service came back the run went on.
        back = down[0]["received_at"] + OUTAGE_SECONDS
        after = [r for r in faulted["records"] if r["received_at"] >= back]
        log.info(
            "%s: %d requests answered 503 in %d s; the first request after it came %.2f s later",
            transport,
            len(down),
            OUTAGE_SECONDS,
            after[0]["received_at"] - back,
        )
