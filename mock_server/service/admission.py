"""The kinds of operation: how an op is deduplicated, validated, then queued or answered.

* `ModelOp` — an op on an existing model (`forward_backward`, `optim_step`, saves, loads),
  sequenced on the model's lane by `seq_id`: deduplicated by `(model_id, seq_id)` first, then
  validated in full — a rejected op consumes its seq_id and answers 4xx, changing nothing —
  then queued to run in seq_id order, its future answered at once.
* `NewModelOp` — a model's creation (`create_model`, or `load_weights` addressed by session),
  the model's seq 0: its number in the session (`model_seq_id`) is a claim, deduplicated the
  same way; a rejected creation claims nothing. The model exists (CREATING) from acceptance;
  `finish` settles it READY, a failure FAILED.
* `DirectOp` — answered by the call itself rather than through a future's run (sessions,
  uploaded losses, sampling sessions): a retry's first answer, or validate, run, finish.

Validation covers what the engine would reject, so a client hears about bad input from the
POST, not from a failed future; engine input errors raised while validating become
`InvalidArgument` (`validating`).
"""

from __future__ import annotations

from abc import abstractmethod
from functools import partial
from typing import Any, ClassVar, Protocol, TypeVar

from mock_server.engine import LoraConfig
from mock_server.service import ids
from mock_server.service.auth import Principal
from mock_server.service.context import ServiceContext
from mock_server.service.errors import Conflict, MalformedRequest, ServiceError
from mock_server.service.fingerprint import fingerprint
from mock_server.service.operation import A, Job, Operation, R
from mock_server.service.results import SubmittedFuture
from mock_server.service.state import Claim, Model, check_claim
from mock_server.service.validation import check_seq_id, validating


class OnModel(Protocol):
    """A request addressing an existing model's lane (`None`s: a `LoadWeights` that might
    address a new model instead)."""

    @property
    def model_id(self) -> str | None: ...

    @property
    def seq_id(self) -> int | None: ...


class ForNewModel(Protocol):
    """A request creating a model: its session and its number there."""

    @property
    def session_id(self) -> str | None: ...

    @property
    def model_seq_id(self) -> int | None: ...

    @property
    def user_metadata(self) -> dict[str, Any] | None: ...


M = TypeVar("M", bound=OnModel)
N = TypeVar("N", bound=ForNewModel)


class ModelOp(Operation[M, SubmittedFuture]):
    kind: ClassVar[str]  # the future's kind and the fingerprint's tag, e.g. "optim_step"
    model: Model  # the model addressed: looked up by `accept`, before `validate`

    @property
    def session_id(self) -> str | None:
        return self.model.session_id

    def fingerprint(self) -> str:
        return fingerprint((self.kind, self.request))

    def affinity(self, ctx: ServiceContext) -> int | None:
        return ctx.engine.affinity(self.model.training)

    async def accept(self, ctx: ServiceContext, principal: Principal) -> SubmittedFuture:
        self.model = model = ctx.registry.model(principal, self.request.model_id or "")
        seq_id = self.request.seq_id
        if seq_id is None:  # only `LoadWeights` leaves it optional (it may create a model)
            raise MalformedRequest("required when loading into model_id", "seq_id")
        check_seq_id(seq_id)
        fp = self.fingerprint()
        earlier = ctx.sequencer.check(model.model_id, seq_id, fp)
        if earlier is not None:
            return SubmittedFuture(earlier, model.model_id)
        ctx.admit(unblocks=seq_id == ctx.sequencer.next_seq(model.model_id))
        try:
            with validating():
                self.validate(ctx, principal)
        except ServiceError as error:
            ctx.sequencer.reject(model.model_id, seq_id, fp, error)
            raise
        request_id = ctx.new_future(self.kind, principal, model.session_id)
        ctx.sequencer.enqueue(model.model_id, seq_id, fp, Job(ctx, request_id, self))
        return SubmittedFuture(request_id, model.model_id)


class NewModelOp(Operation[N, SubmittedFuture]):
    kind: ClassVar[str]  # the future's kind and the fingerprint's tag, e.g. "create_model"
    model_id: str  # the id the model gets (set by `accept`, before `validate`)
    model: Model  # the model created, CREATING until the op has run
    # What the model record knows before the run (`validate` may fill them in).
    base_model: str | None = None
    lora: LoraConfig | None = None

    async def accept(self, ctx: ServiceContext, principal: Principal) -> SubmittedFuture:
        session_id, number = self.request.session_id, self.request.model_seq_id
        if session_id is None or number is None:  # a `LoadWeights` addressing neither
            raise MalformedRequest(
                "address a model with model_id + seq_id, or create one with session_id + "
                "model_seq_id",
                "model_id",
            )
        session = ctx.registry.session(principal, session_id)
        if session.finished:
            raise Conflict(f"session {session_id!r} is finished", "session_id")
        if number < 0:
            raise MalformedRequest(f"must be >= 0, got {number}", "model_seq_id")
        self.model_id = ids.model_id(session.session_id, number)
        fp = fingerprint((self.kind, self.request))
        earlier = check_claim(session.model_claims, number, fp, "model_seq_id")
        if earlier is not None:
            return SubmittedFuture(earlier, self.model_id)
        with validating():
            self.validate(ctx, principal)
        ctx.admit()
        request_id = ctx.new_future(self.kind, principal, session.session_id)
        session.model_claims[number] = Claim(fp, request_id)
        self.model = Model(
            self.model_id, session.session_id, principal.identity, self.base_model, self.lora
        )
        self.model.user_metadata = self.request.user_metadata  # what the REST API reports
        ctx.registry.models[self.model_id] = self.model
        ctx.sequencer.open_lane(self.model_id, first_seq=0)
        ctx.sequencer.enqueue(self.model_id, 0, fp, Job(ctx, request_id, self))
        return SubmittedFuture(request_id, self.model_id)

    @property
    def session_id(self) -> str | None:
        return self.model.session_id

    def affinity(self, ctx: ServiceContext) -> int | None:
        return ctx.engine.placement()  # where the new model will live

    def failed(self, message: str) -> None:
        self.model.settle(None, message)


class DirectOp(Operation[R, A]):
    def earlier(self, ctx: ServiceContext, principal: Principal) -> A | None:
        """The answer an identical earlier call got (a retry), None for a new call; raises for
        a call that contradicts an earlier one."""
        return None

    @property
    def has_engine_work(self) -> bool:
        """Whether `run` goes to the engine pool. Without, the op never leaves the loop: nothing
        interleaves between its validate and its finish."""
        return False

    @abstractmethod
    def finish(self, ctx: ServiceContext, value: Any) -> A:
        """On the loop, with `run`'s value: update the service's state; returns the answer."""

    async def accept(self, ctx: ServiceContext, principal: Principal) -> A:
        earlier = self.earlier(ctx, principal)
        if earlier is not None:
            return earlier
        with validating():
            self.validate(ctx, principal)
        value = (
            await ctx.in_thread(partial(self.run, ctx), self.session_id)
            if self.has_engine_work
            else None
        )
        return self.finish(ctx, value)
