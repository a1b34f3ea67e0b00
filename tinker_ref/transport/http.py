"""The Tinker HTTP wire, as the official SDK 0.38 speaks it (spec/wire.md, spec/futures.md).

- Auth: `X-API-Key: tml-...` on every request; in JWT mode (`pjwt_auth_enabled`) the key is
  exchanged at `POST /api/v1/auth/token` and the JWT is sent instead, refreshed before expiry.
  A 401 with `WWW-Authenticate: ... error="invalid_token"` (the service rejected the JWT
  before its expiry) gets a new JWT and is replayed once, as the SDK's auth flow does.
- Bodies: JSON everywhere except `forward_backward`, whose request is protobuf
  (`application/x-protobuf`, zstd-compressed when the server's config asks for it); results
  of forward/backward and sample futures come back as protobuf.
- Futures: every training op answers `{"request_id"}` at once; `retrieve_future` is then
  long-polled: `try_again` polls again at once, `complete_metadata` announces a large result
  (its size is held in the response-bytes semaphore until it is read) and polls again for the
  payload, `{"error", "category"}` raises RequestFailedError.
- Retries: tinker_ref/retry.py, the same rules as the gRPC transport. A retried request is
  resent **with the same body and idempotency key**, so a retried op keeps its seq_id and the
  server deduplicates it; nothing that mutates gradients is ever resent under a new seq_id.
- Sending is layered as in httpx: `_send` (the retry layer) -> `_send_handling_auth` (JWT
  and its one replay) -> `_send_single_request` (one exchange; aiohttp's failures become
  tinker_ref errors in one place, `_mapped_errors`).
- Connections: one pool per purpose, as the SDK keeps them (`ClientConnectionPoolType`):
  session upkeep (config, heartbeats), training submissions, sample submissions and polls, so
  that hundreds of long-polls never make a heartbeat or a submission wait for a connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp

from tinker_ref import __version__
from tinker_ref.codec import (
    decode_forward_backward_output,
    decode_sample_response,
    encode_forward_backward_request,
    model_input_to_json,
)
from tinker_ref.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    RequestFailedError,
    status_error,
)
from tinker_ref.flow import BytesSemaphore
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
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
PROTOBUF = "application/x-protobuf"
# A custom-loss call's loss, reported on its first backward request (tinker_ref's own header;
# the SDK sends none): lets a server show the loss the user optimises, not only the surrogate.
CUSTOM_LOSS_HEADER = "X-Tinker-Custom-Loss"
_SDK_VERSION = "0.38.0"  # the wire version we speak; sent where the SDK sends its own
_JWT_REFRESH_SECONDS = 60  # a JWT this close to its expiry is replaced before use (as the SDK)
_POOL_CONNECTIONS = 1000  # per pool: the SDK's DEFAULT_CONNECTION_LIMITS.max_connections
_TRAINING_PATHS = frozenset(
    {
        "create_model",
        "forward_backward",
        "optim_step",
        "save_weights",
        "save_weights_for_sampler",
        "load_weights",
        "save_weights_external",
    }
)


@dataclass(frozen=True)
class HttpOptions:
    timeout: float = 60.0  # seconds per request (the SDK's DEFAULT_TIMEOUT)
    connect_timeout: float = 5.0  # seconds to open a connection (the SDK's)
    poll_timeout: float = 45.0  # retrieve_future; the server long-polls for < 45 s
    heartbeat_timeout: float = 10.0  # a heartbeat is not retried; the next one is due soon
    retry: RetryConfig = field(default_factory=RetryConfig)


class _Response:
    """A fully read HTTP response; header names lower-cased."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return self.body.decode("utf-8", errors="replace")


def _pool_of(path: str) -> str:
    name = path.strip("/").split("/")[0]
    if name == "retrieve_future":
        return "retrieve"
    if name == "asample":
        return "sample"
    return "train" if name in _TRAINING_PATHS else "session"


def _invalid_token(response: _Response) -> bool:
    """The service rejected the token itself (RFC 6750), not the key behind it."""
    return response.status == 401 and 'error="invalid_token"' in response.headers.get(
        "www-authenticate", ""
    )


@contextlib.contextmanager
def _mapped_errors(method: str, path: str) -> Iterator[None]:
    """aiohttp's failures -> tinker_ref's, at the edge."""
    try:
        yield
    except TimeoutError as exc:
        raise APITimeoutError(f"{method} {path} timed out") from exc
    except aiohttp.ClientError as exc:
        raise APIConnectionError(f"{method} {path} failed: {exc}") from exc


