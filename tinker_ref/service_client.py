"""ServiceClient: the entry point. Owns the event loop, the transport and the session.

    with ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev") as client:
        training = client.create_lora_training_client("Qwen/Qwen3-8B", rank=8)

`base_url` defaults to `$TINKER_BASE_URL`, then to the production service; `api_key` to
`$TINKER_API_KEY`. `transport="grpc"` speaks the mock server's gRPC service instead, with
`base_url` a gRPC target such as "127.0.0.1:50051". Names and argument order follow the
official SDK, so a script switches by changing its import.

The session is created on first use and kept alive by a heartbeat every 10 s. A heartbeat
answered 410 means the service ended the session (finished, or expired for idleness): the
client logs it, marks the session gone (`session_error`) and fails every request still waiting
and every later one with SessionGoneError, instead of waiting on models that no longer exist.
Other heartbeat failures are retried by the next beat and logged (WARNING after 2 minutes).
`close(status, detail)` finishes the session with the given outcome; leaving a `with` block
reports "success", "errored" (an exception) or "interrupted" (KeyboardInterrupt and other
BaseExceptions), as the SDK does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from tinker_ref.errors import (
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    SessionGoneError,
    TinkerRefError,
)
from tinker_ref.flow import FlowControl
from tinker_ref.futures import APIFuture, EventLoopThread
from tinker_ref.retry import RetryConfig
from tinker_ref.sampling_client import SamplingClient
from tinker_ref.training_client import TrainingClient
from tinker_ref.transport.base import ClientConfig, Transport
from tinker_ref.transport.grpc import GrpcTransport
from tinker_ref.transport.http import HttpOptions, HttpTransport
from tinker_ref.types import LoraConfig
from tinker_ref.types.responses import GetServerCapabilitiesResponse

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
TRANSPORTS = ("http", "grpc")
FINISH_STATUSES = ("success", "errored", "interrupted")


@dataclass(frozen=True)
class ClientOptions:
    """How a ServiceClient behaves on the wire; the defaults are the official SDK 0.38's."""

    retry: RetryConfig = field(default_factory=RetryConfig)  # tinker_ref/retry.py
    request_timeout: float = 60.0  # s per request (HTTP) / call deadline (gRPC)
    poll_timeout: float = 45.0  # s per retrieve_future long-poll
    heartbeat_seconds: float = 10.0  # between heartbeats (SDK SESSION_HEARTBEAT_PERIOD_SEC)
    heartbeat_warning_seconds: float = 120.0  # failing this long is logged at WARNING (SDK)
    close_timeout: float = 30.0  # s close() waits for the service to record the finish


def _api_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get("TINKER_API_KEY")
    if not key:
        raise ConfigurationError("no API key: pass api_key= or set TINKER_API_KEY")
    if not (key.startswith("tml-") or key.startswith("eyJ")):
        raise ConfigurationError("the api_key must start with 'tml-' (or be a JWT)")
    return key


def _check_sampling_source(model_path: str | None, base_model: str | None) -> None:
    if (model_path is None) == (base_model is None):
        raise ConfigurationError("pass exactly one of model_path and base_model")
    if model_path is not None and not model_path.startswith("tinker://"):
        raise ConfigurationError(f"model_path must start with 'tinker://', got {model_path!r}")


def _exit_status(exc_type: type[BaseException] | None) -> str:
    """The session's outcome when a `with` block ends (the SDK's rule)."""
    if exc_type is None:
        return "success"
    return "errored" if issubclass(exc_type, Exception) else "interrupted"


