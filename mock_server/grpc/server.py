"""The gRPC front end: `tinker_ref.training.v1.TrainingService` on `grpc.aio`, over the service.

Each RPC decodes its message into the typed request the HTTP front end would build
(`convert`), calls the same `TinkerService` — one instance serves both front ends, so a model
created over HTTP is usable over gRPC and seq_id ordering and dedupe span both — and encodes the
typed answer. Around every call, as the HTTP middleware does: a request record (endpoint
`/tinker_ref.training.v1.TrainingService/<Method>`, recorded metadata, seq_id, request id, the
HTTP-equivalent status), authentication from the `x-api-key` metadata, and errors mapped by
`errors`. ForwardBackward arrives as raw bytes and is decoded by the shared codec, exactly like
the HTTP API's protobuf body, so the same input fails with the same message and field.

One round trip: RunForwardBackward and RunOptimStep are ForwardBackward and OptimStep answered
on a server stream — the same handler behind the same call wrapper (record, authentication,
faults, errors: the op is submitted exactly as by the unary RPC) sends `accepted` with the
handle, then the stream waits for the op's future as RetrieveFuture would (within the deadline,
else try_again) and sends it as `outcome`, marked retrieved. The record is the submit's (its
status is the submission's); no RetrieveFuture is recorded. When the fault plan addresses
retrieval (`target="retrieve"` rules or the retrieve_future endpoint), the outcome is try_again at
once, so the client's RetrieveFuture polls meet those faults exactly as on the unary path.

Deadlines: RetrieveFuture long-polls only as long as the caller's deadline allows (then answers
try_again), and an op that changes state runs to completion even when its caller gives up
(shielded from the cancellation gRPC delivers at the deadline), so a retry under the same seq_id
finds it deduplicated rather than half-applied — the HTTP front end behaves the same way, since
aiohttp does not cancel handlers of dropped connections.

Fault injection (`mock_server/faults.py`, only with `ServerConfig.fault_plan`): the call wrapper
asks the injector once per call, with the `x-conformance-case` metadata and the RPC's HTTP
endpoint name (`_FAULT_ENDPOINTS`), and answers the rule in gRPC terms: `status` (and every call
of an `outage`) aborts with the status's code and `tinker-http-status` trailer, plus the HTTP
answer's `retry-after` / `www-authenticate` as trailers (handler not run); `drop_after_apply` and
`truncate_after_apply` run the handler, then abort UNAVAILABLE like a lost connection; `pending`
holds a RetrieveFuture (within the deadline) and answers try_again; `delay` sleeps, then handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
import grpc.aio
from google.protobuf import json_format

from mock_server.faults import STATUS_KINDS, FaultInjector, FaultRule
from mock_server.grpc import convert
from mock_server.grpc.errors import (
    HTTP_STATUS_KEY,
    code_of,
    code_of_status,
    internal_trailers,
    trailers_of,
)
from mock_server.service import MalformedRequest, ServiceError, TinkerService
from mock_server.service.auth import Principal
from mock_server.service.errors import status_of
from mock_server.service.records import RequestRecord, forward_backward_summary
from mock_server.service.requests import MalformedOp
from mock_server.service.results import SubmittedFuture
from mock_server.startup import grpc_listener
from tinker_ref._proto.tinker_ref.training.v1 import training_pb2 as pb
from tinker_ref.codec import CodecError, peek_fields
from tinker_ref.codec.proto_tensor import parse_message

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = "tinker_ref.training.v1.TrainingService"
# Fraction of the remaining deadline a long-poll may use, leaving time for the answer to travel.
_DEADLINE_SHARE = 0.8


class _InjectedFault(Exception):
    """Raised by `_Call.fault_gate` for a fault that answers in the handler's place."""


