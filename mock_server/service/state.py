"""What the service knows: sessions, models, samplers and uploaded custom losses.

Plain records plus a `Registry` that looks them up by id with the right error (`NotFound`
naming the field) and, in api-keys mode, the ownership check (another key's id is `NotFound`,
word for word as a missing one, so existence never leaks). Per-session
counters the SDK assigns (`model_seq_id`, `sampling_session_seq_id`, `custom_loss_seq_id`) are
*claims*: the first request to use a number owns it, a retry with the same body gets the same
answer, a different body is a `Conflict`. Models hold their `TrainingModel` once created; only
ops sequenced on that model touch it. Samplers hold a frozen copy of adapter weights (an empty
dict samples the base model).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Any

from mock_server.engine import LoraConfig, RemoteModel, TrainingModel
from mock_server.engine.model import Adapter
from mock_server.service import ids
from mock_server.service.auth import Principal
from mock_server.service.errors import Conflict, NotFound


@dataclass(frozen=True)
class Claim:
    fingerprint: str
    value: str  # what the first request got: a request_id or an id it created


@dataclass(eq=False)
class Session:
    session_id: str
    owner: str
    tags: tuple[str, ...]
    user_metadata: dict[str, Any]
    sdk_version: str | None
    finished: bool = False
    heartbeats: int = 0
    model_claims: dict[int, Claim] = field(default_factory=dict)
    sampling_claims: dict[int, Claim] = field(default_factory=dict)
    loss_claims: dict[int, Claim] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)  # heartbeat or use (expiry.py)
    expired: bool = False  # dropped for idleness: its models are gone, heartbeats get 410
    # Its client looks gone (expiry.py): queued work is cancelled until it is seen again.
    abandoned: bool = False
    # What the REST API reports about a session (rest_queries.py).
    project_id: str | None = None
    display_name: str | None = None
    created_at: float = field(default_factory=time.time)  # wall clock, seconds since the epoch
    finish_reason: str | None = None  # "success", "errored" or "interrupted", once finished
    finish_detail: str | None = None

    def seen(self) -> None:
        self.last_seen = time.monotonic()
        self.abandoned = False


@dataclass(frozen=True)
class TrainingEvent:
    """One completed training op of a model, kept for the status page (`GET /`)."""

    op: str  # "forward_backward", "forward" (forward_only) or "optim_step"
    loss_fn: str | None  # the request's loss_fn; None for optim_step
    metrics: dict[str, float]  # the result's metrics, e.g. {"loss:sum": 3.2}


class ModelState(enum.Enum):
    CREATING = "creating"
    READY = "ready"
    FAILED = "failed"


@dataclass(eq=False)
class Model:
    model_id: str
    session_id: str
    owner: str
    base_model: str | None  # None until a create-via-load has read its checkpoint
    lora: LoraConfig | None
    optimizer_type: str = "adamw"
    state: ModelState = ModelState.CREATING
    training: TrainingModel | RemoteModel | None = None  # Remote: in an engine process
    failure: str | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # READY or FAILED
    history: list[TrainingEvent] = field(default_factory=list)  # in execution (seq_id) order
    # What the REST API reports about the training run (rest_queries.py).
    created_at: float = field(default_factory=time.time)  # wall clock, seconds since the epoch
    user_metadata: dict[str, Any] | None = None

    def settle(
        self, training: TrainingModel | RemoteModel | None, failure: str | None = None
    ) -> None:
        if training is not None:
            self.training, self.state = training, ModelState.READY
            self.base_model = training.base.spec.name
            self.lora = training.lora
        else:
            self.failure, self.state = failure, ModelState.FAILED
        self.settled.set()


@dataclass(eq=False)
class Sampler:
    sampling_session_id: str
    session_id: str
    owner: str
    base_model: str
    model_path: str | None
    weights: Adapter  # frozen snapshot; {} = the base model
    # seq_id -> (fingerprint, request_id, sequence ids): dedupes retried asample POSTs.
    requests: dict[int, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    joined_clients: int = 0
    inflight_of: str | None = None  # the model whose inflight saves update it (inflight.py)


@dataclass(eq=False)
class CustomLoss:
    loss_id: str
    session_id: str
    owner: str
    name: str
    compiled: Any  # mock_server.engine.custom_loss.CompiledCustomLoss


class Registry:
    def __init__(self, restricted: bool) -> None:
        self._restricted = restricted
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, Model] = {}
        self.samplers: dict[str, Sampler] = {}
        self.losses: dict[str, CustomLoss] = {}

    def _owned(self, principal: Principal, owner: str, what: str, field_name: str) -> None:
        if self._restricted and owner != principal.identity:
            raise NotFound(f"no {what}", field_name)  # not 403: that would confirm it exists

    def session(
        self, principal: Principal, session_id: str, field_name: str = "session_id"
    ) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r}", field_name)
        self._owned(principal, session.owner, f"session {session_id!r}", field_name)
        session.seen()
        return session

    def model(self, principal: Principal, model_id: str, field_name: str = "model_id") -> Model:
        model = self.models.get(model_id)
        if model is None:
            raise NotFound(f"no model {model_id!r}", field_name)
        self._owned(principal, model.owner, f"model {model_id!r}", field_name)
        self.touch(model.session_id)
        return model

    def sampler(
        self, principal: Principal, sampler_id: str, field_name: str = "sampling_session_id"
    ) -> Sampler:
        sampler = self.samplers.get(sampler_id)
        if sampler is None:
            raise NotFound(f"no sampling session {sampler_id!r}", field_name)
        self._owned(principal, sampler.owner, f"sampling session {sampler_id!r}", field_name)
        self.touch(sampler.session_id)
        return sampler

    def touch(self, session_id: str | None) -> None:
        """The session's client was heard from (a call naming it, its models, samplers or
        futures): it is alive (expiry.py)."""
        session = self.sessions.get(session_id) if session_id is not None else None
        if session is not None:
            session.seen()

    def loss(self, principal: Principal, loss_id: str, field_name: str) -> CustomLoss:
        loss = self.losses.get(loss_id)
        if loss is None:
            raise NotFound(f"no custom loss {loss_id!r}", field_name)
        self._owned(principal, loss.owner, f"custom loss {loss_id!r}", field_name)
        return loss

    def check_owner(self, principal: Principal, owner: str, what: str, field_name: str) -> None:
        self._owned(principal, owner, what, field_name)

    def check_checkpoint(
        self, principal: Principal, model_id: str, what: str, field_name: str
    ) -> None:
        """A checkpoint is its model's session's key's. In api-keys mode one whose session is
        unknown here has no provable owner, so nobody may read it."""
        session = self.sessions.get(ids.session_of_model(model_id) or "")
        if session is not None:
            self._owned(principal, session.owner, what, field_name)
        elif self._restricted:
            raise NotFound(f"no {what}", field_name)


def check_claim(claims: dict[int, Claim], number: int, fingerprint: str, what: str) -> str | None:
    """The earlier answer for a retried claim of `number`, None if it is unclaimed."""
    claim = claims.get(number)
    if claim is None:
        return None
    if claim.fingerprint != fingerprint:
        raise Conflict(f"{what} {number} was already used by a different request", what)
    return claim.value


def require_training(model: Model) -> TrainingModel | RemoteModel:
    """The model's engine state; its ops are sequenced after creation, so it exists unless
    the creation failed."""
    if model.training is None:
        raise Conflict(
            f"model {model.model_id!r} is unusable: its creation failed ({model.failure})",
            "model_id",
        )
    return model.training
