"""Session operations: creating and finishing sessions, and uploading custom losses to one.

Each is a `DirectOp` (answered by the call, on the loop). A session's per-session counters are
claims (`state.Claim`): the first request to use a number owns it, a retry with the same body
gets the same answer, a different body is a Conflict.
"""

from __future__ import annotations

from typing import Any

from mock_server.engine.custom_loss import CompiledCustomLoss, compile_custom_loss
from mock_server.service import ids
from mock_server.service.admission import DirectOp
from mock_server.service.auth import Principal
from mock_server.service.context import ServiceContext
from mock_server.service.errors import MalformedRequest
from mock_server.service.fingerprint import fingerprint
from mock_server.service.requests import CreateCustomLoss, CreateSession, FinishSession
from mock_server.service.results import CreateCustomLossResult, SessionInfo, SubmittedFuture
from mock_server.service.state import Claim, CustomLoss, Session, check_claim


class CreateSessionOp(DirectOp[CreateSession, SessionInfo]):
    name = "sessions.create_session"
    _owner: str

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        self._owner = principal.identity

    def finish(self, ctx: ServiceContext, value: Any) -> SessionInfo:
        req = self.request
        session_id = ctx.ids.session_id()
        session = Session(
            session_id, self._owner, req.tags, dict(req.user_metadata), req.sdk_version
        )
        session.project_id, session.display_name = req.project_id, req.display_name
        ctx.registry.sessions[session_id] = session
        return SessionInfo(session_id)


class FinishSessionOp(DirectOp[FinishSession, None]):
    name = "sessions.finish_session"
    _session: Session

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        self._session = ctx.registry.session(principal, self.request.session_id)

    def finish(self, ctx: ServiceContext, value: Any) -> None:
        session, req = self._session, self.request
        if not session.finished:  # the first reason wins, as on the hosted service
            session.finish_reason, session.finish_detail = req.reason, req.detail
        session.finished = True


class CreateCustomLossOp(DirectOp[CreateCustomLoss, SubmittedFuture]):
    """Compile an uploaded `torch.fx` graph (allow-list only) and store it for the session; the
    future resolves at once with its `loss_id`."""

    name = "training.create_custom_loss"
    _session: Session
    _fingerprint: str
    _compiled: CompiledCustomLoss
    _principal: Principal

    def earlier(self, ctx: ServiceContext, principal: Principal) -> SubmittedFuture | None:
        req = self.request
        self._session = ctx.registry.session(principal, req.session_id)
        if req.custom_loss_seq_id < 0:
            raise MalformedRequest(
                f"must be >= 0, got {req.custom_loss_seq_id}", "custom_loss_seq_id"
            )
        self._fingerprint = fingerprint(("create_custom_loss", req))
        earlier = check_claim(
            self._session.loss_claims,
            req.custom_loss_seq_id,
            self._fingerprint,
            "custom_loss_seq_id",
        )
        return None if earlier is None else SubmittedFuture(earlier)

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        inputs = [{"name": spec.name, "rank": spec.rank} for spec in req.inputs]
        self._compiled = compile_custom_loss(req.name, inputs, req.graph)
        self._principal = principal
        ctx.admit()  # last: an upload refused for load can simply be sent again

    def finish(self, ctx: ServiceContext, value: Any) -> SubmittedFuture:
        req, session = self.request, self._session
        loss_id = ids.loss_id(session.session_id, req.custom_loss_seq_id)
        request_id = ctx.new_future("create_custom_loss", self._principal)
        session.loss_claims[req.custom_loss_seq_id] = Claim(self._fingerprint, request_id)
        ctx.registry.losses[loss_id] = CustomLoss(
            loss_id, session.session_id, self._principal.identity, req.name, self._compiled
        )
        ctx.futures.complete(request_id, CreateCustomLossResult(loss_id))
        return SubmittedFuture(request_id)