@dataclass
class _Call:
    principal: Principal
    record: RequestRecord
    context: grpc.aio.ServicerContext[Any, Any]
    faults: FaultInjector | None = None
    op_fault: FaultRule | None = None  # the fault `fault_gate` found for this call's op

    async def fault_gate(self, seq_id: int | None = None, request_id: str | None = None) -> None:
        """The op's fault (see mock_server/faults.py), before the op reaches the service:
        `status`/`pending` answer in the handler's place (raised to the call wrapper), `delay`
        holds the call here, the `*_after_apply` kinds are applied once it has answered."""
        if self.faults is None:
            return
        target = "submit"
        if request_id is not None:
            target, seq_id = "retrieve", self.faults.seq_of(self.record.case, request_id)
        if seq_id is None:
            return
        rule = self.faults.match_op(self.record.case, seq_id, target)
        if rule is None:
            return
        self.record.extra["fault"] = rule.describe()
        self.op_fault = rule
        if rule.kind in STATUS_KINDS or rule.kind == "pending":
            raise _InjectedFault(rule.describe())
        if rule.kind == "delay":
            await asyncio.sleep(rule.seconds)  # later calls overtake this one


_Handler = Callable[[Any, _Call], Awaitable[Any]]


async def _run_to_completion(operation: Awaitable[T]) -> T:
    """Await a state-changing operation that the caller's deadline must not interrupt."""
    task = asyncio.ensure_future(operation)
    # If the caller is gone, nobody reads the outcome; retrieve it so it is not logged as lost.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await asyncio.shield(task)


@dataclass(frozen=True)
class _Accepted:
    """What a Run* handler answers: the op's handle, and how to wait for its outcome."""

    handle: pb.FutureHandle
    outcome: Callable[[], Awaitable[pb.RetrieveFutureResponse]]


def _long_poll_seconds(
    service: TinkerService, context: grpc.aio.ServicerContext[Any, Any]
) -> float:
    """How long a wait for a future may hold this call: the long-poll time, within the deadline."""
    wait = service.config.long_poll_seconds
    remaining = context.time_remaining()
    if remaining is not None:
        wait = max(0.0, min(wait, remaining * _DEADLINE_SHARE))
    return wait


def _retrieval_faults(faults: FaultInjector | None) -> bool:
    """Whether the fault plan has rules for polls (which only RetrieveFuture may meet)."""
    return faults is not None and any(
        rule.endpoint == "retrieve_future"
        or (rule.seq_id is not None and rule.target == "retrieve")
        for rule in faults.plan.rules
    )


