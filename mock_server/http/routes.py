"""The HTTP handlers: decode the body, call the service, encode the answer.

One handler per endpoint of the official API (spec WIRE-1), plus the JSON-era
`/api/v1/forward` and the mock's own `GET /_mock/requests` (the request record, for tests and
conformance runs). Handlers hold no state and no logic beyond translation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from aiohttp import web

from mock_server.http import encode, parse
from mock_server.http.bodies import (
    JSON,
    PROTOBUF,
    parse_json,
    read_body,
    require_media_type,
)
from mock_server.http.encode import dumps
from mock_server.http.keys import BOARD_KEY, PRINCIPAL_KEY, RECORD_KEY, SERVICE_KEY
from mock_server.http.middleware import fault_gate, note_submitted
from mock_server.http.status_board import CUSTOM_LOSS_HEADER, parse_custom_loss
from mock_server.http.status_page import status_page
from mock_server.service import MalformedRequest, TinkerService
from mock_server.service.auth import Principal
from mock_server.service.fingerprint import fingerprint
from mock_server.service.records import forward_backward_summary
from mock_server.service.requests import ForwardBackward, MalformedOp
from mock_server.service.results import SubmittedFuture
from tinker_ref.codec import peek_fields

API = "/api/v1"
T = TypeVar("T")


def _service(request: web.Request) -> TinkerService:
    return request.app[SERVICE_KEY]


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


async def _read_json(request: web.Request) -> Any:
    require_media_type(request, JSON)
    config = _service(request).config
    body = parse_json(
        await read_body(request, config.max_body_bytes, config.max_decompressed_bytes)
    )
    request[RECORD_KEY].body = body
    return body


def _submitted(request: web.Request, submitted: SubmittedFuture) -> web.Response:
    record = request[RECORD_KEY]
    record.request_id = submitted.request_id
    return _json(encode.submitted_json(submitted))


def _submitted_op(request: web.Request, submitted: SubmittedFuture) -> web.Response:
    """`_submitted` for a training op: its future's polls become addressable by fault rules."""
    note_submitted(request, request[RECORD_KEY].seq_id, submitted.request_id)
    return _submitted(request, submitted)


def _note_seq(request: web.Request, body: Any) -> None:
    if isinstance(body, dict) and isinstance(body.get("seq_id"), int):
        request[RECORD_KEY].seq_id = body["seq_id"]


def _sequence_ids(body: Any) -> tuple[str, int] | None:
    """`(model_id, seq_id)` of a JSON body, when both can be read."""
    if not isinstance(body, dict):
        return None
    model_id, seq_id = body.get("model_id"), body.get("seq_id")
    if isinstance(model_id, str) and isinstance(seq_id, int) and not isinstance(seq_id, bool):
        return model_id, seq_id
    return None


async def _refuse_malformed(
    request: web.Request,
    endpoint: str,
    ids: tuple[str | None, int | None] | None,
    body_digest: str,
    error: MalformedRequest,
) -> NoReturn:
    """Answer a malformed request to a sequenced endpoint; when its `(model_id, seq_id)` could
    be read, the service consumes that seq_id first (as it does for any rejected op)."""
    if ids is not None and ids[0] is not None and ids[1] is not None:
        malformed = MalformedOp(ids[0], ids[1], endpoint, body_digest, error.message, error.field)
        await _service(request).training.reject_malformed(_principal(request), malformed)
    raise error


async def _read_sequenced(request: web.Request, endpoint: str, parser: Callable[[Any], T]) -> T:
    """A sequenced op's JSON body, parsed by `parser`; see `_refuse_malformed`."""
    body = await _read_json(request)
    _note_seq(request, body)
    try:
        req = parser(body)
    except MalformedRequest as error:
        await _refuse_malformed(request, endpoint, _sequence_ids(body), fingerprint(body), error)
    await fault_gate(request, seq_id=getattr(req, "seq_id", None))
    return req


# ----- configuration, auth, health -----


async def client_config(request: web.Request) -> web.Response:
    await _read_json(request)
    return _json(_service(request).client_config())


async def dynamic_config(request: web.Request) -> web.Response:
    await _read_json(request)
    return _json(_service(request).dynamic_config())


async def auth_token(request: web.Request) -> web.Response:
    await _read_json(request)
    return _json({"jwt": _service(request).issue_token(_principal(request))})


async def server_capabilities(request: web.Request) -> web.Response:
    return _json(encode.capabilities_json(_service(request).capabilities()))


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def telemetry(request: web.Request) -> web.Response:
    await _read_json(request)
    return _json({"status": "accepted"})


