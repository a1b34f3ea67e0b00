"""The one middleware of the HTTP front end: record, authenticate, map errors to responses.

Every request gets a `RequestRecord` (what arrived, what was answered). Every `/api/` path
except `healthz` needs a credential in `X-API-Key` (header names are case-insensitive: pyqwest
lower-cases them). Every error leaves as JSON `{"detail", "field"}` with a Content-Length —
the SDK treats a 400 without a body or Content-Length as a proxy glitch and retries it
(spec WIRE-13). Status per error class: 400 malformed, 401, 403, 404, 409 (with
`x-should-retry: false`: a conflict does not heal by resending), 410, 413, 415, 422, 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from mock_server.faults import STATUS_KINDS, FaultInjector, FaultRule
from mock_server.http.encode import dumps, try_again_json
from mock_server.http.keys import BOARD_KEY, PRINCIPAL_KEY, RECORD_KEY, SERVICE_KEY
from mock_server.service.errors import (
    Conflict,
    Overloaded,
    ServiceError,
    Unauthenticated,
    status_of,
)

log = logging.getLogger(__name__)

_OPEN_PATHS = frozenset({"/api/v1/healthz"})
# Present only when the server was given a fault plan (ServerConfig.fault_plan).
FAULTS_KEY = web.AppKey("faults", FaultInjector)
# The fault a handler's `fault_gate` found for its op (applied around the handler here).
OP_FAULT_KEY = web.RequestKey("op_fault", FaultRule)
# Faults after which the handler still runs (the others answer in its place).
_HANDLED_FAULTS = frozenset({"drop_after_apply", "truncate_after_apply", "delay"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, detail: str, field: str | None = None) -> web.Response:
    body: dict[str, str] = {"detail": detail}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status, dumps=dumps)


def service_error_response(error: ServiceError) -> web.Response:
    response = error_response(status_of(error), error.message, error.field)
    if isinstance(error, Overloaded):
        response.headers["Retry-After"] = f"{error.retry_after_seconds:g}"
    if isinstance(error, Conflict):
        response.headers["x-should-retry"] = "false"
    if isinstance(error, Unauthenticated):
        challenge = 'Bearer error="invalid_token"' if error.invalid_token else "Bearer"
        response.headers["WWW-Authenticate"] = challenge
    return response


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    record = service.records.start(request.method, request.path, request.headers)
    request[RECORD_KEY] = record
    response: web.StreamResponse
    error_field: str | None = None
    fault = _fault_for(request, record.case)
    if fault is not None:  # recorded up front: a held client may be gone before the answer
        record.extra["fault"] = fault.describe()
    try:
        if request.path.startswith("/api/") and request.path not in _OPEN_PATHS:
            request[PRINCIPAL_KEY] = service.authenticate(request.headers.get("X-API-Key"))
        if fault is None or fault.kind in _HANDLED_FAULTS:
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.seconds)  # later requests overtake this one
            try:
                response = await handler(request)
            except _InjectedFault as injected:  # the op's own fault, found by `fault_gate`
                response = await _inject(request, injected.rule, injected.request_id)
            fault = fault or request.get(OP_FAULT_KEY)
        else:
            response = await _inject(request, fault)
        if fault is not None:
            if fault.kind == "drop_after_apply" and request.transport is not None:
                request.transport.close()  # the op is in; the client never hears so
            if fault.kind == "truncate_after_apply":
                response = await _send_half(request, response)
    except ServiceError as error:
        response = service_error_response(error)
        record.error, record.error_field = error.message, error.field
        error_field = error.field
    except web.HTTPException as exc:  # routing (404/405) and aiohttp's own limits
        detail = exc.text or exc.reason
        if exc.status == 404:
            detail = f"no endpoint {request.method} {request.path}"
        response = error_response(exc.status, detail)
        record.error = detail
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        detail = f"internal error: {type(exc).__name__}: {exc}"
        response = error_response(500, detail)
        record.error = detail
    record.status = response.status
    service.records.finish(record)
    board = request.app.get(BOARD_KEY)
    if board is not None:
        board.observe(record, error_field)
    return response


async def _send_half(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Promise the whole body (Content-Length), send half of it, close the connection."""
    body = response.body if isinstance(response, web.Response) else None
    payload = body if isinstance(body, bytes) else b""
    partial = web.StreamResponse(status=response.status, headers=response.headers)
    partial.content_length = len(payload)
    await partial.prepare(request)
    await partial.write(payload[: len(payload) // 2])
    if request.transport is not None:
        request.transport.close()
    return partial


def _fault_for(request: web.Request, case: str | None) -> FaultRule | None:
    injector = request.app.get(FAULTS_KEY)
    if injector is None or not request.path.startswith("/api/v1/"):
        return None
    return injector.match(case, request.path.removeprefix("/api/v1/"))


class _InjectedFault(Exception):
    """Raised by `fault_gate` for a fault that answers in the handler's place."""

    def __init__(self, rule: FaultRule, request_id: str | None) -> None:
        super().__init__(rule.describe())
        self.rule = rule
        self.request_id = request_id


async def fault_gate(
    request: web.Request, seq_id: int | None = None, request_id: str | None = None
) -> None:
    """Called by a handler once it knows which op a request carries (`seq_id`) or polls
    (`request_id` of a `retrieve_future`), before the op reaches the service: applies the op's
    fault, if the plan has one. `status`/`pending` answer instead of the handler (raised to
    the middleware); `delay` holds the request here; `drop_after_apply`/`truncate_after_apply`
    are applied by the middleware once the handler has answered."""
    injector = request.app.get(FAULTS_KEY)
    if injector is None:
        return
    record = request[RECORD_KEY]
    target = "submit"
    if request_id is not None:
        target, seq_id = "retrieve", injector.seq_of(record.case, request_id)
    if seq_id is None:
        return
    rule = injector.match_op(record.case, seq_id, target)
    if rule is None:
        return
    record.extra["fault"] = rule.describe()
    request[OP_FAULT_KEY] = rule
    if rule.kind in STATUS_KINDS or rule.kind == "pending":
        raise _InjectedFault(rule, request_id)
    if rule.kind == "delay":
        await asyncio.sleep(rule.seconds)  # later requests overtake this one


def note_submitted(request: web.Request, seq_id: int | None, request_id: str) -> None:
    """Tell the fault injector (if any) which future a training op was answered with."""
    injector = request.app.get(FAULTS_KEY)
    if injector is not None and seq_id is not None:
        injector.note_submitted(request[RECORD_KEY].case, request_id, seq_id)


async def _inject(
    request: web.Request, fault: FaultRule, request_id: str | None = None
) -> web.Response:
    """The answer of a `status`, `outage` or `pending` fault (the handler is not run, or stopped
    at its `fault_gate` with the body read and the polled `request_id` known)."""
    if fault.kind == "pending":
        if request_id is None:
            # Read first: a client that timed out is gone after the hold.
            request_id = str((await request.json()).get("request_id"))
        await asyncio.sleep(fault.seconds)
        return web.json_response(try_again_json(request_id), dumps=dumps)
    response = error_response(fault.status, f"injected fault: {fault.describe()}")
    if fault.retry_after is not None:
        response.headers["Retry-After"] = f"{fault.retry_after:g}"
    if fault.status == 401:  # a rejected token (mock_server/faults.py)
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response
