"""Idle sessions expire (mock_server/service/expiry.py): their heartbeat answers 410, their
models are freed and ops queued on them fail, while a session that keeps beating lives on."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.http_api import MakeMockApi
from tests.support.training import datum

TOKENS = [1, 5, 9, 12, 3, 7]


@pytest.mark.spec("WIRE-17")
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_an_idle_session_expires_with_410_and_frees_its_models(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api(session_idle_seconds=30.0)
    idle_model = await api.model()
    idle_session = idle_model.split(":")[0]
    queued = await api.forward_backward(idle_model, 2, [datum(TOKENS)])  # waits for seq_id 1
    live_session = await api.session()
    live_model = await api.create_model(live_session)
    await api.post("session_heartbeat", {"session_id": live_session})
    registry = api.service.ctx.registry
    # Last heard from 60 s ago (rather than waiting 30 s); the live session just beat.
    registry.sessions[idle_session].last_seen -= 60
    api.service.reaper.sweep(force=True)
    body = await api.post("session_heartbeat", {"session_id": idle_session}, status=410)
    assert "expired" in body["detail"]
    assert idle_model not in registry.models and live_model in registry.models
    await api.post("get_info", {"model_id": idle_model}, status=404)
    failed = await api.result(queued["request_id"])
    assert failed["category"] == "user" and "expired" in failed["error"]
    create = {"session_id": idle_session, "model_seq_id": 1, "base_model": "tinker-ref/tiny-64"}
    await api.post("create_model", create, status=409)  # nothing new in an expired session
    live = await api.forward_backward(live_model, 1, [datum(TOKENS)])
    await api.forward_output(live["request_id"])
    await api.post("session_heartbeat", {"session_id": live_session})
    assert api.service.reaper.expired == 1


@pytest.mark.spec("WIRE-17")
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_heartbeats_alone_keep_a_session_past_its_idle_limit(
    make_mock_api: MakeMockApi,
) -> None:
    """The lazy sweep (run by heartbeats themselves) expires nothing that keeps beating."""
    api = await make_mock_api(session_idle_seconds=2.0)
    session = await api.session()
    for _ in range(9):  # 2.7 s > the limit, with sweeps in between
        await asyncio.sleep(0.3)
        await api.post("session_heartbeat", {"session_id": session})
    assert api.service.reaper.expired == 0
