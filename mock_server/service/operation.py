"""`Operation`: the one shape of every state-changing call the service accepts.

An operation is a value — the typed request it is built from (`requests.py`) — and three steps
the service runs it by:

* `validate(ctx, principal)`, on the event loop, before anything is accepted: raises a
  `ServiceError` for bad input and keeps on the op what it resolved (the model, decoded
  tensors, a compiled loss) for the next steps;
* `run(ctx)`, in the engine pool: the engine or disk work, if the op has any;
* `finish(ctx, value)`, on the loop, with `run`'s value: updates the service's state and makes
  the result (the future's, or the call's answer).

How an op is admitted — deduplicated, ordered, answered — is its kind, the class it derives from
(`admission.py`: `ModelOp`, `NewModelOp`, `DirectOp`; `SampleOp` and `RejectMalformedOp` are
kinds of their own), which implements `accept`. Every op reaches `accept` through
`TinkerService.submit`, and that is where the journal records it (`journal.py`): an op is
journaled because it is an Operation, never because a table lists it. A concrete op registers
its `name` when its class is defined, so the journal rebuilds a recorded op as
`operation_named(name)(request)`, importing nothing.

An op object serves one submission (`validate` keeps state on it); a retry, or a replay, is a new
object built from the same request. `Job` is an accepted op with its future: what a model's lane
queues and what a spawned sample task runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from mock_server.service.auth import Principal
from mock_server.service.context import ServiceContext
from mock_server.service.errors import ServiceError

R = TypeVar("R")  # the op's request type
A = TypeVar("A")  # what accepting the op answers: a SubmittedFuture, a new id, ...

_REGISTERED: dict[str, type[Operation[Any, Any]]] = {}


class Operation(ABC, Generic[R, A]):
    # Its name in the journal, e.g. "training.optim_step"; unique. Kinds (abstract) have none.
    name: ClassVar[str] = ""

    def __init__(self, request: R) -> None:
        self.request = request

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name:
            taken = _REGISTERED.setdefault(name, cls)
            if taken is not cls:
                raise TypeError(f"operation name {name!r} is taken by {taken.__qualname__}")

    @abstractmethod
    async def accept(self, ctx: ServiceContext, principal: Principal) -> A:
        """Deduplicate, validate, then queue or answer the op (its kind says how). A
        `ServiceError` rejects it; a rejection changes nothing but what it says it consumes."""

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        """On the loop, before the op is accepted: raise a `ServiceError` for bad input."""

    def run(self, ctx: ServiceContext) -> Any:
        """In the engine pool: the op's engine or disk work; the value goes to `finish`."""
        return None

    def finish(self, ctx: ServiceContext, value: Any) -> object:
        """On the loop, with `run`'s value: update the service's state, return the result."""
        return value

    @property
    def session_id(self) -> str | None:
        """The session the op belongs to: engine work takes turns by session (`pool.py`), and
        an abandoned session's queued work is cancelled. None: known only after `accept`."""
        return None

    def affinity(self, ctx: ServiceContext) -> int | None:
        """The engine pool worker that must run `run` (engine processes: the one feeding the
        process that holds the op's model), or None for any. Asked once, as the op is queued
        in the pool."""
        return None

    def failed(self, message: str) -> None:
        """On the loop, when an accepted op failed (its run raised, or it never ran): release
        what accepting it set up. Most ops set up nothing."""


class Submit(Protocol):
    """`TinkerService.submit`: the one door every op goes through, and where it is journaled."""

    def __call__(self, principal: Principal, op: Operation[Any, A]) -> Awaitable[A]: ...


def operation_named(name: str) -> type[Operation[Any, Any]] | None:
    """The operation class registered under `name` (the journal's key for it)."""
    return _REGISTERED.get(name)


def operation_modules() -> frozenset[str]:
    """The modules that define operations; the journal rebuilds the request types they hold."""
    return frozenset(cls.__module__ for cls in _REGISTERED.values())


@dataclass(eq=False)
class Job:
    """An accepted op and its future (`Sequencer.Queued`)."""

    ctx: ServiceContext
    request_id: str
    op: Operation[Any, Any]

    async def run(self) -> None:
        """Run the op in the pool, finish it on the loop, and record the outcome in its future.
        A future cancelled before its work started (samples only) fails without running."""
        ctx, op = self.ctx, self.op
        if ctx.futures.get(self.request_id).cancel_requested:
            ctx.futures.fail(self.request_id, "cancelled by the client", "user")
            return
        abandoned = ctx.abandonment(op.session_id)
        if abandoned is not None:
            self.fail(abandoned)
            return
        try:
            value = await ctx.in_thread(partial(op.run, ctx), op.session_id, op.affinity(ctx))
            result = op.finish(ctx, value)
        except Exception as exc:  # every outcome, good or bad, ends up in the future
            op.failed(ctx.fail_future(self.request_id, exc))
        else:
            ctx.futures.complete(self.request_id, result)

    def fail(self, error: ServiceError) -> None:
        """Fail the op without running it (its lane was closed, or a gap abandoned it)."""
        self.ctx.fail_future(self.request_id, error)
        self.op.failed(error.message)