# ----- sessions and models -----


async def create_session(request: web.Request) -> web.Response:
    req = parse.create_session(await _read_json(request))
    info = await _service(request).create_session(_principal(request), req)
    return _json({"type": "create_session", "session_id": info.session_id})


async def session_heartbeat(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    await _service(request).heartbeat(_principal(request), fields.text("session_id"))
    return _json({"type": "session_heartbeat"})


async def finish_session(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    reason = fields.obj("reason", required=False)
    await _service(request).finish_session(
        _principal(request),
        request.match_info["session_id"],
        reason.opt_text("type") if reason is not None else None,
        fields.opt_text("detail"),
    )
    return _json({})


async def create_model(request: web.Request) -> web.Response:
    req = parse.create_model(await _read_json(request))
    return _submitted(
        request, await _service(request).training.create_model(_principal(request), req)
    )


async def get_info(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    info = await _service(request).get_info(_principal(request), fields.text("model_id"))
    return _json(encode.model_info_json(info))


# ----- training -----


async def _forward_backward(request: web.Request, forward_only_endpoint: bool) -> web.Response:
    service = _service(request)
    config = service.config
    # The protobuf era (SDK >= 0.25) posts protobuf; the JSON era (SDK <= 0.22, Tinkex) JSON.
    media = (
        require_media_type(request, JSON)
        if forward_only_endpoint
        else require_media_type(request, PROTOBUF, JSON)
    )
    raw = await read_body(request, config.max_body_bytes, config.max_decompressed_bytes)
    endpoint = "forward" if forward_only_endpoint else "forward_backward"
    req: ForwardBackward
    if media == PROTOBUF:
        try:
            req = parse.forward_backward_proto(raw)
        except MalformedRequest as error:
            peeked = peek_fields(raw, strings=1, integers=2)  # model_id = 1, seq_id = 2
            digest = hashlib.sha256(raw).hexdigest()
            await _refuse_malformed(request, endpoint, peeked, digest, error)
    else:
        body = parse_json(raw)
        try:
            req = parse.forward_backward_json(body, forward_only=forward_only_endpoint)
        except MalformedRequest as error:
            ids = _sequence_ids(body)
            await _refuse_malformed(request, endpoint, ids, fingerprint(body), error)
    record = request[RECORD_KEY]
    record.seq_id = req.seq_id
    record.body = forward_backward_summary(
        req, len(raw), request.headers.get("Content-Encoding"), config.record_tensors
    )
    # A custom-loss backward may carry the client's loss for the status page (status_board).
    try:
        custom_loss = parse_custom_loss(request.headers.get(CUSTOM_LOSS_HEADER))
    except MalformedRequest as error:
        digest = hashlib.sha256(raw).hexdigest()
        await _refuse_malformed(request, endpoint, (req.model_id, req.seq_id), digest, error)
    if custom_loss is not None:
        record.extra["custom_loss"] = custom_loss
    await fault_gate(request, seq_id=req.seq_id)
    submitted = await service.training.forward_backward(_principal(request), req)
    if custom_loss is not None:
        request.app[BOARD_KEY].note_custom_loss(req.model_id, req.seq_id, custom_loss)
    return _submitted_op(request, submitted)


async def forward_backward(request: web.Request) -> web.Response:
    return await _forward_backward(request, forward_only_endpoint=False)


async def forward(request: web.Request) -> web.Response:
    return await _forward_backward(request, forward_only_endpoint=True)


async def optim_step(request: web.Request) -> web.Response:
    req = await _read_sequenced(request, "optim_step", parse.optim_step)
    return _submitted_op(
        request, await _service(request).training.optim_step(_principal(request), req)
    )


async def save_weights(request: web.Request) -> web.Response:
    req = await _read_sequenced(request, "save_weights", parse.save_weights)
    return _submitted_op(
        request, await _service(request).training.save_weights(_principal(request), req)
    )


async def save_weights_for_sampler(request: web.Request) -> web.Response:
    req = await _read_sequenced(request, "save_weights_for_sampler", parse.save_weights_for_sampler)
    training = _service(request).training
    submitted = await training.save_weights_for_sampler(_principal(request), req)
    return _submitted_op(request, submitted)


async def load_weights(request: web.Request) -> web.Response:
    req = await _read_sequenced(request, "load_weights", parse.load_weights)
    return _submitted_op(
        request, await _service(request).training.load_weights(_principal(request), req)
    )


async def weights_info(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    training = _service(request).training
    info = await training.weights_info(_principal(request), fields.text("tinker_path"))
    return _json(encode.weights_info_json(info))


async def create_custom_loss(request: web.Request) -> web.Response:
    req = parse.create_custom_loss(await _read_json(request))
    training = _service(request).training
    return _submitted(request, await training.create_custom_loss(_principal(request), req))


# ----- sampling -----


async def create_sampling_session(request: web.Request) -> web.Response:
    req = parse.create_sampling_session(await _read_json(request))
    sampler_id = await _service(request).sampling.create_sampling_session(_principal(request), req)
    return _json({"type": "create_sampling_session", "sampling_session_id": sampler_id})


async def get_sampler(request: web.Request) -> web.Response:
    info = _service(request).sampling.sampler_info(
        _principal(request), request.match_info["sampler_id"]
    )
    return _json(encode.sampler_json(info))


async def join_sampling_session(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    counter = _service(request).sampling.join(
        _principal(request), fields.text("sampling_session_id")
    )
    return _json({"type": "join_sampling_session", "client_counter": counter})


async def asample(request: web.Request) -> web.Response:
    body = await _read_json(request)
    _note_seq(request, body)
    req = parse.sample(body)
    return _submitted(request, await _service(request).sampling.sample(_principal(request), req))


# ----- futures -----


async def retrieve_future(request: web.Request) -> web.Response:
    service = _service(request)
    fields = parse.Fields(await _read_json(request))
    request_id = fields.text("request_id")
    allow_metadata_only = fields.flag("allow_metadata_only", False)
    request[RECORD_KEY].request_id = request_id
    await fault_gate(request, request_id=request_id)
    record = await service.retrieve(_principal(request), request_id)
    if not record.finished:
        # Only after a long-poll: the SDK re-polls try_again with no delay (spec FUT-2).
        return _json(encode.try_again_json(request_id))
    request.app[BOARD_KEY].note_outcome(request_id, record.failure, record.result)
    if record.failure is not None:
        service.mark_retrieved(record)
        return _json(encode.failure_json(record.failure))
    wire = encode.wire_format(record.result, request.headers.get("Accept", JSON))
    payload = record.wire_cache.get(wire)
    if payload is None:
        payload = record.wire_cache[wire] = encode.encode_result(record.result, wire)
    if (
        allow_metadata_only
        and not record.metadata_sent
        and len(payload) > service.config.metadata_threshold_bytes
    ):
        # Announce a large payload once; the SDK reserves the bytes and asks again without
        # allow_metadata_only (a second announcement would trip its assertion).
        record.metadata_sent = True
        return _json({"status": "complete_metadata", "response_payload_size": len(payload)})
    service.mark_retrieved(record)
    return web.Response(body=payload, content_type=wire)


async def cancel_future(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    await _service(request).cancel(_principal(request), fields.text("request_id"))
    return _json({})


# ----- the mock's own endpoints -----


async def mock_requests(request: web.Request) -> web.Response:
    case = request.query.get("case")
    records = _service(request).records.records(case)
    return _json({"requests": [r.to_json() for r in records]})


def add_routes(app: web.Application) -> None:
    post = {
        "client/config": client_config,
        "client/dynamic_config": dynamic_config,
        "auth/token": auth_token,
        "telemetry": telemetry,
        "create_session": create_session,
        "session_heartbeat": session_heartbeat,
        "sessions/{session_id}/finish": finish_session,
        "create_model": create_model,
        "get_info": get_info,
        "forward_backward": forward_backward,
        "forward": forward,
        "optim_step": optim_step,
        "save_weights": save_weights,
        "save_weights_for_sampler": save_weights_for_sampler,
        "load_weights": load_weights,
        "weights_info": weights_info,
        "create_custom_loss": create_custom_loss,
        "create_sampling_session": create_sampling_session,
        "join_sampling_session": join_sampling_session,
        "asample": asample,
        "retrieve_future": retrieve_future,
        "cancel_future": cancel_future,
    }
    get = {
        "get_server_capabilities": server_capabilities,
        "healthz": healthz,
        "samplers/{sampler_id}": get_sampler,
    }
    for path, handler in post.items():
        app.router.add_post(f"{API}/{path}", handler)
    for path, handler in get.items():
        app.router.add_get(f"{API}/{path}", handler, allow_head=False)
    app.router.add_get("/_mock/requests", mock_requests, allow_head=False)
    app.router.add_get("/", status_page, allow_head=False)  # for people: status_page.py