class ServiceClient:
    # Positional order as in the official SDK 0.38 (user_metadata, project_id); the rest is
    # keyword-only there too, so a script switches by changing its import.
    def __init__(
        self,
        user_metadata: Mapping[str, str] | None = None,
        project_id: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        transport: str = "http",
        tags: Sequence[str] = (),
        options: ClientOptions | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ConfigurationError(
                f"unknown transport {transport!r}; available: {', '.join(TRANSPORTS)}"
            )
        self.options = options or ClientOptions()
        self.base_url = base_url or os.environ.get("TINKER_BASE_URL") or DEFAULT_BASE_URL
        self.transport: Transport
        if transport == "grpc":
            # base_url is a gRPC target: "host:port" (a "grpc://" prefix is accepted).
            target = self.base_url.removeprefix("grpc://")
            self.transport = GrpcTransport(
                target,
                _api_key(api_key),
                self.options.retry,
                self.options.request_timeout,
                poll_timeout=self.options.poll_timeout,
            )
        else:
            http_options = HttpOptions(
                timeout=self.options.request_timeout,
                poll_timeout=self.options.poll_timeout,
                retry=self.options.retry,
            )
            self.transport = HttpTransport(self.base_url, _api_key(api_key), http_options)
        self.flow = FlowControl()
        self.loop = EventLoopThread()
        self._user_metadata = dict(user_metadata or {})
        self._tags = list(tags)
        self._project_id = project_id
        self._start_lock = asyncio.Lock()
        self._client_config: ClientConfig | None = None
        self._session_id: str | None = None
        self._session_gone: SessionGoneError | None = None
        self._gone = asyncio.Event()  # set (on the loop) when the heartbeat got 410
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False
        self._counter_lock = threading.Lock()
        self._model_seq_ids = itertools.count()
        self._sampling_session_seq_ids = itertools.count()

    # ----- lifecycle --------------------------------------------------------------------------

    @property
    def client_config(self) -> ClientConfig:
        if self._client_config is None:
            raise TinkerRefError("the client has not contacted the service yet")
        return self._client_config

    @property
    def session_error(self) -> SessionGoneError | None:
        """Why the session is gone (its heartbeat got 410), or None while it lives."""
        return self._session_gone

    async def _started(self) -> ClientConfig:
        async with self._start_lock:
            if self._client_config is None:
                self._client_config = await self.transport.start()
                self.flow.configure(self._client_config)
            return self._client_config

    async def _session(self) -> str:
        await self._started()
        async with self._start_lock:
            if self._session_id is None:
                self._session_id = await self.transport.create_session(
                    self._tags, self._user_metadata, self._project_id
                )
                log.debug("created session %s", self._session_id)
                self._heartbeat = asyncio.get_running_loop().create_task(
                    self._beat(self._session_id)
                )
            return self._session_id

    async def _beat(self, session_id: str) -> None:
        """Heartbeats until the session ends; see the module docstring for what failures do."""
        period = self.options.heartbeat_seconds
        warn_after = self.options.heartbeat_warning_seconds
        last_answer = time.monotonic()
        warned_at: float | None = None
        while True:
            await asyncio.sleep(period)
            try:
                await self.transport.session_heartbeat(session_id)
            except APIStatusError as error:
                if error.status_code == 410:
                    self._end_session(session_id, error)
                    return
                failure: TinkerRefError = error
            except TinkerRefError as error:
                failure = error
            else:
                if warned_at is not None:
                    log.warning("session %s: heartbeats are answered again", session_id)
                last_answer, warned_at = time.monotonic(), None
                continue
            now = time.monotonic()
            log.debug("session %s: heartbeat failed: %s", session_id, failure)
            if now - last_answer >= warn_after and (
                warned_at is None or now - warned_at >= warn_after
            ):
                warned_at = now
                log.warning(
                    "session %s: heartbeats have failed for %.0f s (last: %s); the connection "
                    "may be unreliable or the service down; if this persists the service will "
                    "end the session",
                    session_id,
                    now - last_answer,
                    failure,
                )

    def _end_session(self, session_id: str, error: APIStatusError) -> None:
        """The service ended the session: mark it and fail everything still waiting."""
        detail = error.body.get("detail") if isinstance(error.body, dict) else error.body
        gone = SessionGoneError(
            f"the service ended session {session_id} (its heartbeat was answered 410: "
            f"{detail}); its models, sampling sessions and pending requests are gone. "
            "Start a new ServiceClient (and a training client from a saved state) to go on.",
            session_id=session_id,
        )
        gone.__cause__ = error
        self._session_gone = gone
        log.warning("%s", gone)
        self._gone.set()

    def _raise_if_gone(self) -> None:
        if self._session_gone is not None:
            raise SessionGoneError(
                str(self._session_gone), session_id=self._session_gone.session_id
            ) from self._session_gone

    async def _guarded(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one request of this client; if the session ends first, stop waiting for it and
        raise SessionGoneError (its model is gone: its result never comes)."""
        if self._session_gone is not None:
            coroutine.close()
            self._raise_if_gone()
        work = asyncio.ensure_future(coroutine)
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):  # its outcome is the session's end
                    await work
        if work.cancelled() and self._session_gone is not None:
            self._raise_if_gone()
        return work.result()

    def run_op(self, coroutine: Coroutine[Any, Any, T]) -> APIFuture[T]:
        """Start one request on the client's loop (guarded by the session); its future."""
        return self.loop.submit(self._guarded(coroutine))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(self._guarded(coroutine))

    def close(self, status: str = "success", detail: str | None = None) -> APIFuture[None]:
        """Finish the session as `status` ("success", "errored" or "interrupted"), stop the
        heartbeat and release the connections and the loop thread.

        Returns a completed future, as the SDK's `close(...)` returns one to wait on: its
        `.result()` raises if the service could not record the finish within `close_timeout`
        (then a warning is logged too); `close()` itself does not raise. A session the service
        already ended (410) is not finished again.
        """
        if status not in FINISH_STATUSES:
            raise ConfigurationError(
                f"close status must be one of {', '.join(FINISH_STATUSES)}, got {status!r}"
            )
        outcome: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._closed or self.loop.loop.is_closed():
            outcome.set_result(None)
            return APIFuture(outcome)
        self._closed = True
        session_id = self._session_id

        async def shutdown() -> None:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._heartbeat
            try:
                if session_id is not None and self._session_gone is None:
                    await self._finish(session_id, status, detail)
            finally:
                await self.transport.close()

        try:
            self.loop.run(shutdown())
        except TinkerRefError as error:
            log.warning("session %s: finish (%s) not recorded: %s", session_id, status, error)
            outcome.set_exception(error)
        else:
            outcome.set_result(None)
        finally:
            self.loop.close()
        return APIFuture(outcome)

    async def _finish(self, session_id: str, status: str, detail: str | None) -> None:
        seconds = self.options.close_timeout
        try:
            await asyncio.wait_for(
                self.transport.finish_session(session_id, status, detail), seconds
            )
        except TimeoutError as exc:
            raise APITimeoutError(
                f"finishing session {session_id} took over {seconds:g} s"
            ) from exc
        log.info("session %s finished: %s", session_id, status)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        finished = self.close(_exit_status(exc_type))
        if exc_type is None:
            finished.result()  # as the SDK's `close(...).result()`; never masks the block's error

    def next_sampling_session_seq_id(self) -> int:
        with self._counter_lock:
            return next(self._sampling_session_seq_ids)

    def _next_model_seq_id(self) -> int:
        with self._counter_lock:
            return next(self._model_seq_ids)

    # ----- API --------------------------------------------------------------------------------

    def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        return self._run(self._get_server_capabilities())

    async def get_server_capabilities_async(self) -> GetServerCapabilitiesResponse:
        return await self.run_op(self._get_server_capabilities())

    async def _get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        await self._started()
        return await self.transport.get_server_capabilities()

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: Mapping[str, str] | None = None,
    ) -> TrainingClient:
        lora = LoraConfig(rank, seed, train_mlp, train_attn, train_unembed)
        return self._run(self._create_lora_training_client(base_model, lora, user_metadata))

    async def create_lora_training_client_async(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: Mapping[str, str] | None = None,
    ) -> TrainingClient:
        lora = LoraConfig(rank, seed, train_mlp, train_attn, train_unembed)
        coroutine = self._create_lora_training_client(base_model, lora, user_metadata)
        return await self.run_op(coroutine)

    async def _create_lora_training_client(
        self, base_model: str, lora: LoraConfig, user_metadata: Mapping[str, str] | None
    ) -> TrainingClient:
        session_id = await self._session()
        pending = await self.transport.create_model(
            session_id, self._next_model_seq_id(), base_model, lora, user_metadata
        )
        model_id = await pending.result()
        return TrainingClient(self, model_id, await self.transport.get_info(model_id))

    def create_training_client_from_state(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> TrainingClient:
        """A new model with the checkpoint's weights; fresh optimizer state."""
        return self._run(self._from_state(path, False, user_metadata))

    def create_training_client_from_state_with_optimizer(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> TrainingClient:
        """A new model with the checkpoint's weights and Adam state (continues bit-exactly)."""
        return self._run(self._from_state(path, True, user_metadata))

    async def _from_state(
        self, path: str, optimizer: bool, user_metadata: Mapping[str, str] | None
    ) -> TrainingClient:
        session_id = await self._session()
        model_seq_id = self._next_model_seq_id()
        pending = await self.transport.create_model_from_state(
            session_id, model_seq_id, path, optimizer, user_metadata
        )
        await pending.result()
        # The model id is derived, not returned: "<session_id>:train:<model_seq_id>".
        model_id = f"{session_id}:train:{model_seq_id}"
        return TrainingClient(self, model_id, await self.transport.get_info(model_id))

    async def create_training_client_from_state_async(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> TrainingClient:
        return await self.run_op(self._from_state(path, False, user_metadata))

    async def create_training_client_from_state_with_optimizer_async(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> TrainingClient:
        return await self.run_op(self._from_state(path, True, user_metadata))

    def create_sampling_client(
        self, model_path: str | None = None, base_model: str | None = None
    ) -> SamplingClient:
        """Sample from saved sampler weights (`tinker://...`) or from a base model."""
        _check_sampling_source(model_path, base_model)
        return self._run(self._create_sampling_client(model_path, base_model))

    async def create_sampling_client_async(
        self, model_path: str | None = None, base_model: str | None = None
    ) -> SamplingClient:
        _check_sampling_source(model_path, base_model)
        return await self.run_op(self._create_sampling_client(model_path, base_model))

    async def _create_sampling_client(
        self, model_path: str | None, base_model: str | None
    ) -> SamplingClient:
        session_id = await self._session()
        sampling_session_id = await self.transport.create_sampling_session(
            session_id, self.next_sampling_session_seq_id(), model_path, base_model
        )
        if base_model is None:
            base_model = await self.transport.get_sampler_base_model(sampling_session_id)
        return SamplingClient(self, sampling_session_id, base_model)
