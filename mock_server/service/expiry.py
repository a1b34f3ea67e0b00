"""Idle session expiry: a session nobody has heard from in `session_idle_seconds` is dropped.

"Heard from" is a heartbeat (the SDKs send one every 10 s while a client lives) or any call that
names the session or one of its models. An expired session's models, samplers and uploaded
losses leave the registry (their memory is freed), ops still queued on its models fail with a
`Gone`, and its heartbeat answers 410, which stops the SDK's heartbeat loop (spec WIRE-17).
Checkpoints on disk stay. Sweeps run lazily, at most once a second, from calls that arrive
anyway (session creation, heartbeats, polls): no timer thread.

Expiry is not journaled (service/journal.py): after a restart the replayed sessions start a
fresh idle period.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mock_server.service.errors import Gone
from mock_server.service.sequencer import Sequencer
from mock_server.service.state import Registry


class SessionReaper:
    def __init__(
        self,
        registry: Registry,
        sequencer: Sequencer,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._sequencer = sequencer
        self._idle = idle_seconds
        self._clock = clock
        self._last_sweep = float("-inf")
        self.expired = 0  # sessions expired so far

    def sweep(self, force: bool = False) -> None:
        """Expire idle sessions (at most once a second unless forced: it scans them all)."""
        now = self._clock()
        if not force and now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        registry = self._registry
        for session in list(registry.sessions.values()):
            if session.expired or now - session.last_seen <= self._idle:
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
