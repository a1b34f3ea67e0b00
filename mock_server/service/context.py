"""`ServiceContext`: the shared parts every operation of the service works with.

One per server: configuration, the engine, the thread pool engine work runs in, the id minter,
the future store, the sequencer, the registry, the checkpoint store, the authenticator and the
request log. `run_model_op` is the single path by which a sequenced model op executes: engine
work in the pool, its outcome recorded on the loop; `fail_future` maps an exception onto a
failed future with the right category (`user` for bad input, `server` for the mock's faults).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from mock_server.engine import CheckpointError, Engine, InvalidInputError
from mock_server.service.auth import Authenticator, Principal
from mock_server.service.checkpoints import CheckpointStore
from mock_server.service.config import ServerConfig
from mock_server.service.errors import Overloaded, ServiceError
from mock_server.service.futures import FutureStore
from mock_server.service.ids import IdMinter
from mock_server.service.records import RequestLog
from mock_server.service.sequencer import Sequencer
from mock_server.service.state import Registry

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, (ServiceError, InvalidInputError, CheckpointError))


@dataclass(eq=False)
class ServiceContext:
    config: ServerConfig
    engine: Engine
    executor: Executor
    ids: IdMinter
    futures: FutureStore
    sequencer: Sequencer
    registry: Registry
    checkpoints: CheckpointStore
    auth: Authenticator
    records: RequestLog

    async def in_thread(self, fn: Callable[[], T]) -> T:
        """Run blocking engine or disk work in the pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def admit(self, unblocks: bool = False) -> None:
        """Bounded queues: `Overloaded` (429) past `max_pending_ops`, unless the op `unblocks`
        a model (its next seq_id: refusing it could stall that model's queue for good). Called
        before an op claims or consumes anything, so a refused op can simply be sent again."""
        if not unblocks and self.futures.pending_count >= self.config.max_pending_ops:
            raise Overloaded(
                f"{self.futures.pending_count} ops are pending (limit "
                f"{self.config.max_pending_ops}); retry after a second"
            )

    def new_future(self, kind: str, principal: Principal) -> str:
        request_id = self.ids.request_id()
        self.futures.create(request_id, kind, principal.identity)
        return request_id

    def fail_future(self, request_id: str, exc: BaseException) -> None:
        if is_user_error(exc):
            self.futures.fail(request_id, _describe(exc), "user")
        else:
            log.error("request %s failed", request_id, exc_info=exc)
            self.futures.fail(request_id, f"internal error: {type(exc).__name__}: {exc}", "server")

    async def run_op(
        self,
        request_id: str,
        work: Callable[[], R],
        finish: Callable[[R], object] | None = None,
    ) -> None:
        """Run `work` in the pool, then `finish(result)` on the loop; record the outcome."""
        try:
            value = await self.in_thread(work)
            result = finish(value) if finish is not None else value
        except Exception as exc:  # every outcome, good or bad, ends up in the future
            self.fail_future(request_id, exc)
        else:
            self.futures.complete(request_id, result)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceError) and exc.field:
        return f"{exc.field}: {exc.message}"
    return str(exc)