class TrainingServicer:
    """One coroutine per RPC: request message (bytes for ForwardBackward) -> response message."""

    def __init__(self, service: TinkerService) -> None:
        self.service = service

    async def _submit(
        self,
        call: _Call,
        seq_id: int | None,
        operation: Awaitable[SubmittedFuture],
        training_op: bool = True,
    ) -> pb.FutureHandle:
        """Run a future-creating op to completion and answer its handle; `training_op`: the
        seq_id is a model's (fault rules address those), not a sampling session's."""
        call.record.seq_id = seq_id
        if not training_op:
            seq_id = None
        try:
            await call.fault_gate(seq_id=seq_id)
        except _InjectedFault:
            if asyncio.iscoroutine(operation):
                operation.close()  # never started: the fault answers in its place
            raise
        submitted = await _run_to_completion(operation)
        call.record.request_id = submitted.request_id
        if call.faults is not None and seq_id is not None:
            call.faults.note_submitted(call.record.case, submitted.request_id, seq_id)
        return convert.handle(submitted)

    # ----- configuration and sessions -----

    async def GetClientConfig(self, request: pb.GetClientConfigRequest, call: _Call) -> Any:
        return convert.client_config(self.service.client_config())

    async def GetServerCapabilities(self, request: Any, call: _Call) -> Any:
        return convert.capabilities(self.service.capabilities())

    async def CreateSession(self, request: pb.CreateSessionRequest, call: _Call) -> Any:
        req = convert.create_session(request)
        info = await _run_to_completion(self.service.create_session(call.principal, req))
        return pb.CreateSessionResponse(session_id=info.session_id)

    async def SessionHeartbeat(self, request: pb.SessionHeartbeatRequest, call: _Call) -> Any:
        await self.service.heartbeat(call.principal, request.session_id)
        return pb.SessionHeartbeatResponse()

    async def FinishSession(self, request: pb.FinishSessionRequest, call: _Call) -> Any:
        await self.service.finish_session(
            call.principal, request.session_id, request.reason or None
        )
        return pb.FinishSessionResponse()

    # ----- models and training -----

    async def CreateModel(self, request: pb.CreateModelRequest, call: _Call) -> Any:
        req = convert.create_model(request)
        return await self._submit(
            call, None, self.service.training.create_model(call.principal, req)
        )

    async def GetInfo(self, request: pb.GetInfoRequest, call: _Call) -> Any:
        return convert.model_info(await self.service.get_info(call.principal, request.model_id))

    async def ForwardBackward(self, request: bytes, call: _Call) -> Any:
        req = convert.forward_backward(request)
        # The HTTP front end's summary, so records of both transports compare directly.
        call.record.body = forward_backward_summary(
            req, len(request), None, self.service.config.record_tensors
        )
        training = self.service.training
        return await self._submit(call, req.seq_id, training.forward_backward(call.principal, req))

    async def OptimStep(self, request: pb.OptimStepRequest, call: _Call) -> Any:
        req = convert.optim_step(request)
        return await self._submit(
            call, req.seq_id, self.service.training.optim_step(call.principal, req)
        )

    async def SaveWeights(self, request: pb.SaveWeightsRequest, call: _Call) -> Any:
        req = convert.save_weights(request)
        return await self._submit(
            call, req.seq_id, self.service.training.save_weights(call.principal, req)
        )

    async def SaveWeightsForSampler(
        self, request: pb.SaveWeightsForSamplerRequest, call: _Call
    ) -> Any:
        req = convert.save_weights_for_sampler(request)
        training = self.service.training
        return await self._submit(
            call, req.seq_id, training.save_weights_for_sampler(call.principal, req)
        )

    async def LoadWeights(self, request: pb.LoadWeightsRequest, call: _Call) -> Any:
        req = convert.load_weights(request)
        return await self._submit(
            call, req.seq_id, self.service.training.load_weights(call.principal, req)
        )

    # ----- one round trip: submit, then the outcome on the same stream -----

    async def RunForwardBackward(self, request: bytes, call: _Call) -> _Accepted:
        return self._accepted(call, await self.ForwardBackward(request, call))

    async def RunOptimStep(self, request: pb.OptimStepRequest, call: _Call) -> _Accepted:
        return self._accepted(call, await self.OptimStep(request, call))

    def _accepted(self, call: _Call, handle: pb.FutureHandle) -> _Accepted:
        async def outcome() -> pb.RetrieveFutureResponse:
            if _retrieval_faults(call.faults):
                return pb.RetrieveFutureResponse(try_again=pb.TryAgain(queue_state="active"))
            return await self._outcome(call, handle.request_id)

        return _Accepted(handle, outcome)

    async def _outcome(self, call: _Call, request_id: str) -> pb.RetrieveFutureResponse:
        """RetrieveFuture's answer for `request_id`, waiting within the call's deadline."""
        service = self.service
        wait = _long_poll_seconds(service, call.context)
        record = await service.retrieve(call.principal, request_id, timeout=wait)
        if not record.finished:
            return pb.RetrieveFutureResponse(try_again=pb.TryAgain(queue_state="active"))
        response = convert.finished(record)
        service.mark_retrieved(record)
        return response

    # ----- sampling -----

    async def CreateSamplingSession(
        self, request: pb.CreateSamplingSessionRequest, call: _Call
    ) -> Any:
        req = convert.create_sampling_session(request)
        sampling = self.service.sampling
        sampler_id = await _run_to_completion(sampling.create_sampling_session(call.principal, req))
        return pb.CreateSamplingSessionResponse(sampling_session_id=sampler_id)

    async def GetSampler(self, request: pb.GetSamplerRequest, call: _Call) -> Any:
        info = self.service.sampling.sampler_info(call.principal, request.sampling_session_id)
        return convert.sampler(info)

    async def Sample(self, request: pb.SampleRequest, call: _Call) -> Any:
        req = convert.sample(request)
        return await self._submit(
            call, req.seq_id, self.service.sampling.sample(call.principal, req), training_op=False
        )

    # ----- futures -----

    async def RetrieveFuture(self, request: pb.RetrieveFutureRequest, call: _Call) -> Any:
        call.record.request_id = request.request_id
        await call.fault_gate(request_id=request.request_id)
        return await self._outcome(call, request.request_id)


