"""`ServiceContext`: the shared parts every operation of the service works with.

One per server: configuration, the engine, the thread pool engine work runs in, the id minter,
the future store, the sequencer, the registry, the checkpoint store, the authenticator, the
request log, and the tasks of ops that run beside everything else (samples: `spawn`, `drain`).
`fail_future` maps an exception onto a failed future with the right category (`user` for bad
input, `server` for the mock's faults). Operations (`operation.py`) run through these parts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mock_server.engine import CheckpointError, Engine, EngineProcesses, InvalidInputError
from mock_server.service.auth import Authenticator, Principal
from mock_server.service.checkpoints import CheckpointStore
from mock_server.service.config import ServerConfig
from mock_server.service.errors import Gone, Overloaded, ServiceError
from mock_server.service.futures import FutureStore
from mock_server.service.ids import IdMinter
from mock_server.service.pool import EnginePool
from mock_server.service.records import RequestLog
from mock_server.service.sequencer import Sequencer
from mock_server.service.state import Registry

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, (ServiceError, InvalidInputError, CheckpointError))


@dataclass(eq=False)
class ServiceContext:
    config: ServerConfig
    engine: Engine | EngineProcesses  # in this process's threads, or in engine processes
    pool: EnginePool
    ids: IdMinter
    futures: FutureStore
    sequencer: Sequencer
    registry: Registry
    checkpoints: CheckpointStore
    auth: Authenticator
    records: RequestLog
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)  # spawned, not yet done

    async def in_thread(
        self, fn: Callable[[], T], session: str | None = None, affinity: int | None = None
    ) -> T:
        """Run blocking engine or disk work in the pool, off the event loop, in `session`'s
        turn (sessions take turns: `pool.py`), on worker `affinity` when given."""
        return await self.pool.run(fn, session, affinity)

    def admit(self, unblocks: bool = False) -> None:
        """Bounded queues: `Overloaded` (429) past `max_pending_ops`, unless the op `unblocks`
        a model (its next seq_id: refusing it could stall that model's queue for good). Called
        before an op claims or consumes anything, so a refused op can simply be sent again."""
        if not unblocks and self.futures.pending_count >= self.config.max_pending_ops:
            raise Overloaded(
                f"{self.futures.pending_count} ops are pending (limit "
                f"{self.config.max_pending_ops}); retry after a second"
            )

    def abandonment(self, session_id: str | None) -> ServiceError | None:
        """Why an op of `session_id` must not run (its client looks gone: expiry.py), or None."""
        session = self.registry.sessions.get(session_id) if session_id is not None else None
        if session is None or not session.abandoned:
            return None
        return abandoned_error(session.session_id, self.config.session_abandon_seconds)

    def new_future(self, kind: str, principal: Principal, session_id: str | None = None) -> str:
        request_id = self.ids.request_id()
        self.futures.create(request_id, kind, principal.identity, session_id)
        return request_id

    def fail_future(self, request_id: str, exc: BaseException) -> str:
        """Fail the future with `exc`; returns the message it now holds."""
        if is_user_error(exc):
            message = _describe(exc)
            self.futures.fail(request_id, message, "user")
        else:
            log.error("request %s failed", request_id, exc_info=exc)
            message = f"internal error: {type(exc).__name__}: {exc}"
            self.futures.fail(request_id, message, "server")
        return message

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task of its own, beside everything else (ops that need no order)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every spawned task is done (journal replay)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_spawned(self) -> None:
        """Cancel the spawned tasks and wait for them (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def abandoned_error(session_id: str, seconds: float) -> Gone:
    return Gone(
        f"session {session_id!r} sent no heartbeat and no request for {seconds:g} s, so its "
        "client looks gone; its queued work was cancelled",
        "session_id",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceError) and exc.field:
        return f"{exc.field}: {exc.message}"
    return str(exc)
