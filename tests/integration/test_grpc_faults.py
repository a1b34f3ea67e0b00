"""Fault injection over gRPC (mock_server/grpc/server.py): every fault kind, through tinker_ref.

Each kind is put on a short run (create a model, two forward_backward + optim_step steps, a
probe forward) over gRPC; the run must end exactly like a fault-free one: the same probe
logprobs, weights and Adam state (digest), the same executed ops (none twice, none lost) and
one request_id per (model_id, seq_id). On the wire: a `status` fault is the status's gRPC code
with the `tinker-http-status` trailer, a dropped answer is a bare UNAVAILABLE, and a `pending`
poll is held no longer than the call's deadline allows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import grpc
import pytest

import tinker_ref
from mock_server.embedded import serve
from mock_server.faults import FaultPlan
from tests.support.server_state import server_view
from tests.support.training import datum
from tinker_ref._proto.tinker_ref.training.v1 import training_pb2 as pb
from tinker_ref._proto.tinker_ref.training.v1.training_pb2_grpc import TrainingServiceStub
from tinker_ref.types import AdamParams

MODEL = "tinker-ref/tiny-bytes"
KEY = "tml-grpc-faults"


TRAIN = [datum(b"the cat sat"), datum(b"on the mat")]
PROBE = [datum(b"a dog ran far")]


def run(plan: FaultPlan | None) -> dict[str, Any]:
    """The run over gRPC against a fresh mock with `plan`; its result and the server's view."""
    with serve(grpc=True, seed=0, fault_plan=plan) as mock:
        client = tinker_ref.ServiceClient(base_url=mock.grpc_target, api_key=KEY, transport="grpc")
        try:
            training = client.create_lora_training_client(base_model=MODEL, rank=4, seed=7)
            training = training.result(timeout=60)
            for _ in range(2):
                fb = training.forward_backward(TRAIN, "cross_entropy")
                step = training.optim_step(AdamParams(learning_rate=2e-2))
                fb.result(timeout=60)
                step.result(timeout=60)
            probe = training.forward(PROBE, "cross_entropy").result(timeout=60)
        finally:
            client.close()
        view = server_view(mock, training.model_id)
    view["probe"] = [out["logprobs"].tolist() for out in probe.loss_fn_outputs]
    return view


@pytest.fixture(scope="module")
def clean_run() -> dict[str, Any]:
    return run(None)


KINDS = {
    "status-408-create-model": {"endpoint": "create_model", "kind": "status", "status": 408},
    "status-503-forward-backward": {"endpoint": "forward_backward", "kind": "status"},
    "status-429-retry-after-optim-step": {
        "endpoint": "optim_step",
        "kind": "status",
        "status": 429,
        "retry_after": 1,
    },
    "status-500-retrieve-future": {
        "endpoint": "retrieve_future",
        "kind": "status",
        "status": 500,
        "nth": 2,
    },
    "drop-forward-backward": {"endpoint": "forward_backward", "kind": "drop_after_apply", "nth": 2},
    "drop-optim-step": {"endpoint": "optim_step", "kind": "drop_after_apply"},
    "truncate-forward-backward": {"endpoint": "forward_backward", "kind": "truncate_after_apply"},
    "truncate-retrieve-future": {
        "endpoint": "retrieve_future",
        "kind": "truncate_after_apply",
        "nth": 3,
    },
    "pending-retrieve-future": {
        "endpoint": "retrieve_future",
        "kind": "pending",
        "seconds": 1,
        "nth": 2,
        "times": 2,
    },
    "delay-forward-backward": {"endpoint": "forward_backward", "kind": "delay", "seconds": 0.5},
}


@pytest.mark.spec("DET-5", "WIRE-16")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("rule", KINDS.values(), ids=KINDS.keys())
def test_each_fault_kind_over_grpc_ends_bit_identical_with_each_op_applied_once(
    rule: dict[str, Any], clean_run: dict[str, Any]
) -> None:
    plan = FaultPlan.from_json({"rules": [rule]})
    faulted = run(plan)
    records = faulted["records"]
    fired = [r for r in records if "fault" in r.get("extra", {})]
    assert [r["extra"]["fault"] for r in fired] == [plan.rules[0].describe()] * plan.rules[0].times
    assert faulted["probe"] == clean_run["probe"]  # bit for bit
    assert faulted["digest"] == clean_run["digest"]  # weights and Adam state
    assert faulted["executed"] == clean_run["executed"]  # no op ran twice, none was lost
    request_ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for record in records:
        body = record["body"]
        if record["seq_id"] is not None and record["request_id"] and isinstance(body, dict):
            request_ids[(str(body.get("model_id")), record["seq_id"])].add(record["request_id"])
    assert {key: ids for key, ids in request_ids.items() if len(ids) != 1} == {}
    if rule["kind"] in ("drop_after_apply", "truncate_after_apply") and fired[0]["seq_id"]:
        # The lost answer's op was resent under the same seq_id and deduplicated.
        later = records[fired[0]["index"] + 1 :]
        resent = [r for r in later if r["endpoint"] == fired[0]["endpoint"]]
        assert resent[0]["seq_id"] == fired[0]["seq_id"]
        assert resent[0]["request_id"] == fired[0]["request_id"]


@pytest.mark.timeout(60)
def test_the_grpc_wire_of_status_drop_and_pending_faults() -> None:
    rules = [
        {"endpoint": "get_server_capabilities", "kind": "status", "status": 429, "retry_after": 1},
        {"endpoint": "get_server_capabilities", "kind": "status", "status": 408, "nth": 2},
        {"endpoint": "get_server_capabilities", "kind": "drop_after_apply", "nth": 3},
        {"endpoint": "retrieve_future", "kind": "pending", "seconds": 30},
    ]
    plan = FaultPlan.from_json({"rules": rules})
    with (
        serve(grpc=True, fault_plan=plan) as mock,
        grpc.insecure_channel(mock.grpc_target) as channel,
    ):
        stub = TrainingServiceStub(channel)
        metadata = (("x-api-key", KEY),)
        seen = []
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetServerCapabilities(
                    pb.GetServerCapabilitiesRequest(), metadata=metadata, timeout=10
                )
            error: Any = caught.value
            trailers = dict(error.trailing_metadata() or ())
            seen.append((error.code(), trailers.get("tinker-http-status")))
        assert seen == [
            (grpc.StatusCode.UNAVAILABLE, "429"),  # Overloaded's code
            (grpc.StatusCode.UNAVAILABLE, "408"),  # not DEADLINE_EXCEEDED: a server answer
            (grpc.StatusCode.UNAVAILABLE, None),  # a lost answer: no server trailers
        ]
        # A poll held 30 s is answered try_again within the call's 2 s deadline.
        started = time.monotonic()
        answer = stub.RetrieveFuture(
            pb.RetrieveFutureRequest(request_id="any"), metadata=metadata, timeout=2
        )
        assert answer.WhichOneof("outcome") == "try_again"
        assert time.monotonic() - started < 2
