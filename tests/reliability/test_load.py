"""32 concurrent sessions x 20 custom-loss steps against one server, beside a stuck client.

Each session is its own tinker_ref ServiceClient (own connection pool and event-loop thread)
in its own thread; sessions come in 4 workloads (LoRA seed and data), 8 sessions each, so an op
delivered to the wrong model or applied twice shows up as a weight difference. Every session's
final weights must equal a solo run of its workload on a fresh server, bit for bit, with zero
errors. Meanwhile a stuck client holds 16 long-polls on a future that can never finish (its
model waits for a seq_id that is never sent) and never reads them: polls hold no engine worker
(4 here) and no lane, so the 32 sessions finish as if it were not there.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import tinker_ref
from mock_server.embedded import serve
from tests.reliability.runs import (
    ADAM,
    BASE_MODEL,
    batch,
    checkpoint_dir,
    pairwise_loss,
    weights_digest,
)
from tinker_ref import types
from tinker_ref.codec import encode_forward_backward_request

SESSIONS = 32
STEPS = 20
WORKLOADS = 4
HELD_POLLS = 16


def workload_steps(workload: int) -> list[list[types.Datum]]:
    return [batch(100 * workload + step, size=2, length=8) for step in range(STEPS)]


def run_session(url: str, workload: int, name: str, data_dir: Path) -> str:
    """One session's whole run; the digest of its final weights."""
    client = tinker_ref.ServiceClient(base_url=url, api_key=f"tml-{name}")
    try:
        training = client.create_lora_training_client(
            base_model=BASE_MODEL, rank=4, seed=1000 + workload
        ).result(timeout=120)
        for data in workload_steps(workload):
            training.forward_backward_custom(data, pairwise_loss).result(timeout=120)
            training.optim_step(ADAM).result(timeout=120)
        path = training.save_state(name).result(timeout=120).path
    finally:
        client.close()
    return weights_digest(checkpoint_dir(data_dir, path))


def _post(url: str, path: str, body: Any, timeout: float) -> Any:
    request = urllib.request.Request(
        f"{url}/api/v1/{path}",
        data=json.dumps(body).encode() if not isinstance(body, bytes) else body,
        headers={
            "X-API-Key": "tml-stuck",
            "Content-Type": "application/x-protobuf"
            if isinstance(body, bytes)
            else "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def stuck_client(url: str, stop: threading.Event) -> str:
    """A model with an op at seq_id 2 and none at 1 (it can never run), and HELD_POLLS threads
    long-polling it over and over until `stop`; returns the blocked request_id."""
    session = _post(url, "create_session", {}, 30)["session_id"]
    created = _post(
        url,
        "create_model",
        {"session_id": session, "model_seq_id": 0, "base_model": BASE_MODEL},
        30,
    )
    model = created["model_id"]
    body = encode_forward_backward_request(model, 2, batch(0), "cross_entropy")
    blocked = _post(url, "forward_backward", body, 30)["request_id"]

    def hold() -> None:
        with contextlib.suppress(OSError):  # the server went away at the end of the test
            while not stop.is_set():
                _post(url, "retrieve_future", {"request_id": blocked}, 120)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(HELD_POLLS)]
    for thread in threads:
        thread.start()
    return blocked


@pytest.mark.spec("SEQ-2")
@pytest.mark.timeout(600)
def test_32_sessions_x_20_custom_loss_steps_equal_solo_runs_beside_a_stuck_client(
    tmp_path: Path,
) -> None:
    solo: dict[int, str] = {}
    for workload in range(WORKLOADS):
        with serve(data_dir=tmp_path / f"solo-{workload}") as server:
            solo[workload] = run_session(
                server.url, workload, f"solo-{workload}", tmp_path / f"solo-{workload}"
            )
    assert len(set(solo.values())) == WORKLOADS  # the workloads really differ

    data_dir = tmp_path / "shared"
    with serve(data_dir=data_dir, worker_threads=4, seq_gap_timeout_seconds=300) as server:
        stop = threading.Event()
        blocked = stuck_client(server.url, stop)
        started = time.monotonic()
        with ThreadPoolExecutor(SESSIONS) as pool:
            futures = [
                pool.submit(run_session, server.url, i % WORKLOADS, f"s{i}", data_dir)
                for i in range(SESSIONS)
            ]
            digests = [future.result(timeout=550) for future in futures]  # raises any error
        print(f"\nload: {SESSIONS}x{STEPS} steps in {time.monotonic() - started:.1f} s")
        stop.set()
        records = server.service.records.records()
        polls = [r for r in records if r.request_id == blocked and r.endpoint.endswith("future")]
        assert len(polls) >= HELD_POLLS  # the stuck client's polls were held all along
        assert not server.service.ctx.futures.get(blocked).finished
        errors = [r for r in records if r.status and r.status >= 400]
    assert digests == [solo[i % WORKLOADS] for i in range(SESSIONS)]
    assert errors == []