# The request message of each RPC; None = handed to the servicer as bytes (ForwardBackward:
# the shared codec decodes it, as it decodes the HTTP API's protobuf body).
_REQUEST_TYPES: dict[str, Any] = {
    "GetClientConfig": pb.GetClientConfigRequest,
    "GetServerCapabilities": pb.GetServerCapabilitiesRequest,
    "CreateSession": pb.CreateSessionRequest,
    "SessionHeartbeat": pb.SessionHeartbeatRequest,
    "FinishSession": pb.FinishSessionRequest,
    "CreateModel": pb.CreateModelRequest,
    "GetInfo": pb.GetInfoRequest,
    "ForwardBackward": None,
    "OptimStep": pb.OptimStepRequest,
    "SaveWeights": pb.SaveWeightsRequest,
    "SaveWeightsForSampler": pb.SaveWeightsForSamplerRequest,
    "LoadWeights": pb.LoadWeightsRequest,
    "CreateSamplingSession": pb.CreateSamplingSessionRequest,
    "GetSampler": pb.GetSamplerRequest,
    "Sample": pb.SampleRequest,
    "RetrieveFuture": pb.RetrieveFutureRequest,
    "RunForwardBackward": None,
    "RunOptimStep": pb.OptimStepRequest,
}
# The RPCs answered on a stream (`accepted`, then `outcome`): their submit is an ordinary call.
_STREAMED = frozenset({"RunForwardBackward", "RunOptimStep"})


# Each RPC's endpoint name in fault plans: its HTTP path after /api/v1/ (mock_server/faults.py);
# the two whose HTTP path holds an id (sessions/{id}/finish, samplers/{id}) get a plain name.
_FAULT_ENDPOINTS: dict[str, str] = {
    "GetClientConfig": "client/config",
    "GetServerCapabilities": "get_server_capabilities",
    "CreateSession": "create_session",
    "SessionHeartbeat": "session_heartbeat",
    "FinishSession": "finish_session",
    "CreateModel": "create_model",
    "GetInfo": "get_info",
    "ForwardBackward": "forward_backward",
    "OptimStep": "optim_step",
    "SaveWeights": "save_weights",
    "SaveWeightsForSampler": "save_weights_for_sampler",
    "LoadWeights": "load_weights",
    "CreateSamplingSession": "create_sampling_session",
    "GetSampler": "get_sampler",
    "Sample": "asample",
    "RetrieveFuture": "retrieve_future",
    # The one-round-trip RPCs submit the same ops: the same faults address them.
    "RunForwardBackward": "forward_backward",
    "RunOptimStep": "optim_step",
}
# Faults after which the handler still runs (`status` and `pending` answer in its place).
_HANDLED_FAULTS = frozenset({"drop_after_apply", "truncate_after_apply", "delay"})


