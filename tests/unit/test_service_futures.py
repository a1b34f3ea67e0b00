"""The future store: long-poll, outcomes, expiry."""

from __future__ import annotations

import asyncio
import time

import pytest

from mock_server.service.errors import Gone, NotFound
from mock_server.service.futures import FutureState, FutureStore

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.spec("FUT-2")
async def test_wait_returns_as_soon_as_the_result_exists() -> None:
    store = FutureStore(60, 600)
    store.create("r1", "optim_step", None)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, store.complete, "r1", {"ok": True})
    started = time.monotonic()
    record = await store.wait("r1", timeout=10)
    assert time.monotonic() - started < 5  # long before the 10 s timeout
    assert record.state is FutureState.DONE and record.result == {"ok": True}


@pytest.mark.spec("FUT-2")
async def test_wait_times_out_with_the_future_still_pending() -> None:
    store = FutureStore(60, 600)
    store.create("r1", "optim_step", None)
    record = await store.wait("r1", timeout=0.05)
    assert record.state is FutureState.PENDING


@pytest.mark.spec("FUT-6")
async def test_a_future_finishes_once() -> None:
    store = FutureStore(60, 600)
    store.create("r1", "k", None)
    store.fail("r1", "bad input", "user")
    store.complete("r1", "late")
    record = store.get("r1")
    assert record.state is FutureState.FAILED
    assert record.failure is not None and record.failure.category == "user"


@pytest.mark.spec("FUT-7")
async def test_unknown_id_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        FutureStore(60, 600).get("nope")
    assert caught.value.field == "request_id"


def _store_with_a_result(result_ttl_seconds: float) -> tuple[Clock, FutureStore]:
    """A store on a test clock (30 s grace) holding the completed future "r1" (result 1)."""
    clock = Clock()
    store = FutureStore(result_grace_seconds=30, result_ttl_seconds=result_ttl_seconds, clock=clock)
    store.create("r1", "k", None)
    store.complete("r1", 1)
    return clock, store


@pytest.mark.spec("FUT-7")
async def test_retrieved_result_expires_after_the_grace_period() -> None:
    clock, store = _store_with_a_result(result_ttl_seconds=3600)
    store.mark_retrieved(store.get("r1"))
    clock.now += 29
    assert store.get("r1").result == 1  # still there for re-polls
    clock.now += 2
    store.sweep(force=True)
    with pytest.raises(Gone) as caught:
        store.get("r1")
    assert "expired" in caught.value.message


@pytest.mark.spec("FUT-7")
async def test_unretrieved_result_is_kept_until_its_ttl() -> None:
    clock, store = _store_with_a_result(result_ttl_seconds=100)
    clock.now += 99
    store.sweep(force=True)
    assert store.get("r1").result == 1
    clock.now += 2
    store.sweep(force=True)
    with pytest.raises(Gone):
        store.get("r1")


@pytest.mark.spec("FUT-7")
async def test_pending_futures_never_expire() -> None:
    clock = Clock()
    store = FutureStore(result_grace_seconds=1, result_ttl_seconds=1, clock=clock)
    store.create("r1", "k", None)
    clock.now += 10_000
    store.sweep(force=True)
    assert store.get("r1").state is FutureState.PENDING


async def test_close_releases_long_polls() -> None:
    store = FutureStore(60, 600)
    store.create("r1", "k", None)
    waiter = asyncio.ensure_future(store.wait("r1", timeout=30))
    await asyncio.sleep(0.01)
    store.close()
    record = await asyncio.wait_for(waiter, 2)
    assert record.state is FutureState.PENDING
