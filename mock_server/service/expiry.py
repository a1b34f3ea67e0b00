"""Idle sessions: abandoned after `session_abandon_seconds`, dropped after `session_idle_seconds`.

"Heard from" is a heartbeat (the SDKs send one every 10 s while a client lives) or any call that
names the session or one of its models. An expired session's models, samplers and uploaded
losses leave the registry (their memory is freed), ops still queued on its models fail with a
`Gone`, and its heartbeat answers 410, which stops the SDK's heartbeat loop (spec WIRE-17).
Checkpoints on disk stay. Sweeps run lazily, at most once a second, from calls that arrive
anyway (session creation, heartbeats, polls): no timer thread.

Long before that, a session silent for `session_abandon_seconds` (default 60 s, six missed
heartbeats) is *abandoned*: its client looks gone (killed test workers do this all the time), so
its engine work still queued is cancelled — those futures fail with a `Gone` saying why — and its
ops that come up later fail the same way instead of running, so a dead client's backlog cannot
keep the engine from other sessions. Nothing is freed: the moment the session is heard from
again it is alive (`Session.seen`) and its next ops run.

Expiry is not journaled (service/journal.py): after a restart the replayed sessions start a
fresh idle period.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mock_server.service.context import abandoned_error
from mock_server.service.errors import Gone
from mock_server.service.pool import EnginePool
from mock_server.service.sequencer import Sequencer
from mock_server.service.state import Registry


class SessionReaper:
    def __init__(
        self,
        registry: Registry,
        sequencer: Sequencer,
        idle_seconds: float,
        abandon_seconds: float = float("inf"),
        pool: EnginePool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._sequencer = sequencer
        self._idle = idle_seconds
        self._abandon = abandon_seconds
        self._pool = pool
        self._clock = clock
        self._last_sweep = float("-inf")
        self.expired = 0  # sessions expired so far
        self.cancelled = 0  # queued jobs of abandoned sessions cancelled so far

    def sweep(self, force: bool = False) -> None:
        """Expire idle sessions (at most once a second unless forced: it scans them all)."""
        now = self._clock()
        if not force and now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        registry = self._registry
        for session in list(registry.sessions.values()):
            silent = now - session.last_seen
            if not session.expired and silent > self._abandon:
                self._abandon_work(session.session_id, silent)
                session.abandoned = True
            if session.expired or silent <= self._idle:
                continue
            session.expired = session.finished = True  # finished: no new models in it
            self.expired += 1
            error = Gone(
                f"session {session.session_id!r} expired after {self._idle:g} s without a "
                "heartbeat; its models were freed",
                "session_id",
            )
            for table in (registry.models, registry.samplers, registry.losses):
                for key in [k for k, v in table.items() if v.session_id == session.session_id]:
                    del table[key]
                    if table is registry.models:
                        self._sequencer.close_lane(key, error)

    def _abandon_work(self, session_id: str, silent: float) -> None:
        if self._pool is not None:
            self.cancelled += self._pool.cancel_queued(
                session_id, abandoned_error(session_id, self._abandon)
            )