def _rpc(
    service: TinkerService, name: str, handler: _Handler, faults: FaultInjector | None
) -> grpc.RpcMethodHandler:
    endpoint = f"/{SERVICE_NAME}/{name}"
    fault_endpoint = _FAULT_ENDPOINTS[name]

    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        record = service.records.start("POST", endpoint, metadata)
        try:
            return await answer(request, context, metadata, record)
        finally:
            service.records.finish(record)  # the per-request log line, however it ended

    async def answer(
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        metadata: dict[str, Any],
        record: RequestRecord,
    ) -> Any:
        # Matched before authentication and recorded up front, as the HTTP middleware does.
        fault = None if faults is None else faults.match(record.case, fault_endpoint)
        if fault is not None:
            record.extra["fault"] = fault.describe()
        response: Any = None  # stays None only for a `status` fault, which aborts below
        try:
            credential = metadata.get("x-api-key")
            principal = service.authenticate(credential if isinstance(credential, str) else None)
            raw = request
            try:
                if request_type is not None:
                    request = _parse(request_type, request)
                    record.body = json_format.MessageToDict(
                        request, preserving_proto_field_name=True
                    )
                call = _Call(principal, record, context, faults)
                if fault is None or fault.kind in _HANDLED_FAULTS:
                    if fault is not None and fault.kind == "delay":
                        await asyncio.sleep(fault.seconds)  # later calls overtake this one
                    # The op's own fault (`_Call.fault_gate`) is answered below, from op_fault.
                    with contextlib.suppress(_InjectedFault):
                        response = await handler(request, call)
                    fault = fault or call.op_fault
                    if fault is not None and fault.kind == "pending":
                        response = await _hold_pending(call, fault)
                elif fault.kind == "pending":  # RetrieveFuture only (FaultRule checks it)
                    response = await _hold_pending(call, fault)
            except MalformedRequest as error:
                if name in _SEQUENCED:
                    await _refuse_malformed(service, principal, name, raw, error)
                raise
        except ServiceError as error:
            record.status, record.error = status_of(error), error.message
            record.error_field = error.field
            await context.abort(code_of(error), error.message, trailing_metadata=trailers_of(error))
        except Exception as exc:
            log.exception("unhandled error in %s", endpoint)
            detail = f"internal error: {type(exc).__name__}: {exc}"
            record.status, record.error = 500, detail
            await context.abort(
                grpc.StatusCode.INTERNAL, detail, trailing_metadata=internal_trailers()
            )
        if fault is not None and fault.kind in STATUS_KINDS:
            # The handler did not run. The code and `tinker-http-status` trailer make tinker_ref
            # raise and retry as it does for this status over HTTP; the headers the HTTP answer
            # would carry travel as trailers of the same names (tinker_ref's retry policy reads
            # `retry-after` in either).
            record.status = fault.status
            await context.abort(
                code_of_status(fault.status),
                f"injected fault: {fault.describe()}",
                trailing_metadata=_status_fault_trailers(fault),
            )
        record.status = 200
        if fault is not None and fault.kind in ("drop_after_apply", "truncate_after_apply"):
            # The op is applied; the answer is lost. gRPC frames whole messages, so a cut body
            # and a dropped connection look alike to a client: UNAVAILABLE without our trailers,
            # which tinker_ref retries under the same seq_id (the service deduplicates it).
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"injected fault: {fault.kind}")
        return response

    async def streamed(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.RunUpdate]:
        accepted: _Accepted = await behaviour(request, context)  # the submit, as a unary call
        yield pb.RunUpdate(accepted=accepted.handle)
        try:
            outcome = await accepted.outcome()
        except ServiceError as error:  # the future is gone (expired): as RetrieveFuture answers
            await context.abort(code_of(error), error.message, trailing_metadata=trailers_of(error))
        yield pb.RunUpdate(outcome=outcome)

    request_type = _REQUEST_TYPES[name]
    # Requests arrive as bytes and are parsed in `behaviour`, after authentication (as over
    # HTTP), so a malformed message is INVALID_ARGUMENT with our trailers, not grpc's INTERNAL.
    if name in _STREAMED:
        return grpc.unary_stream_rpc_method_handler(
            streamed, response_serializer=lambda message: message.SerializeToString()
        )
    return grpc.unary_unary_rpc_method_handler(
        behaviour, response_serializer=lambda message: message.SerializeToString()
    )


