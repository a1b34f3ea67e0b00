"""The engine pool: sessions take turns, a session's queued work can be cancelled, results and
errors reach the awaiting task."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from mock_server.engine.slices import Unfinished
from mock_server.service.pool import EnginePool, PoolClosed


def _recorder(order: list[str], gate: threading.Event | None = None) -> Callable[[str], object]:
    def job(name: str) -> Callable[[], str]:
        def work() -> str:
            if gate is not None:
                gate.wait(10)
            order.append(name)
            return name

        return work

    return job  # type: ignore[return-value]


@pytest.mark.asyncio
async def test_a_session_with_a_backlog_does_not_delay_another_sessions_next_job() -> None:
    pool = EnginePool(workers=1)
    order: list[str] = []
    gate = threading.Event()
    job = _recorder(order, gate)
    backlog = [asyncio.ensure_future(pool.run(job(f"a{i}"), "a")) for i in range(50)]
    await asyncio.sleep(0.05)  # a0 is running (held by the gate), a1..a49 queued
    newcomer = asyncio.ensure_future(pool.run(job("b0"), "b"))
    await asyncio.sleep(0.05)
    gate.set()
    assert await newcomer == "b0"
    await asyncio.gather(*backlog)
    # b0 ran after at most the running job and the one queued ahead of it in turn.
    assert order.index("b0") <= 2, order[:5]
    assert [name for name in order if name.startswith("a")] == [f"a{i}" for i in range(50)]
    pool.shutdown()


@pytest.mark.asyncio
async def test_cancelling_a_session_fails_its_queued_jobs_but_not_the_running_one() -> None:
    pool = EnginePool(workers=1)
    gate = threading.Event()
    order: list[str] = []
    job = _recorder(order, gate)
    running = asyncio.ensure_future(pool.run(job("a0"), "a"))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(pool.run(job(f"a{i}"), "a")) for i in range(1, 4)]
    other = asyncio.ensure_future(pool.run(job("b0"), "b"))
    await asyncio.sleep(0.05)
    assert pool.queued("a") == 3 and pool.queued() == 4
    assert pool.cancel_queued("a", RuntimeError("client gone")) == 3
    gate.set()
    assert await running == "a0" and await other == "b0"
    for task in queued:
        with pytest.raises(RuntimeError, match="client gone"):
            await task
    assert order == ["a0", "b0"]
    pool.shutdown()


@pytest.mark.asyncio
async def test_an_exception_in_a_job_reaches_its_caller_and_a_closed_pool_refuses_work() -> None:
    pool = EnginePool(workers=2)

    def boom() -> None:
        raise ValueError("engine says no")

    with pytest.raises(ValueError, match="engine says no"):
        await pool.run(boom, "a")
    assert await pool.run(lambda: 41 + 1) == 42  # work of no session
    pool.shutdown()
    with pytest.raises(PoolClosed):
        await pool.run(lambda: None, "a")


def test_the_default_pool_has_one_worker_per_available_core() -> None:
    from mock_server.service.pool import available_cores

    pool = EnginePool()
    assert pool.workers == available_cores() >= 1
    pool.shutdown()


@pytest.mark.asyncio
async def test_a_job_with_affinity_runs_only_on_its_worker_and_blocks_no_other_worker() -> None:
    bound: dict[int, str] = {}
    pool = EnginePool(
        workers=2, bind=lambda i: bound.__setitem__(i, threading.current_thread().name)
    )
    await asyncio.sleep(0.05)
    assert sorted(bound) == [0, 1] and bound[0] != bound[1]
    gate = threading.Event()

    def where(wait: bool = False) -> Callable[[], str]:
        def work() -> str:
            if wait:
                gate.wait(10)
            return threading.current_thread().name

        return work

    # Worker 0 is held by a pinned job, and more pinned to it queue behind: an unpinned job
    # of the same session and a job pinned to worker 1 still run at once, on worker 1.
    held = asyncio.ensure_future(pool.run(where(wait=True), "a", affinity=0))
    await asyncio.sleep(0.05)
    behind = [asyncio.ensure_future(pool.run(where(), "a", affinity=0)) for _ in range(3)]
    assert await asyncio.wait_for(pool.run(where(), "a"), 5) == bound[1]
    assert await asyncio.wait_for(pool.run(where(), "b", affinity=1), 5) == bound[1]
    assert not held.done() and not any(task.done() for task in behind)
    gate.set()
    assert {await held, *(await asyncio.gather(*behind))} == {bound[0]}
    with pytest.raises(ValueError, match="no worker 2"):
        await pool.run(where(), "a", affinity=2)
    pool.shutdown()


@pytest.mark.asyncio
async def test_sessions_take_turns_on_a_worker_their_jobs_are_pinned_to() -> None:
    pool = EnginePool(workers=2)
    order: list[str] = []
    gate = threading.Event()
    job = _recorder(order, gate)
    backlog = [asyncio.ensure_future(pool.run(job(f"a{i}"), "a", affinity=1)) for i in range(20)]
    await asyncio.sleep(0.05)  # a0 runs on worker 1 (held), a1..a19 wait for worker 1
    newcomer = asyncio.ensure_future(pool.run(job("b0"), "b", affinity=1))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(newcomer, *backlog)
    assert order.index("b0") <= 2, order[:5]
    pool.shutdown()


@pytest.mark.asyncio
async def test_a_job_in_slices_lets_other_sessions_run_between_its_slices() -> None:
    pool = EnginePool(workers=1)
    order: list[str] = []
    dropped: list[str] = []

    def sliced(name: str, slices: int) -> Callable[[], object]:
        def work(done: int = 0) -> object:
            order.append(f"{name}.{done}")
            if done + 1 == slices:
                return name
            return Unfinished(lambda: work(done + 1), None, lambda: dropped.append(name))

        return work

    gate = threading.Event()
    first = asyncio.ensure_future(pool.run(lambda: gate.wait(10), "c"))
    await asyncio.sleep(0.05)  # the worker is held, so both jobs below are queued together
    long = asyncio.ensure_future(pool.run(sliced("a", 4), "a"))
    short = asyncio.ensure_future(pool.run(sliced("b", 1), "b"))
    await asyncio.sleep(0.05)
    gate.set()
    assert await first is True and await long == "a" and await short == "b"
    assert order == ["a.0", "b.0", "a.1", "a.2", "a.3"]  # b waited one slice, not four

    # A session cancelled between two slices: the rest never runs and its state is dropped.
    # d's first slice runs, then c's job holds the worker while d's second slice waits.
    order.clear()
    gate.clear()
    later = threading.Event()
    held = asyncio.ensure_future(pool.run(lambda: gate.wait(10), "c"))
    await asyncio.sleep(0.05)
    doomed = asyncio.ensure_future(pool.run(sliced("d", 3), "d"))
    holder = asyncio.ensure_future(pool.run(lambda: later.wait(10), "c"))
    await asyncio.sleep(0.05)
    gate.set()
    while pool.queued("d") == 0 or order != ["d.0"]:
        await asyncio.sleep(0.005)
    assert pool.cancel_queued("d", RuntimeError("client gone")) == 1
    later.set()
    with pytest.raises(RuntimeError, match="client gone"):
        await doomed
    await asyncio.gather(held, holder)
    assert order == ["d.0"] and dropped == ["d"]
    pool.shutdown()


@pytest.mark.asyncio
async def test_another_sessions_job_preempts_the_busy_worker_it_waits_for() -> None:
    asked: list[int] = []
    pool = EnginePool(workers=2, preempt=asked.append)
    gate = threading.Event()
    held = [asyncio.ensure_future(pool.run(lambda: gate.wait(10), "a", affinity=i)) for i in (0, 1)]
    await asyncio.sleep(0.05)  # both workers run session a's work
    same = asyncio.ensure_future(pool.run(lambda: "a-next", "a", affinity=1))
    await asyncio.sleep(0.01)
    assert asked == []  # a session does not preempt itself: its own order holds
    other = asyncio.ensure_future(pool.run(lambda: "b", "b", affinity=1))
    await asyncio.sleep(0.01)
    assert asked == [1]  # the worker b must run on, not any busy one
    anywhere = asyncio.ensure_future(pool.run(lambda: "c", "c"))
    await asyncio.sleep(0.01)
    assert asked == [1, 0]  # no affinity: the first busy worker of another session
    gate.set()
    assert await asyncio.gather(*held, same, other, anywhere) == [True, True, "a-next", "b", "c"]
    free = await pool.run(lambda: "d", "d")  # idle workers: nobody is asked to pause
    assert free == "d" and asked == [1, 0]
    pool.shutdown()


@pytest.mark.asyncio
async def test_a_newcomer_runs_right_after_the_slice_running_when_it_arrived() -> None:
    # The cookbook case: one session's backlog fills the pool, then a new session arrives
    # while a slice of that backlog runs. It must not wait for the backlog's next slice too.
    pool = EnginePool(workers=1)
    order: list[str] = []
    gate = threading.Event()

    def sliced(done: int = 0) -> object:
        if done == 0:
            gate.wait(10)  # the slice that is running when the newcomer arrives
        order.append(f"a.{done}")
        return "a" if done == 2 else Unfinished(lambda: sliced(done + 1))

    backlog = [asyncio.ensure_future(pool.run(sliced, "a"))]
    await asyncio.sleep(0.05)
    backlog += [asyncio.ensure_future(pool.run(lambda: order.append("a-more"), "a"))]
    await asyncio.sleep(0.05)
    newcomer = asyncio.ensure_future(pool.run(lambda: order.append("b"), "b"))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(newcomer, *backlog)
    assert order[:2] == ["a.0", "b"], order
    pool.shutdown()
