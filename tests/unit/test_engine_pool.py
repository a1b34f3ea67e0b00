"""The engine pool: sessions take turns, a session's queued work can be cancelled, results and
errors reach the awaiting task."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

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
