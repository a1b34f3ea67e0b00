"""The per-model sequencer: order, buffering, dedupe before queueing, rejections, gap timeout."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from mock_server.service.errors import Conflict, Gone, InvalidArgument, ServiceError
from mock_server.service.sequencer import Sequencer

pytestmark = pytest.mark.asyncio


@dataclass(eq=False)
class RecordedOp:
    """An op that logs its seq_id when it runs (after its gate, if it has one)."""

    recorder: Recorder
    seq_id: int
    request_id: str

    async def run(self) -> None:
        gate = self.recorder.gates.get(self.seq_id)
        if gate is not None:
            await gate.wait()
        self.recorder.ran.append(self.seq_id)

    def fail(self, error: ServiceError) -> None:
        self.recorder.failed[self.seq_id] = error


class Recorder:
    """Ops that log their seq_id when they run (and optionally block until released)."""

    def __init__(self, sequencer: Sequencer, lane: str = "m") -> None:
        self.sequencer = sequencer
        self.lane = lane
        self.ran: list[int] = []
        self.failed: dict[int, ServiceError] = {}
        self.gates: dict[int, asyncio.Event] = {}

    def submit(self, seq_id: int, fingerprint: str = "fp", gate: bool = False) -> str:
        earlier = self.sequencer.check(self.lane, seq_id, fingerprint)
        if earlier is not None:
            return earlier
        if gate:
            self.gates[seq_id] = asyncio.Event()
        request_id = f"req-{seq_id}-{fingerprint}"
        self.sequencer.enqueue(self.lane, seq_id, fingerprint, RecordedOp(self, seq_id, request_id))
        return request_id


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def make(gap_timeout: float = 30.0, window: int = 4096) -> Recorder:
    sequencer = Sequencer(gap_timeout, window)
    sequencer.open_lane("m", first_seq=1)
    return Recorder(sequencer)


@pytest.mark.spec("SEQ-2", "SEQ-3")
async def test_out_of_order_arrivals_execute_in_seq_order() -> None:
    ops = make()
    sequencer = ops.sequencer
    for seq_id in (3, 2, 5, 4):
        ops.submit(seq_id)
    await settle()
    assert ops.ran == []  # seq 1 has not arrived: everything waits
    assert sequencer.buffered_seq_ids("m") == [2, 3, 4, 5]
    ops.submit(1)
    await settle()
    assert ops.ran == [1, 2, 3, 4, 5]
    assert sequencer.next_seq("m") == 6


@pytest.mark.spec("SEQ-2")
async def test_ops_of_one_lane_never_overlap() -> None:
    ops = make()
    ops.submit(1, gate=True)
    ops.submit(2)
    await settle()
    assert ops.ran == []  # 2 waits for 1 even though it is ready
    ops.gates[1].set()
    await settle()
    assert ops.ran == [1, 2]


@pytest.mark.spec("SEQ-2")
async def test_lanes_run_independently() -> None:
    sequencer = Sequencer(30.0, 4096)
    sequencer.open_lane("a", first_seq=1)
    sequencer.open_lane("b", first_seq=1)
    a, b = Recorder(sequencer, "a"), Recorder(sequencer, "b")
    a.submit(1, gate=True)
    b.submit(1)
    await settle()
    assert (a.ran, b.ran) == ([], [1])
    a.gates[1].set()
    await settle()
    assert a.ran == [1]


@pytest.mark.spec("SEQ-5")
async def test_duplicate_returns_the_original_request_id_and_runs_once() -> None:
    ops = make()
    first = ops.submit(1)
    retry = ops.submit(1)  # a retried POST: same seq_id, same body
    await settle()
    late_retry = ops.submit(1)  # after it ran
    assert first == retry == late_retry
    assert ops.ran == [1]


@pytest.mark.spec("SEQ-5")
async def test_buffered_duplicate_is_not_queued_twice() -> None:
    ops = make()
    first = ops.submit(2)
    assert ops.submit(2) == first
    ops.submit(1)
    await settle()
    assert ops.ran == [1, 2]


@pytest.mark.spec("SEQ-7")
async def test_same_seq_id_with_a_different_body_is_a_conflict() -> None:
    ops = make()
    ops.submit(1, "body-a")
    with pytest.raises(Conflict) as caught:
        ops.submit(1, "body-b")
    assert caught.value.field == "seq_id"
    assert "different request" in caught.value.message


@pytest.mark.spec("SEQ-6")
async def test_rejected_op_consumes_its_seq_id_and_retries_get_the_same_error() -> None:
    ops = make()
    sequencer = ops.sequencer
    error = InvalidArgument("bad weights", "data[0].loss_fn_inputs.weights")
    assert sequencer.check("m", 1, "bad") is None
    sequencer.reject("m", 1, "bad", error)
    ops.submit(2)
    await settle()
    assert ops.ran == [2]  # 1 was consumed without running; 2 did not wait for it
    with pytest.raises(InvalidArgument) as caught:
        sequencer.check("m", 1, "bad")
    assert caught.value is error


@pytest.mark.spec("SEQ-8")
async def test_failed_op_consumes_its_seq_id() -> None:
    ops = make()
    sequencer = ops.sequencer

    class Failing(RecordedOp):
        async def run(self) -> None:
            raise RuntimeError("engine exploded")

    sequencer.enqueue("m", 1, "fp", Failing(ops, 1, "req-1"))
    ops.submit(2)
    await settle()
    assert ops.ran == [2]
    assert "engine exploded" in ops.failed[1].message


@pytest.mark.spec("SEQ-9")
async def test_gap_that_never_fills_fails_waiting_ops_clearly() -> None:
    ops = make(gap_timeout=0.05)
    ops.submit(3)
    ops.submit(4)
    await asyncio.sleep(0.2)
    assert ops.ran == []
    assert set(ops.failed) == {3, 4}
    message = ops.failed[3].message
    assert "seq_id 1-2" in message and "never arrived" in message and "3-4" in message
    assert isinstance(ops.failed[3], Gone)
    with pytest.raises(Gone):  # the missing op arriving late is told what happened
        ops.submit(1)
    ops.submit(5)
    await settle()
    assert ops.ran == [5]


@pytest.mark.spec("SEQ-9")
async def test_gap_timer_does_not_fire_while_an_op_runs() -> None:
    ops = make(gap_timeout=0.05)
    ops.submit(1, gate=True)
    ops.submit(2)
    await asyncio.sleep(0.15)  # 1 runs for longer than the gap timeout; 2 waits for it
    ops.gates[1].set()
    await settle()
    assert ops.ran == [1, 2] and ops.failed == {}


@pytest.mark.spec("SEQ-7")
async def test_seq_id_below_the_window_is_a_conflict() -> None:
    ops = make(window=4)
    for seq_id in range(1, 12):
        ops.submit(seq_id)
    await settle()
    with pytest.raises(Conflict) as caught:
        ops.submit(1)
    assert "retry window" in caught.value.message
    assert ops.submit(11) == "req-11-fp"  # recent ids are still recognised


async def test_close_fails_buffered_ops() -> None:
    ops = make()
    sequencer = ops.sequencer
    ops.submit(2)
    await sequencer.close()
    assert "shutting down" in ops.failed[2].message