class HttpTransport:
    def __init__(self, base_url: str, api_key: str, options: HttpOptions | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._options = options or HttpOptions()
        self.retry = RetryPolicy(self._options.retry)
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._config = ClientConfig()
        self._jwt: str | None = None
        self._jwt_expiry = 0.0
        self._jwt_lock = asyncio.Lock()  # one token exchange at a time
        self.jwt_replacements = 0  # JWTs replaced after an invalid_token answer
        # Large results announced with complete_metadata hold their size here until read.
        self._response_bytes = BytesSemaphore(self._config.inflight_response_bytes_semaphore_size)
        # Sent with every request (the SDK's CF-Access-* from the environment and
        # ServiceClient(default_headers_overrides=...)); per-request headers win.
        self.default_headers: dict[str, str] = {}

    # ----- plumbing ---------------------------------------------------------------------------

    def _client(self, pool: str) -> aiohttp.ClientSession:
        session = self._sessions.get(pool)
        if session is None:
            session = self._sessions[pool] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_POOL_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=None, connect=self._options.connect_timeout),
            )
        return session

    def _jwt_fresh(self) -> bool:
        return self._jwt is not None and time.time() < self._jwt_expiry - _JWT_REFRESH_SECONDS

    async def _credential(self) -> str:
        if not self._config.pjwt_auth_enabled:
            return self._api_key
        if not self._jwt_fresh():
            async with self._jwt_lock:
                if not self._jwt_fresh():  # another request may have just exchanged
                    await self._exchange_jwt()
        assert self._jwt is not None
        return self._jwt

    async def _replace_jwt(self, rejected: str) -> str:
        """A JWT other than `rejected`; concurrent rejections of one token cost one exchange."""
        async with self._jwt_lock:
            if self._jwt is None or self._jwt == rejected:
                await self._exchange_jwt()
                self.jwt_replacements += 1
        assert self._jwt is not None
        return self._jwt

    async def _exchange_jwt(self) -> None:
        response = await self._send("POST", "/auth/token", {}, auth=self._api_key)
        token = (response.json() or {}).get("jwt")
        if not isinstance(token, str):
            raise APIStatusError("auth/token answered without a jwt", status_code=response.status)
        self._jwt, self._jwt_expiry = token, _jwt_expiry(token)

    async def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retries: bool = True,
        auth: str | None = None,
        retry_rate_limits: bool = True,
        policy: RetryPolicy | None = None,
    ) -> _Response:
        """One logical request: retried under the retry policy (the transport's, or `policy`: a
        SamplingClient's own `retry_config`) with one idempotency key."""
        request_headers = {
            "User-Agent": f"tinker-ref/{__version__}",
            # Every answer but a retrieved result is JSON; the SDK says so too (spec FUT-5).
            "Accept": "application/json",
            **self.default_headers,
            **(headers or {}),
        }
        if method != "GET":
            request_headers["X-Idempotency-Key"] = f"tinker-ref-{uuid.uuid4()}"
        data = raw
        if raw is None and body is not None:
            data = json.dumps(body).encode()
            request_headers.setdefault("Content-Type", "application/json")
        what = f"{method} {path}"
        seconds = timeout or self._options.timeout

        async def attempt(retries_taken: int) -> _Response:
            sent_headers = request_headers | {"x-stainless-retry-count": str(retries_taken)}
            return await self._send_handling_auth(method, path, data, sent_headers, seconds, auth)

        if not retries:
            return await attempt(0)
        return await (policy or self.retry).call(attempt, what, retry_rate_limits=retry_rate_limits)

    async def _send_handling_auth(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
        auth: str | None,
    ) -> _Response:
        """One try: the credential, the exchange, and one replay with a new JWT if the service
        rejected the one sent (`invalid_token`); an error status raises here."""
        credential = auth if auth is not None else await self._credential()
        response = await self._send_single_request(method, path, data, headers, credential, timeout)
        if auth is None and self._config.pjwt_auth_enabled and _invalid_token(response):
            log.info("%s %s: the service rejected the JWT; replaying with a new one", method, path)
            credential = await self._replace_jwt(credential)
            response = await self._send_single_request(
                method, path, data, headers, credential, timeout
            )
        if response.status >= 400:
            raise status_error(response.status, response.json(), response.headers)
        return response

    async def _send_single_request(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: Mapping[str, str],
        credential: str,
        timeout: float,
    ) -> _Response:
        with _mapped_errors(method, path):
            async with self._client(_pool_of(path)).request(
                method,
                f"{self.base_url}/api/v1{path}",
                data=data,
                headers={**headers, "X-API-Key": credential},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as http_response:
                return _Response(
                    http_response.status,
                    {k.lower(): v for k, v in http_response.headers.items()},
                    await http_response.read(),
                )

    async def _submit(
        self,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        response = await self._send("POST", path, body, raw=raw, headers=headers)
        request_id = (response.json() or {}).get("request_id")
        if not isinstance(request_id, str):
            raise APIStatusError(
                f"{path} answered without a request_id: {response.body[:200]!r}",
                status_code=response.status,
            )
        return request_id

    async def _retrieve(
        self,
        request_id: str,
        request_type: str,
        decode: Callable[[_Response], T],
        policy: RetryPolicy | None = None,
    ) -> T:
        """Long-poll one future until it has an outcome (spec FUT-9)."""
        pacer = PollPacer(policy or self.retry, f"{request_type} future {request_id}")
        allow_metadata_only = True
        expects_proto = request_type in ("Forward", "ForwardBackward", "Sample")
        iteration = 0
        async with contextlib.AsyncExitStack() as held:
            while True:
                try:
                    response = await self._send(
                        "POST",
                        "/retrieve_future",
                        {"request_id": request_id, "allow_metadata_only": allow_metadata_only},
                        headers={
                            "Accept": PROTOBUF if expects_proto else "application/json",
                            "X-Tinker-Request-Iteration": str(iteration),
                            "X-Tinker-Request-Type": request_type,
                        },
                        timeout=self._options.poll_timeout,
                        retries=False,
                    )
                except APIError as error:
                    iteration += 1
                    await pacer.failed(error)
                    continue
                iteration += 1
                pacer.answered()
                if PROTOBUF in response.headers.get("content-type", ""):
                    return decode(response)
                body = response.json()
                if isinstance(body, dict) and body.get("type") == "try_again":
                    continue
                if isinstance(body, dict) and body.get("status") == "complete_metadata":
                    allow_metadata_only = False
                    size = int(body.get("response_payload_size") or 0)
                    await held.enter_async_context(self._response_bytes.hold(size))
                    continue
                if isinstance(body, dict) and "error" in body:
                    raise RequestFailedError(
                        str(body["error"]),
                        request_id=request_id,
                        category=str(body.get("category", "unknown")),
                    )
                return decode(response)

    def _pending(
        self,
        request_id: str,
        request_type: str,
        decode: Callable[[_Response], T],
        policy: RetryPolicy | None = None,
    ) -> DeferredResult[T]:
        async def fetch(rid: str) -> T:
            return await self._retrieve(rid, request_type, decode, policy)

        return DeferredResult(request_id, fetch)

    # ----- the API -----------------------------------------------------------------------------

    async def start(self) -> ClientConfig:
        response = await self._send(
            "POST", "/client/config", {"sdk_version": _SDK_VERSION}, auth=self._api_key
        )
        self._config = ClientConfig.from_json(response.json() or {})
        self.retry.configure(self._config.billing_exception_max_pause_duration_sec)
        self._response_bytes.capacity = self._config.inflight_response_bytes_semaphore_size
        return self._config

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        response = await self._send("GET", "/get_server_capabilities")
        return GetServerCapabilitiesResponse.from_json(response.json())

    async def create_session(
        self, tags: Sequence[str], user_metadata: Mapping[str, str], project_id: str | None
    ) -> str:
        body: dict[str, Any] = {
            "tags": list(tags),
            "user_metadata": dict(user_metadata),
            "sdk_version": _SDK_VERSION,
            "type": "create_session",
        }
        if project_id is not None:
            body["project_id"] = project_id
        response = await self._send("POST", "/create_session", body)
        return str(_field(response, "session_id"))

    async def session_heartbeat(self, session_id: str) -> None:
        await self._send(
            "POST",
            "/session_heartbeat",
            {"session_id": session_id, "type": "session_heartbeat"},
            timeout=self._options.heartbeat_timeout,
            retries=False,
        )

    async def finish_session(self, session_id: str, reason: str, detail: str | None) -> None:
        await self._send(
            "POST", f"/sessions/{session_id}/finish", {"reason": {"type": reason}, "detail": detail}
        )

    async def create_model(
        self,
        session_id: str,
        model_seq_id: int,
        base_model: str,
        lora: LoraConfig,
        user_metadata: Mapping[str, str] | None,
    ) -> DeferredResult[str]:
        body: dict[str, Any] = {
            "session_id": session_id,
            "model_seq_id": model_seq_id,
            "base_model": base_model,
        }
        if user_metadata is not None:
            body["user_metadata"] = dict(user_metadata)
        body |= {
            "lora_config": lora.to_json(),
            "optimizer_config": {"type": "adamw"},
            "type": "create_model",
        }
        request_id = await self._submit("/create_model", body)
        return self._pending(request_id, "CreateModel", lambda r: str(_field(r, "model_id")))

    async def get_info(self, model_id: str) -> GetInfoResponse:
        response = await self._send("POST", "/get_info", {"model_id": model_id, "type": "get_info"})
        return GetInfoResponse.from_json(response.json())

    async def forward_backward(
        self,
        model_id: str,
        seq_id: int,
        data: Sequence[Datum],
        loss_fn: str,
        loss_fn_config: LossFnConfig | None,
        forward_only: bool,
        custom_loss: float | None = None,
    ) -> DeferredResult[ForwardBackwardOutput]:
        payload = encode_forward_backward_request(
            model_id, seq_id, data, loss_fn, loss_fn_config, forward_only
        )
        headers = {"Content-Type": PROTOBUF}
        if custom_loss is not None and math.isfinite(custom_loss):
            headers[CUSTOM_LOSS_HEADER] = repr(custom_loss)
        if self._config.proto_compress_fwdbwd:
            import zstandard

            payload = zstandard.ZstdCompressor().compress(payload)
            headers["Content-Encoding"] = "zstd"
        request_id = await self._submit("/forward_backward", raw=payload, headers=headers)
        return self._pending(
            request_id,
            "Forward" if forward_only else "ForwardBackward",
            lambda r: decode_forward_backward_output(r.body),
        )

    async def optim_step(
        self, model_id: str, seq_id: int, adam_params: AdamParams
    ) -> DeferredResult[OptimStepResponse]:
        body = {
            "model_id": model_id,
            "seq_id": seq_id,
            "type": "optim_step",
            "adam_params": adam_params.to_json(),
        }
        request_id = await self._submit("/optim_step", body)
        return self._pending(
            request_id, "OptimStep", lambda r: OptimStepResponse.from_json(r.json() or {})
        )

    async def save_weights(
        self, model_id: str, seq_id: int, name: str, ttl_seconds: int | None
    ) -> DeferredResult[SaveWeightsResponse]:
        body: dict[str, Any] = {"model_id": model_id, "path": name, "seq_id": seq_id}
        body["overwrite"] = False
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        body["type"] = "save_weights"
        request_id = await self._submit("/save_weights", body)
        return self._pending(
            request_id, "SaveWeights", lambda r: SaveWeightsResponse.from_json(r.json())
        )

    async def save_weights_for_sampler(
        self,
        model_id: str,
        seq_id: int,
        name: str | None,
        sampling_session_seq_id: int | None,
        ttl_seconds: int | None,
    ) -> DeferredResult[SaveWeightsForSamplerResponse]:
        body: dict[str, Any] = {"model_id": model_id}
        if name is not None:
            body["path"] = name
        if sampling_session_seq_id is not None:
            body["sampling_session_seq_id"] = sampling_session_seq_id
        body |= {"kind": "snapshot", "seq_id": seq_id}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        body["type"] = "save_weights_for_sampler"
        request_id = await self._submit("/save_weights_for_sampler", body)
        return self._pending(
            request_id,
            "SaveWeightsForSampler",
            lambda r: SaveWeightsForSamplerResponse.from_json(r.json()),
        )

    async def load_weights(
        self, model_id: str, seq_id: int, path: str, optimizer: bool
    ) -> DeferredResult[LoadWeightsResponse]:
        body = {
            "model_id": model_id,
            "seq_id": seq_id,
            "path": path,
            "optimizer": optimizer,
            "type": "load_weights",
        }
        request_id = await self._submit("/load_weights", body)
        return self._pending(
            request_id, "LoadWeights", lambda r: LoadWeightsResponse.from_json(r.json() or {})
        )

    async def create_model_from_state(
        self,
        session_id: str,
        model_seq_id: int,
        path: str,
        optimizer: bool,
        user_metadata: Mapping[str, str] | None,
    ) -> DeferredResult[LoadWeightsResponse]:
        body: dict[str, Any] = {
            "session_id": session_id,
            "model_seq_id": model_seq_id,
            "path": path,
            "optimizer": optimizer,
        }
        if user_metadata is not None:
            body["user_metadata"] = dict(user_metadata)
        body["type"] = "load_weights"
        request_id = await self._submit("/load_weights", body)
        return self._pending(
            request_id, "LoadWeights", lambda r: LoadWeightsResponse.from_json(r.json() or {})
        )

    async def create_sampling_session(
        self,
        session_id: str,
        sampling_session_seq_id: int,
        model_path: str | None,
        base_model: str | None,
    ) -> str:
        body: dict[str, Any] = {
            "session_id": session_id,
            "sampling_session_seq_id": sampling_session_seq_id,
        }
        if model_path is not None:
            body["model_path"] = model_path
        if base_model is not None:
            body["base_model"] = base_model
        body["type"] = "create_sampling_session"
        response = await self._send("POST", "/create_sampling_session", body)
        return str(_field(response, "sampling_session_id"))

    async def get_sampler_base_model(self, sampling_session_id: str) -> str:
        response = await self._send("GET", f"/samplers/{sampling_session_id}")
        return str(_field(response, "base_model"))

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
        body = {
            "num_samples": num_samples,
            "prompt": model_input_to_json(prompt),
            "sampling_params": sampling_params.to_json(),
            "sampling_session_id": sampling_session_id,
            "seq_id": seq_id,
            "prompt_logprobs": include_prompt_logprobs,
            "topk_prompt_logprobs": topk_prompt_logprobs,
            "type": "sample",
        }
        return await self.submit_sample(body, retry=retry)

    # ----- additive (surface parity): requests the fixed methods above cannot express ------
    # tinker_ref/wire_ops.py builds SDK 0.38's bodies for them; tinker_ref/rest_client.py reads
    # and changes the REST resources (training runs, checkpoints, sessions) through them.

    async def request_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One REST call (retried like every request); its parsed JSON answer (None if empty).
        `params` become the query string; None values are left out, as httpx leaves them."""
        if params:
            query = urlencode({k: v for k, v in params.items() if v is not None})
            path = f"{path}?{query}" if query else path
        if method != "GET" and body is None:  # the SDK labels even an empty body JSON
            headers = {"Content-Type": "application/json", **(headers or {})}
        response = await self._send(method, path, body, headers=headers)
        return response.json()

    async def submit_json_op(
        self, path: str, body: Mapping[str, Any], request_type: str, decode: Callable[[Any], T]
    ) -> DeferredResult[T]:
        """POST a future-creating JSON body; its result is `decode(parsed JSON)`."""
        request_id = await self._submit(path, dict(body))
        return self._pending(request_id, request_type, lambda r: decode(r.json() or {}))

    async def submit_sample(
        self, body: Mapping[str, Any], *, retry: RetryPolicy | None = None
    ) -> DeferredResult[SampleResponse]:
        """`asample` with a body built by the caller (`sample`, or every SDK 0.38 sampling
        option: wire_ops.sample_body); submitted and polled under `retry` when given."""
        response = await self._send(
            "POST",
            "/asample",
            dict(body),
            headers={"X-Tinker-Sampling-Backpressure": "1"},
            retry_rate_limits=False,  # the SamplingClient backs off client-wide (flow.py)
            policy=retry,
        )
        request_id = _field(response, "request_id")
        sequence_ids = _field(response, "sample_sequence_ids")

        def decode(r: _Response) -> SampleResponse:
            # The result carries no sequence ids; the submission did (as the SDK stamps them).
            decoded = decode_sample_response(r.body)
            return SampleResponse(
                [
                    seq.with_sequence_id(str(sid))
                    for seq, sid in zip(decoded.sequences, sequence_ids, strict=False)
                ],
                decoded.prompt_logprobs_np,
                decoded.topk_prompt_logprobs_np,
                decoded.target_prompt_logprobs,
                decoded.prompt_cache_hit_tokens,
                decoded.prompt_alt_tokens,
            )

        return self._pending(str(request_id), "Sample", decode, retry)

    async def identity_jwt(self) -> str | None:
        """A JWT with the caller's identity claims, when JWT auth is on (or the key is one)."""
        if self._config.pjwt_auth_enabled:
            return await self._credential()
        return self._api_key if self._api_key.startswith("eyJ") else None


def _field(response: _Response, key: str) -> Any:
    body = response.json()
    if not isinstance(body, dict) or body.get(key) is None:
        raise APIStatusError(
            f"the response lacks {key!r}: {response.body[:200]!r}", status_code=response.status
        )
    return body[key]


def _jwt_expiry(token: str) -> float:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise APIStatusError(
            f"auth/token returned an unusable jwt: {exc}", status_code=200
        ) from exc