def _status_fault_trailers(fault: FaultRule) -> tuple[tuple[str, str], ...]:
    trailers = [(HTTP_STATUS_KEY, str(fault.status))]
    if fault.retry_after is not None:
        trailers.append(("retry-after", f"{fault.retry_after:g}"))
    if fault.status == 401:  # a rejected token (mock_server/faults.py)
        trailers.append(("www-authenticate", 'Bearer error="invalid_token"'))
    return tuple(trailers)


async def _hold_pending(call: _Call, fault: FaultRule) -> pb.RetrieveFutureResponse:
    """A `pending` fault: hold the poll `fault.seconds` (no longer than the normal long-poll
    may, given the deadline) and answer try_again without looking at the future."""
    hold = fault.seconds
    remaining = call.context.time_remaining()
    if remaining is not None:
        hold = max(0.0, min(hold, remaining * _DEADLINE_SHARE))
    await asyncio.sleep(hold)
    return pb.RetrieveFutureResponse(try_again=pb.TryAgain(queue_state="active"))


# RPCs whose requests consume a model's seq_id: top-level model_id = 1 and seq_id = 2, as the
# ForwardBackward body of the HTTP API. (LoadWeights nests them: a LoadWeightsRequest that cannot
# be parsed has no readable ids; one that parses but lacks its target has none to consume.)
_SEQUENCED = frozenset(
    {
        "ForwardBackward",
        "OptimStep",
        "SaveWeights",
        "SaveWeightsForSampler",
        "RunForwardBackward",
        "RunOptimStep",
    }
)


async def _refuse_malformed(
    service: TinkerService, principal: Principal, name: str, payload: bytes, error: MalformedRequest
) -> NoReturn:
    """A malformed request to a sequenced RPC consumes its seq_id when its `(model_id,
    seq_id)` can be read from the bytes, as over HTTP; then the error is answered."""
    model_id, seq_id = peek_fields(payload, strings=1, integers=2)
    if model_id is not None and seq_id is not None:
        digest = hashlib.sha256(payload).hexdigest()
        endpoint = _FAULT_ENDPOINTS[name]
        malformed = MalformedOp(model_id, seq_id, endpoint, digest, error.message, error.field)
        await service.training.reject_malformed(principal, malformed)
    raise error


def _parse(message_type: Any, payload: bytes) -> Any:
    try:
        return parse_message(message_type, payload)
    except CodecError as exc:
        raise MalformedRequest(exc.message, exc.field) from exc


def generic_handler(
    service: TinkerService, faults: FaultInjector | None = None
) -> grpc.GenericRpcHandler:
    servicer = TrainingServicer(service)
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {name: _rpc(service, name, getattr(servicer, name), faults) for name in _REQUEST_TYPES},
    )


async def start_grpc(
    service: TinkerService, host: str, port: int, faults: FaultInjector | None = None
) -> tuple[grpc.aio.Server, int]:
    """Serve `service` over gRPC on `host:port` (0 = a free port) on the running loop; returns
    the server (stop it with `stop_grpc`) and the bound port. `faults`: the HTTP app's injector,
    so one count per (case, endpoint) spans both front ends; None = a new one when the config
    has a fault plan."""
    config = service.config
    if faults is None and config.fault_plan is not None:  # only an explicit plan injects faults
        faults = FaultInjector(config.fault_plan)
    server, bound = grpc_listener(host, port, config.max_body_bytes)
    server.add_generic_rpc_handlers((generic_handler(service, faults),))
    await server.start()
    return server, bound


async def stop_grpc(server: grpc.aio.Server, service: TinkerService, grace: float = 10.0) -> None:
    """Stop accepting calls and let running ones finish (at most `grace` seconds); long-polls
    are released first so they answer try_again at once instead of holding the shutdown."""
    service.begin_shutdown()
    await server.stop(grace)
