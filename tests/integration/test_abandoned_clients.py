"""A dead client's backlog holds nobody up, and is cancelled once its client is gone.

The scenario from a cookbook run: a client queues 200 samples and is killed. Engine work takes
turns by session (mock_server/service/pool.py), so a new session's model is created after at
most a few of those samples, not after all of them; and once the dead session has been silent
for `session_abandon_seconds`, its queued samples are cancelled (their futures fail with a
`Gone` saying why) while a session that polls its futures stays alive.

Counts, not timings: how many of the dead client's samples finished before the new session's
model was ready.
"""

from __future__ import annotations

import asyncio

import pytest

from mock_server.service.futures import FutureState
from tests.support.http_api import MakeMockApi, MockApi, sample_body

pytestmark = pytest.mark.asyncio

BACKLOG = 200


async def _queue_samples(api: MockApi, session: str, count: int) -> list[str]:
    """A sampling session in `session` and `count` long samples queued on it: their ids."""
    sampler = await api.sampler(session, "tinker-ref/tiny-bytes")
    ids = []
    for i in range(count):
        body = sample_body(
            sampler, i, [1, 2, 3], 1, max_tokens=64, seed=i, temperature=1.0, stop=[]
        )
        ids.append((await api.post("asample", body))["request_id"])
    return ids


async def _dead_client_backlog(api: MockApi) -> tuple[str, list[str]]:
    """A session that queues BACKLOG samples and is never heard from again."""
    session = await api.session()
    return session, await _queue_samples(api, session, BACKLOG)


def _finished(api: MockApi, request_ids: list[str]) -> int:
    futures = api.service.ctx.futures
    return sum(futures.get(r).state is not FutureState.PENDING for r in request_ids)


async def test_a_dead_clients_backlog_does_not_delay_a_new_sessions_model(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api(worker_threads=1, max_pending_ops=1000)
    _, backlog = await _dead_client_backlog(api)
    before = _finished(api, backlog)
    await api.model()  # a new session: create_model, answered through its future
    meanwhile = _finished(api, backlog) - before
    # FIFO would have run the rest of the backlog first; taking turns, the model waited for
    # the sample running when it arrived and at most one more.
    assert before < BACKLOG - 10, "the backlog drained before the new session came"
    assert meanwhile <= 3, f"{meanwhile} abandoned samples ran while the new model waited"
    for request_id in backlog:  # clean up: let nothing run on after the test
        api.service.ctx.futures.get(request_id).cancel_requested = True


async def test_a_silent_sessions_queued_work_is_cancelled_and_a_polling_one_is_kept(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api(worker_threads=1, max_pending_ops=1000, session_abandon_seconds=0.5)
    dead, backlog = await _dead_client_backlog(api)
    mine = await _queue_samples(api, await api.session(), 3)
    await asyncio.sleep(0.6)  # both sessions silent past the grace ...
    for request_id in mine:  # ... but this one polls its futures, as a live client does
        await api.post("retrieve_future", {"request_id": request_id})
    api.service.reaper.sweep(force=True)
    assert api.service.reaper.cancelled > 0
    assert api.service.ctx.pool.queued(dead) == 0
    for _ in range(100):  # the cancellations reach their futures through the event loop
        if _finished(api, backlog) == BACKLOG:
            break
        await asyncio.sleep(0.05)
    failures = [api.service.ctx.futures.get(r).failure for r in backlog]
    cancelled = [f for f in failures if f is not None]
    assert cancelled and all("client looks gone" in f.message for f in cancelled)
    for request_id in mine:
        output = await api.sample_output(request_id)  # the live session's samples all ran
        assert len(output.sequences) == 1
    # Heard from again, the abandoned session is alive: its next sample runs.
    await api.post("session_heartbeat", {"session_id": dead})
    assert not api.service.ctx.registry.sessions[dead].abandoned
