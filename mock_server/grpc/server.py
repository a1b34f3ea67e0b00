"""The gRPC front end: `tinker_ref.training.v1.TrainingService` on `grpc.aio`, over the service.

Each RPC decodes its message into the typed request the HTTP front end would build
(`convert`), calls the same `TinkerService` — one instance serves both front ends, so a model
created over HTTP is usable over gRPC and seq_id ordering and dedupe span both — and encodes the
typed answer. Around every call, as the HTTP middleware does: a request record (endpoint
`/tinker_ref.training.v1.TrainingService/<Method>`, recorded metadata, seq_id, request id, the
HTTP-equivalent status), authentication from the `x-api-key` metadata, and errors mapped by
`errors`. ForwardBackward arrives as raw bytes and is decoded by the shared codec, exactly like
the HTTP API's protobuf body, so the same input fails with the same message and field.

Deadlines: RetrieveFuture long-polls only as long as the caller's deadline allows (then answers
try_again), and an op that changes state runs to completion even when its caller gives up
(shielded from the cancellation gRPC delivers at the deadline), so a retry under the same seq_id
finds it deduplicated rather than half-applied — the HTTP front end behaves the same way, since
aiohttp does not cancel handlers of dropped connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import json_format

from mock_server.grpc import convert
from mock_server.grpc.errors import code_of, internal_trailers, trailers_of
from mock_server.http.middleware import status_of
from mock_server.service import MalformedRequest, ServiceError, TinkerService
from mock_server.service.auth import Principal
from mock_server.service.records import RequestRecord, forward_backward_summary
from mock_server.service.results import SubmittedFuture
from tinker_ref._proto.tinker_ref.training.v1 import training_pb2 as pb
from tinker_ref.codec import CodecError, decode_forward_backward_request
from tinker_ref.codec.proto_tensor import parse_message

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = "tinker_ref.training.v1.TrainingService"
# Fraction of the remaining deadline a long-poll may use, leaving time for the answer to travel.
_DEADLINE_SHARE = 0.8


@dataclass
class _Call:
    principal: Principal
    record: RequestRecord
    context: grpc.aio.ServicerContext[Any, Any]


_Handler = Callable[[Any, _Call], Awaitable[Any]]


async def _run_to_completion(operation: Awaitable[T]) -> T:
    """Await a state-changing operation that the caller's deadline must not interrupt."""
    task = asyncio.ensure_future(operation)
    # If the caller is gone, nobody reads the outcome; retrieve it so it is not logged as lost.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await asyncio.shield(task)


class TrainingServicer:
    """One coroutine per RPC: request message (bytes for ForwardBackward) -> response message."""

    def __init__(self, service: TinkerService) -> None:
        self.service = service

    async def _submit(
        self, call: _Call, seq_id: int | None, operation: Awaitable[SubmittedFuture]
    ) -> pb.FutureHandle:
        """Run a future-creating op to completion and answer its handle."""
        call.record.seq_id = seq_id
        submitted = await _run_to_completion(operation)
        call.record.request_id = submitted.request_id
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
        await self.service.finish_session(call.principal, request.session_id)
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
        try:
            req = decode_forward_backward_request(request)
        except CodecError as exc:
            raise MalformedRequest(exc.message, exc.field) from exc
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
            call, req.seq_id, self.service.sampling.sample(call.principal, req)
        )

    # ----- futures -----

    async def RetrieveFuture(self, request: pb.RetrieveFutureRequest, call: _Call) -> Any:
        call.record.request_id = request.request_id
        service = self.service
        wait = service.config.long_poll_seconds
        remaining = call.context.time_remaining()
        if remaining is not None:
            wait = max(0.0, min(wait, remaining * _DEADLINE_SHARE))
        record = await service.retrieve(call.principal, request.request_id, timeout=wait)
        if not record.finished:
            return pb.RetrieveFutureResponse(try_again=pb.TryAgain(queue_state="active"))
        response = convert.finished(record)
        service.mark_retrieved(record)
        return response


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
}


def _rpc(service: TinkerService, name: str, handler: _Handler) -> grpc.RpcMethodHandler:
    endpoint = f"/{SERVICE_NAME}/{name}"

    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        record = service.records.start("POST", endpoint, metadata)
        try:
            credential = metadata.get("x-api-key")
            principal = service.authenticate(credential if isinstance(credential, str) else None)
            if request_type is not None:
                request = _parse(request_type, request)
                record.body = json_format.MessageToDict(request, preserving_proto_field_name=True)
            response = await handler(request, _Call(principal, record, context))
        except ServiceError as error:
            record.status, record.error = status_of(error), error.message
            await context.abort(code_of(error), error.message, trailing_metadata=trailers_of(error))
        except Exception as exc:
            log.exception("unhandled error in %s", endpoint)
            detail = f"internal error: {type(exc).__name__}: {exc}"
            record.status, record.error = 500, detail
            await context.abort(
                grpc.StatusCode.INTERNAL, detail, trailing_metadata=internal_trailers()
            )
        record.status = 200
        return response

    request_type = _REQUEST_TYPES[name]
    # Requests arrive as bytes and are parsed in `behaviour`, after authentication (as over
    # HTTP), so a malformed message is INVALID_ARGUMENT with our trailers, not grpc's INTERNAL.
    return grpc.unary_unary_rpc_method_handler(
        behaviour, response_serializer=lambda message: message.SerializeToString()
    )


def _parse(message_type: Any, payload: bytes) -> Any:
    try:
        return parse_message(message_type, payload)
    except CodecError as exc:
        raise MalformedRequest(exc.message, exc.field) from exc


def generic_handler(service: TinkerService) -> grpc.GenericRpcHandler:
    servicer = TrainingServicer(service)
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {name: _rpc(service, name, getattr(servicer, name)) for name in _REQUEST_TYPES},
    )


async def start_grpc(service: TinkerService, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Serve `service` over gRPC on `host:port` (0 = a free port) on the running loop; returns
    the server (stop it with `stop_grpc`) and the bound port."""
    config = service.config
    server = grpc.aio.server(
        options=[
            # The HTTP body cap; above it grpc answers RESOURCE_EXHAUSTED itself.
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            # Without this a second server could bind the same fixed port and share its traffic.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((generic_handler(service),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises this when it cannot bind
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from exc
    await server.start()
    return server, bound


async def stop_grpc(server: grpc.aio.Server, service: TinkerService, grace: float = 10.0) -> None:
    """Stop accepting calls and let running ones finish (at most `grace` seconds); long-polls
    are released first so they answer try_again at once instead of holding the shutdown."""
    service.begin_shutdown()
    await server.stop(grace)
