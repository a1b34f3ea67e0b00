"""The gRPC transport: the same operations over `tinker_ref.training.v1.TrainingService`.

Semantics mirror the HTTP transport: ops return a FutureHandle, `RetrieveFuture` long-polls
for the outcome, retries resend the same request, so a retried op keeps its seq_id. The
forward/backward request is sent as the bytes the shared codec produced, with no second
encoding. gRPC errors become `tinker_ref.errors` exceptions here, at the edge (`_translate`):
the server's trailing metadata `tinker-http-status` selects the same exception class the HTTP
transport raises, and the trailers travel as the error's headers (`x-should-retry`,
`retry-after`), so the one retry policy (tinker_ref/retry.py) decides for both wires. Errors
without that trailer come from gRPC itself: UNAVAILABLE is no answer (APIConnectionError),
DEADLINE_EXCEEDED a timeout (APITimeoutError), ABORTED 409, INTERNAL/UNKNOWN/DATA_LOSS 500 (all
retried) and RESOURCE_EXHAUSTED grpc's message-size limit (413, not retried).

gRPC has no token exchange: the API key travels as `x-api-key` metadata on every call.

One round trip, gRPC's advantage: forward, forward_backward (and so the custom loss's two
passes) and optim_step use `RunForwardBackward` / `RunOptimStep`, which answer on one server
stream — first `accepted` (the FutureHandle: the op holds its place in the model's queue, so the
TrainingClient passes the turn to the next op exactly as after a submit), then `outcome` once the
op has run. HTTP needs a second request (retrieve_future) for the result; here the result
arrives on the call that submitted the op, with no poll. Retries: until `accepted` arrives the
whole call is retried under the retry policy with the same request (same seq_id, so the service
deduplicates it); once accepted, a stream that breaks or answers try_again (the op outlasted
the deadline) continues with RetrieveFuture polls of the handle's request_id, as the
submit-then-retrieve path does. Against a server without these RPCs (UNIMPLEMENTED, without our
`tinker-http-status` trailer: nothing was submitted) the transport falls back to
ForwardBackward/OptimStep + RetrieveFuture for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from tinker_ref._proto.tinker_ref.training.v1 import training_pb2 as pb
from tinker_ref.codec import (
    decode_forward_backward_output,
    decode_sample_response,
    encode_forward_backward_request,
)
from tinker_ref.codec.proto_tensor import write_chunk
from tinker_ref.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    RequestFailedError,
    status_error,
)
from tinker_ref.retry import PollPacer, RetryConfig, RetryPolicy
from tinker_ref.transport.base import ClientConfig, DeferredResult, LossFnConfig
from tinker_ref.types import (
    AdamParams,
    Datum,
    ForwardBackwardOutput,
    LoraConfig,
    ModelInput,
    SampleResponse,
    SamplingParams,
)
from tinker_ref.types.responses import (
    GetInfoResponse,
    GetServerCapabilitiesResponse,
    LoadWeightsResponse,
    ModelData,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    SupportedModel,
)

T = TypeVar("T")
_SERVICE = "/tinker_ref.training.v1.TrainingService/"

# gRPC status -> the HTTP status the same failure has on the HTTP API, for errors that do not
# carry the server's `tinker-http-status` trailer.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 410,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,  # grpc's own message-size limit
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
}
HTTP_STATUS_KEY = "tinker-http-status"


def _trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {
        key: value
        for key, value in (error.trailing_metadata() or ())
        if isinstance(value, str)  # "-bin" keys carry bytes; none of ours do
    }


def _server_status(trailers: Mapping[str, str]) -> int | None:
    try:
        return int(trailers[HTTP_STATUS_KEY])
    except (KeyError, ValueError):
        return None


def _translate(error: grpc.aio.AioRpcError, method: str) -> Exception:
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return APITimeoutError(f"{method} timed out")
    trailers = _trailers(error)
    status = _server_status(trailers)
    if status is None and code == grpc.StatusCode.UNAVAILABLE:
        return APIConnectionError(f"{method}: {error.details()}")
    body = {"detail": error.details(), "field": trailers.get("tinker-field")}
    status = status if status is not None else HTTP_STATUS.get(code, 500)
    return status_error(status, body, trailers)


class GrpcTransport:
    def __init__(
        self,
        target: str,
        api_key: str,
        retry: RetryConfig | None = None,
        timeout: float = 60.0,
        *,
        poll_timeout: float = 45.0,
        heartbeat_timeout: float = 10.0,
        one_round_trip: bool = True,
    ) -> None:
        self.target = target
        self._metadata = (("x-api-key", api_key),)
        self.retry = RetryPolicy(retry)
        self._timeout = timeout  # seconds per call (the deadline), as the HTTP request timeout
        self._poll_timeout = poll_timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._channel: grpc.aio.Channel | None = None
        # Run* RPCs for forward/backward and optim_step; False: submit-then-retrieve (also set
        # once the server answered UNIMPLEMENTED to a Run* RPC).
        self.one_round_trip = one_round_trip
        self._stubs: dict[tuple[str, bool, Any], Any] = {}

    def _channel_for_calls(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ],
            )
            self._stubs = {}
        return self._channel

    def _call(
        self, method: str, request: Any, response_type: Any, *, raw: bool, timeout: float
    ) -> Callable[[], Awaitable[Any]]:
        channel = self._channel_for_calls()
        key = (method, raw, response_type)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = channel.unary_unary(
                _SERVICE + method,
                request_serializer=_raw if raw else _serialize,
                response_deserializer=response_type.FromString,
            )
        return lambda: stub(request, metadata=self._metadata, timeout=timeout)

    async def _unary(
        self,
        method: str,
        request: Any,
        response_type: Any,
        *,
        raw: bool = False,
        retries: bool = True,
        retry_rate_limits: bool = True,
        timeout: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> Any:
        """One logical call, retried under the retry policy (the transport's, or `policy`: a
        SamplingClient's own `retry_config`); the same request on every try."""
        call = self._call(method, request, response_type, raw=raw, timeout=timeout or self._timeout)

        async def attempt(retries_taken: int) -> Any:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                raise _translate(error, method) from error

        if not retries:
            return await attempt(0)
        return await (policy or self.retry).call(
            attempt, method, retry_rate_limits=retry_rate_limits
        )

    async def _retrieve(
        self,
        request_id: str,
        decode: Callable[[pb.RetrieveFutureResponse], T],
        policy: RetryPolicy | None = None,
    ) -> T:
        """Long-poll one future until it has an outcome; polls paced by the retry policy."""
        pacer = PollPacer(policy or self.retry, f"future {request_id}")
        while True:
            try:
                response = await self._unary(
                    "RetrieveFuture",
                    pb.RetrieveFutureRequest(request_id=request_id),
                    pb.RetrieveFutureResponse,
                    retries=False,
                    timeout=self._poll_timeout,
                )
            except APIError as error:
                await pacer.failed(error)
                continue
            pacer.answered()
            if response.WhichOneof("outcome") == "try_again":
                continue
            return _outcome(response, request_id, decode)

    def _pending(
        self,
        handle: pb.FutureHandle,
        decode: Callable[[pb.RetrieveFutureResponse], T],
        policy: RetryPolicy | None = None,
    ) -> DeferredResult[T]:
        async def fetch(request_id: str) -> T:
            return await self._retrieve(request_id, decode, policy)

        return DeferredResult(handle.request_id, fetch)

    async def _run(
        self,
        method: str,
        request: Any,
        decode: Callable[[pb.RetrieveFutureResponse], T],
        *,
        raw: bool = False,
    ) -> DeferredResult[T] | None:
        """Submit with a one-round-trip RPC: returns once the op is accepted, with a result that
        reads the outcome from the same stream; None when the server lacks the RPC."""
        channel = self._channel_for_calls()
        key = (method, raw, pb.RunUpdate)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = channel.unary_stream(
                _SERVICE + method,
                request_serializer=_raw if raw else _serialize,
                response_deserializer=pb.RunUpdate.FromString,
            )

        async def attempt(retries_taken: int) -> tuple[Any, pb.FutureHandle] | None:
            call = stub(request, metadata=self._metadata, timeout=self._timeout)
            try:
                update = await call.read()
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED and (
                    _server_status(_trailers(error)) is None
                ):
                    return None  # not this server's RPC: nothing was submitted
                raise _translate(error, method) from error
            if update is grpc.aio.EOF or update.WhichOneof("update") != "accepted":
                call.cancel()
                raise APIConnectionError(f"{method}: the stream ended before `accepted`")
            return call, update.accepted

        started = await self.retry.call(attempt, method)
        if started is None:
            self.one_round_trip = False
            return None
        call, handle = started
        outcome: asyncio.Future[T] | None = None

        async def read_outcome(request_id: str) -> T:
            try:
                update = await call.read()
            except grpc.aio.AioRpcError:
                update = None  # the stream broke after acceptance: poll, as after a submit
            if (
                isinstance(update, pb.RunUpdate)
                and update.WhichOneof("update") == "outcome"
                and update.outcome.WhichOneof("outcome") != "try_again"
            ):
                return _outcome(update.outcome, request_id, decode)
            call.cancel()
            return await self._retrieve(request_id, decode)

        async def fetch(request_id: str) -> T:
            nonlocal outcome
            if outcome is None:  # one read of the stream, however often the result is asked
                outcome = asyncio.ensure_future(read_outcome(request_id))
            return await asyncio.shield(outcome)

        return DeferredResult(handle.request_id, fetch)

    # ----- the API -----------------------------------------------------------------------------

    async def start(self) -> ClientConfig:
        config = await self._unary(
            "GetClientConfig", pb.GetClientConfigRequest(sdk_version="0.38.0"), pb.ClientConfig
        )
        # The service's flow-control sizes and billing pause are not in the gRPC message:
        # the SDK's defaults apply.
        return ClientConfig(
            fwdbwd_max_chunk_len=config.fwdbwd_max_chunk_len,
            fwdbwd_max_chunk_bytes_count=config.fwdbwd_max_chunk_bytes_count,
            parallel_fwdbwd_chunks=config.parallel_fwdbwd_chunks,
            custom_loss_server_side=config.custom_loss_server_side,
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        response = await self._unary(
            "GetServerCapabilities",
            pb.GetServerCapabilitiesRequest(),
            pb.GetServerCapabilitiesResponse,
        )
        return GetServerCapabilitiesResponse(
            [
                SupportedModel(m.model_name, m.max_context_length, m.trainable, m.sampleable)
                for m in response.supported_models
            ]
        )

    async def create_session(
        self, tags: Sequence[str], user_metadata: Mapping[str, str], project_id: str | None
    ) -> str:
        request = pb.CreateSessionRequest(
            tags=list(tags), user_metadata=dict(user_metadata), sdk_version="0.38.0"
        )
        if project_id is not None:
            request.project_id = project_id
        response = await self._unary("CreateSession", request, pb.CreateSessionResponse)
        return str(response.session_id)

    async def session_heartbeat(self, session_id: str) -> None:
        await self._unary(
            "SessionHeartbeat",
            pb.SessionHeartbeatRequest(session_id=session_id),
            pb.SessionHeartbeatResponse,
            retries=False,
            timeout=self._heartbeat_timeout,
        )

    async def finish_session(self, session_id: str, reason: str, detail: str | None) -> None:
        await self._unary(
            "FinishSession",
            pb.FinishSessionRequest(session_id=session_id, reason=reason),
            pb.FinishSessionResponse,
        )

    async def create_model(
        self,
        session_id: str,
        model_seq_id: int,
        base_model: str,
        lora: LoraConfig,
        user_metadata: Mapping[str, str] | None,
    ) -> DeferredResult[str]:
        lora_config = pb.LoraConfig(
            rank=lora.rank,
            train_mlp=lora.train_mlp,
            train_attn=lora.train_attn,
            train_unembed=lora.train_unembed,
        )
        if lora.seed is not None:
            lora_config.seed = lora.seed
        request = pb.CreateModelRequest(
            session_id=session_id,
            model_seq_id=model_seq_id,
            base_model=base_model,
            lora_config=lora_config,
            user_metadata=dict(user_metadata or {}),
        )
        handle = await self._unary("CreateModel", request, pb.FutureHandle)
        return self._pending(handle, lambda r: str(r.create_model.model_id))

    async def get_info(self, model_id: str) -> GetInfoResponse:
        response = await self._unary(
            "GetInfo", pb.GetInfoRequest(model_id=model_id), pb.GetInfoResponse
        )
        return GetInfoResponse(
            model_id=response.model_id,
            model_data=ModelData(response.arch, response.model_name, response.tokenizer_id),
            is_lora=response.is_lora,
            lora_rank=response.lora_rank,
            model_name=response.model_name,
        )

    async def forward_backward(
        self,
        model_id: str,
        seq_id: int,
        data: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: LossFnConfig | None,
        forward_only: bool,
        custom_loss: float | None = None,  # not reported over gRPC (the status page is HTTP's)
    ) -> DeferredResult[ForwardBackwardOutput]:
        payload = encode_forward_backward_request(
            model_id, seq_id, data, loss_fn, loss_fn_config, forward_only
        )
        if self.one_round_trip:
            ran = await self._run("RunForwardBackward", payload, _forward_backward, raw=True)
            if ran is not None:
                return ran
        handle = await self._unary("ForwardBackward", payload, pb.FutureHandle, raw=True)
        return self._pending(handle, _forward_backward)

    async def optim_step(
        self, model_id: str, seq_id: int, adam_params: AdamParams
    ) -> DeferredResult[OptimStepResponse]:
        request = pb.OptimStepRequest(
            model_id=model_id, seq_id=seq_id, adam_params=pb.AdamParams(**adam_params.to_json())
        )
        if self.one_round_trip:
            ran = await self._run("RunOptimStep", request, _optim_step)
            if ran is not None:
                return ran
        handle = await self._unary("OptimStep", request, pb.FutureHandle)
        return self._pending(handle, _optim_step)

    async def save_weights(
        self, model_id: str, seq_id: int, name: str, ttl_seconds: int | None
    ) -> DeferredResult[SaveWeightsResponse]:
        request = pb.SaveWeightsRequest(model_id=model_id, seq_id=seq_id, path=name)
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        handle = await self._unary("SaveWeights", request, pb.FutureHandle)
        return self._pending(handle, lambda r: SaveWeightsResponse(r.save_weights.path))

    async def save_weights_for_sampler(
        self,
        model_id: str,
        seq_id: int,
        name: str | None,
        sampling_session_seq_id: int | None,
        ttl_seconds: int | None,
    ) -> DeferredResult[SaveWeightsForSamplerResponse]:
        request = pb.SaveWeightsForSamplerRequest(model_id=model_id, seq_id=seq_id)
        if name is not None:
            request.path = name
        if sampling_session_seq_id is not None:
            request.sampling_session_seq_id = sampling_session_seq_id
        if ttl_seconds is not None:
            request.ttl_seconds = ttl_seconds
        handle = await self._unary("SaveWeightsForSampler", request, pb.FutureHandle)

        def decode(r: pb.RetrieveFutureResponse) -> SaveWeightsForSamplerResponse:
            result = r.save_weights_for_sampler
            return SaveWeightsForSamplerResponse(
                result.path if result.HasField("path") else None,
                result.sampling_session_id if result.HasField("sampling_session_id") else None,
            )

        return self._pending(handle, decode)

    async def _load(self, request: pb.LoadWeightsRequest) -> DeferredResult[LoadWeightsResponse]:
        handle = await self._unary("LoadWeights", request, pb.FutureHandle)
        return self._pending(
            handle,
            lambda r: LoadWeightsResponse(
                r.load_weights.path if r.load_weights.HasField("path") else None
            ),
        )

    async def load_weights(
        self, model_id: str, seq_id: int, path: str, optimizer: bool
    ) -> DeferredResult[LoadWeightsResponse]:
        return await self._load(
            pb.LoadWeightsRequest(
                existing_model=pb.ExistingModel(model_id=model_id, seq_id=seq_id),
                path=path,
                optimizer=optimizer,
            )
        )

    async def create_model_from_state(
        self,
        session_id: str,
        model_seq_id: int,
        path: str,
        optimizer: bool,
        user_metadata: Mapping[str, str] | None,
    ) -> DeferredResult[LoadWeightsResponse]:
        return await self._load(
            pb.LoadWeightsRequest(
                new_model=pb.NewModel(
                    session_id=session_id,
                    model_seq_id=model_seq_id,
                    user_metadata=dict(user_metadata or {}),
                ),
                path=path,
                optimizer=optimizer,
            )
        )

    async def create_sampling_session(
        self,
        session_id: str,
        sampling_session_seq_id: int,
        model_path: str | None,
        base_model: str | None,
    ) -> str:
        request = pb.CreateSamplingSessionRequest(
            session_id=session_id, sampling_session_seq_id=sampling_session_seq_id
        )
        if model_path is not None:
            request.model_path = model_path
        if base_model is not None:
            request.base_model = base_model
        response = await self._unary(
            "CreateSamplingSession", request, pb.CreateSamplingSessionResponse
        )
        return str(response.sampling_session_id)

    async def get_sampler_base_model(self, sampling_session_id: str) -> str:
        response = await self._unary(
            "GetSampler",
            pb.GetSamplerRequest(sampling_session_id=sampling_session_id),
            pb.GetSamplerResponse,
        )
        return str(response.base_model)

    async def sample(
        self,
        sampling_session_id: str,
        seq_id: int,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool,
        topk_prompt_logprobs: int,
        *,
        retry: RetryPolicy | None = None,
    ) -> DeferredResult[SampleResponse]:
        request = pb.SampleRequest(
            sampling_session_id=sampling_session_id,
            seq_id=seq_id,
            num_samples=num_samples,
            sampling_params=_sampling_params(sampling_params),
            prompt_logprobs=include_prompt_logprobs,
            topk_prompt_logprobs=topk_prompt_logprobs,
        )
        for chunk in prompt.chunks:
            request.prompt.add().ParseFromString(write_chunk(chunk).to_bytes())
        # A 429 goes to the SamplingClient, which backs off client-wide (flow.py).
        handle = await self._unary(
            "Sample", request, pb.FutureHandle, retry_rate_limits=False, policy=retry
        )
        sequence_ids = list(handle.sample_sequence_ids)

        def decode(r: pb.RetrieveFutureResponse) -> SampleResponse:
            decoded = decode_sample_response(r.sample.SerializeToString())
            return SampleResponse(
                [
                    seq.with_sequence_id(sid)
                    for seq, sid in zip(decoded.sequences, sequence_ids, strict=False)
                ],
                decoded.prompt_logprobs_np,
                decoded.topk_prompt_logprobs_np,
                decoded.target_prompt_logprobs,
                decoded.prompt_cache_hit_tokens,
                decoded.prompt_alt_tokens,
            )

        return self._pending(handle, decode, retry)


def _raw(payload: bytes) -> bytes:
    return payload


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _outcome(
    response: pb.RetrieveFutureResponse,
    request_id: str,
    decode: Callable[[pb.RetrieveFutureResponse], T],
) -> T:
    """A finished future's answer: its result, or RequestFailedError."""
    if response.WhichOneof("outcome") == "failed":
        raise RequestFailedError(
            response.failed.error, request_id=request_id, category=response.failed.category
        )
    return decode(response)


def _forward_backward(response: pb.RetrieveFutureResponse) -> ForwardBackwardOutput:
    return decode_forward_backward_output(response.forward_backward.SerializeToString())


def _optim_step(response: pb.RetrieveFutureResponse) -> OptimStepResponse:
    return OptimStepResponse(dict(response.optim_step.metrics))


def _sampling_params(params: SamplingParams) -> pb.SamplingParams:
    message = pb.SamplingParams(
        temperature=params.temperature, top_k=params.top_k, top_p=params.top_p
    )
    if params.max_tokens is not None:
        message.max_tokens = params.max_tokens
    if params.seed is not None:
        message.seed = params.seed
    stop = params.stop
    if isinstance(stop, str):
        message.stop_strs.values.append(stop)
    elif stop is not None and all(isinstance(s, str) for s in stop):
        message.stop_strs.values.extend(stop)  # type: ignore[arg-type]
        if not stop:
            message.stop_tokens.SetInParent()  # [] = never stop (no implicit EOS)
    elif stop is not None:
        message.stop_tokens.values.extend(stop)  # type: ignore[arg-type]
    return message
