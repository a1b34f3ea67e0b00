"""ServiceClient: the entry point. Owns the event loop, the transport and the session.

    with ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev") as client:
        training = client.create_lora_training_client("Qwen/Qwen3-8B", rank=8)

`base_url` defaults to `$TINKER_BASE_URL`, then to the production service; `api_key` to
`$TINKER_API_KEY`, then to `$TINKER_CREDENTIAL_CMD`'s output; `project_id` to
`$TINKER_PROJECT_ID` (every variable: tinker_ref/environment.py). `transport="grpc"` speaks the
mock server's gRPC service instead, with `base_url` a gRPC target such as "127.0.0.1:50051".
Names and argument order follow the official SDK, so a script switches by changing its import;
`options` (ClientOptions) holds tinker_ref's own knobs: retries, timeouts, heartbeats.

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
import dataclasses
import itertools
import logging
import threading
import time
import warnings
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tinker_ref import environment
from tinker_ref.errors import (
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    SessionGoneError,
    TinkerRefError,
)
from tinker_ref.flow import FlowControl
from tinker_ref.futures import APIFuture, EventLoopThread
from tinker_ref.loss_handle import LossHandle, PerDatumLossFn, encode_graph, trace_loss
from tinker_ref.retry import RetryConfig
from tinker_ref.sampling_client import SamplingClient
from tinker_ref.training_client import TrainingClient
from tinker_ref.transport.base import ClientConfig, Pending, Transport
from tinker_ref.transport.grpc import GrpcTransport
from tinker_ref.transport.http import HttpOptions, HttpTransport
from tinker_ref.types import LoraConfig
from tinker_ref.types.custom_loss import CustomLossInputRank
from tinker_ref.types.optimizer import AdamOptimizerConfig, OptimizerConfig
from tinker_ref.types.responses import GetServerCapabilitiesResponse, LoadWeightsResponse
from tinker_ref.wire_ops import (
    create_custom_loss_body,
    create_from_state_body,
    create_model_body,
    json_wire,
)

if TYPE_CHECKING:
    from tinker_ref.rest_client import RestClient

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_BASE_URL = environment.DEFAULT_BASE_URL
SDK_WIRE_VERSION = "0.38.0"  # the create_session `sdk_version` tinker_ref's transports send
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
    return environment.api_key(api_key)


def _check_sampling_source(model_path: str | None, base_model: str | None) -> None:
    if (model_path is None) == (base_model is None):
        raise ConfigurationError("pass exactly one of model_path and base_model")
    if model_path is not None and not model_path.startswith("tinker://"):
        raise ConfigurationError(f"model_path must start with 'tinker://', got {model_path!r}")


FinishStatus = Literal["success", "errored", "interrupted"]


def _exit_status(exc_type: type[BaseException] | None) -> FinishStatus:
    """The session's outcome when a `with` block ends (the SDK's rule)."""
    if exc_type is None:
        return "success"
    return "errored" if issubclass(exc_type, Exception) else "interrupted"


class ServiceClient:
    """The entry point: one session with the service, and the clients created in it.

    Owns the event loop thread, the transport and the session (created on first use, kept alive
    by a heartbeat). Use it as a context manager, or call `close()`, to finish the session.

    Args:
        user_metadata: Key-value pairs recorded with the session.
        project_id: The project the session belongs to; default `$TINKER_PROJECT_ID`.
        display_name: A name for the session, shown by the service (HTTP only).
        base_url: The service's URL (with `transport="grpc"`, a target such as
            "127.0.0.1:50051"); default `$TINKER_BASE_URL`, then the production service.
        api_key: The credential, a `tml-` key or a JWT; default `$TINKER_API_KEY`, then the
            output of `$TINKER_CREDENTIAL_CMD`.
        default_headers_overrides: Headers added to every HTTP request.
        transport: "http" (the default) or "grpc" (the mock server's gRPC service).
        tags: Tags recorded with the session; default `$TINKER_TAGS` (comma-separated).
        options: tinker_ref's own knobs (ClientOptions): retries, timeouts, heartbeats.
        **kwargs: Other arguments of the official SDK, ignored with a FutureWarning.

    Raises:
        ConfigurationError: No usable API key, or an unknown `transport`.

    Example:
        >>> with ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev") as service:
        ...     training = service.create_lora_training_client("Qwen/Qwen3-8B", rank=8)
    """

    # Positional order as in the official SDK 0.38 (user_metadata, project_id); the rest is
    # keyword-only there too, so a script switches by changing its import.
    def __init__(
        self,
        user_metadata: Mapping[str, str] | None = None,
        project_id: str | None = None,
        *,
        display_name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        default_headers_overrides: Mapping[str, str] | None = None,
        transport: str = "http",
        tags: Sequence[str] = (),
        options: ClientOptions | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            warnings.warn(
                f"ServiceClient ignores unsupported arguments: {', '.join(sorted(kwargs))}.",
                FutureWarning,
                stacklevel=2,
            )
        if transport not in TRANSPORTS:
            raise ConfigurationError(
                f"unknown transport {transport!r}; available: {', '.join(TRANSPORTS)}"
            )
        self.options = options or ClientOptions()
        self.base_url = environment.base_url(base_url)
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
            http = HttpTransport(self.base_url, _api_key(api_key), http_options)
            http.default_headers.update(
                environment.default_headers() | dict(default_headers_overrides or {})
            )
            self.transport = http
        self.flow = FlowControl()
        self.loop = EventLoopThread()
        self._user_metadata = dict(user_metadata or {})
        self._tags = environment.tags(tags)
        self._project_id = environment.project_id(project_id)
        self._display_name = display_name
        self._custom_losses: dict[str, LossHandle] = {}  # by LossHandle.key: once per session
        self._custom_loss_seq_ids = itertools.count()
        self._rest: RestClient | None = None
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
        """The service's `client/config` answer: chunk limits, flow control, feature switches.

        Raises:
            TinkerRefError: The client has not contacted the service yet.
        """
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
                self._session_id = await self._create_session()
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
        """Start one request on the client's event loop, guarded by the session.

        Used by the clients of this session to submit their ops; if the service ends the session
        first, the future fails with SessionGoneError.

        Args:
            coroutine: The request to run on the loop.

        Returns:
            APIFuture: The request's future.
        """
        return self.loop.submit(self._guarded(coroutine))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(self._guarded(coroutine))

    def close(
        self,
        status: FinishStatus = "success",
        detail: str | None = None,
    ) -> APIFuture[None]:
        """Finish the session, stop the heartbeat and release the connections and the loop thread.

        Leaving a `with` block calls it with "success", "errored" (an exception) or "interrupted"
        (KeyboardInterrupt and other BaseExceptions), as the SDK does. A second call, or a session
        the service already ended (410), finishes nothing again.

        Args:
            status: The session's outcome: "success", "errored" or "interrupted".
            detail: A free-text explanation recorded with the outcome.

        Returns:
            APIFuture[None]: Already complete; its `.result()` raises the error (a TinkerError,
            e.g. APITimeoutError after `options.close_timeout`) if the service could not record
            the finish (a warning is logged too).
            `close()` itself does not raise for that.

        Raises:
            ConfigurationError: `status` is not one of the three outcomes.
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
                if self._rest is not None:  # create_rest_client()'s connection
                    await self._rest._connection.transport.close()

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
        """Reserve the next sampling-session number of this session (used by the factories).

        Returns:
            int: The number, counting from 0.
        """
        with self._counter_lock:
            return next(self._sampling_session_seq_ids)

    def _next_model_seq_id(self) -> int:
        with self._counter_lock:
            return next(self._model_seq_ids)

    # ----- API --------------------------------------------------------------------------------

    def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        """Ask the service which models it serves (blocks until answered).

        Returns:
            GetServerCapabilitiesResponse: The supported models and their limits.

        Raises:
            APIError: The request failed (an APIStatusError or APIConnectionError subclass).
        """
        return self._run(self._get_server_capabilities())

    async def get_server_capabilities_async(self) -> GetServerCapabilitiesResponse:
        """Async version of `get_server_capabilities`.

        Returns:
            GetServerCapabilitiesResponse: The answer itself.
        """
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
        optimizer: OptimizerConfig | None = None,
    ) -> TrainingClient:
        """Create a new LoRA model on `base_model` and a TrainingClient for it.

        Blocks until the model exists. The optimizer is fixed for the model's lifetime.

        Args:
            base_model: The base model's name, e.g. "Qwen/Qwen3-8B".
            rank: The LoRA rank.
            seed: Seed of the LoRA initialisation; None: the service's default.
            train_mlp: Train LoRA adapters on the MLP layers.
            train_attn: Train LoRA adapters on the attention layers.
            train_unembed: Train a LoRA adapter on the unembedding layer.
            user_metadata: Key-value pairs recorded with the training run.
            optimizer: The optimizer's configuration; None or AdamOptimizerConfig: AdamW. Any
                other (DimuonOptimizerConfig) needs the HTTP transport.

        Returns:
            TrainingClient: The client of the new model (also its own resolved future).

        Raises:
            ConfigurationError: A non-Adam `optimizer` over the gRPC transport.
            APIError: The service refused or failed the request (an APIStatusError such as
                BadRequestError, or RequestFailedError).
            SessionGoneError: The service ended this client's session.

        Example:
            >>> service = ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev")
            >>> training = service.create_lora_training_client("Qwen/Qwen3-8B", rank=8, seed=0)
            >>> training.forward_backward_custom(data, loss_fn).result()
        """
        lora = LoraConfig(rank, seed, train_mlp, train_attn, train_unembed)
        return self._run(
            self._create_lora_training_client(base_model, lora, user_metadata, optimizer)
        )

    async def create_lora_training_client_async(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: Mapping[str, str] | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> TrainingClient:
        """Async version of `create_lora_training_client`.

        Returns:
            TrainingClient: The client of the new model.
        """
        lora = LoraConfig(rank, seed, train_mlp, train_attn, train_unembed)
        coroutine = self._create_lora_training_client(base_model, lora, user_metadata, optimizer)
        return await self.run_op(coroutine)

    async def _create_lora_training_client(
        self,
        base_model: str,
        lora: LoraConfig,
        user_metadata: Mapping[str, str] | None,
        optimizer: OptimizerConfig | None = None,
    ) -> TrainingClient:
        session_id = await self._session()
        model_seq_id = self._next_model_seq_id()
        pending: Pending[str]
        if optimizer is None or isinstance(optimizer, AdamOptimizerConfig):
            pending = await self.transport.create_model(
                session_id, model_seq_id, base_model, lora, user_metadata
            )
        else:
            wire = json_wire(self.transport, "create_lora_training_client(optimizer=...)")
            pending = await wire.submit_json_op(
                "/create_model",
                create_model_body(
                    session_id, model_seq_id, base_model, lora, user_metadata, optimizer
                ),
                "CreateModel",
                lambda body: str(body["model_id"]),
            )
        model_id = await pending.result()
        return TrainingClient(self, model_id, await self.transport.get_info(model_id))

    def create_training_client_from_state(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: Mapping[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> TrainingClient:
        """Create a new model with a checkpoint's weights and a fresh optimizer state.

        Args:
            path: The checkpoint's tinker path (`tinker://<model_id>/weights/<name>`).
            base_model: Overrides the checkpoint's base model (it must be compatible).
            user_metadata: Key-value pairs recorded with the training run.
            weights_access_token: A token for another owner's checkpoint.
            optimizer: The new model's optimizer; None: AdamW.

        Returns:
            TrainingClient: The client of the new model (blocks until it is loaded).

        Raises:
            ConfigurationError: `base_model`, `weights_access_token` or `optimizer` over the gRPC
                transport (HTTP only).
            APIError: The checkpoint could not be loaded (e.g. NotFoundError, RequestFailedError).
        """
        return self._run(
            self._from_state(
                path, False, user_metadata, base_model, weights_access_token, optimizer
            )
        )

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: Mapping[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> TrainingClient:
        """Create a new model with a checkpoint's weights and Adam state, to continue exactly.

        Args:
            path: The checkpoint's tinker path (`tinker://<model_id>/weights/<name>`).
            base_model: Overrides the checkpoint's base model (it must be compatible).
            user_metadata: Key-value pairs recorded with the training run.
            weights_access_token: A token for another owner's checkpoint.

        Returns:
            TrainingClient: The client of the new model (blocks until it is loaded).

        Raises:
            ConfigurationError: `base_model` or `weights_access_token` over the gRPC transport.
            APIError: The checkpoint could not be loaded (e.g. NotFoundError, RequestFailedError).
        """
        return self._run(
            self._from_state(path, True, user_metadata, base_model, weights_access_token)
        )

    async def _from_state(
        self,
        path: str,
        optimizer: bool,
        user_metadata: Mapping[str, str] | None,
        base_model: str | None = None,
        weights_access_token: str | None = None,
        optimizer_config: OptimizerConfig | None = None,
    ) -> TrainingClient:
        session_id = await self._session()
        model_seq_id = self._next_model_seq_id()
        pending: Pending[Any]
        if base_model is None and weights_access_token is None and optimizer_config is None:
            pending = await self.transport.create_model_from_state(
                session_id, model_seq_id, path, optimizer, user_metadata
            )
        else:
            wire = json_wire(
                self.transport,
                "create_training_client_from_state with base_model, weights_access_token or "
                "optimizer",
            )
            pending = await wire.submit_json_op(
                "/load_weights",
                create_from_state_body(
                    session_id,
                    model_seq_id,
                    path,
                    optimizer,
                    base_model,
                    user_metadata,
                    optimizer_config,
                    weights_access_token,
                ),
                "LoadWeights",
                LoadWeightsResponse.from_json,
            )
        await pending.result()
        # The model id is derived, not returned: "<session_id>:train:<model_seq_id>".
        model_id = f"{session_id}:train:{model_seq_id}"
        return TrainingClient(self, model_id, await self.transport.get_info(model_id))

    async def create_training_client_from_state_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: Mapping[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> TrainingClient:
        """Async version of `create_training_client_from_state`.

        Returns:
            TrainingClient: The client of the new model.
        """
        return await self.run_op(
            self._from_state(
                path, False, user_metadata, base_model, weights_access_token, optimizer
            )
        )

    async def create_training_client_from_state_with_optimizer_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: Mapping[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> TrainingClient:
        """Async version of `create_training_client_from_state_with_optimizer`.

        Returns:
            TrainingClient: The client of the new model.
        """
        return await self.run_op(
            self._from_state(path, True, user_metadata, base_model, weights_access_token)
        )

    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        """Create a sampling client for saved sampler weights or for a base model.

        Args:
            model_path: Saved sampler weights (`tinker://<model_id>/sampler_weights/<name>`).
            base_model: A base model's name, to sample from it untrained.
            retry_config: A retry policy of the client's own (tinker_ref/retry.py); None: this
                client's.
            record_stability_info: Mark every sample for the `stable_reinforce` loss.

        Returns:
            SamplingClient: The new client (blocks until the sampling session exists).

        Raises:
            ConfigurationError: Not exactly one of `model_path` and `base_model`, or a
                `model_path` that does not start with "tinker://".
        """
        _check_sampling_source(model_path, base_model)
        client = self._run(self._create_sampling_client(model_path, base_model))
        client.record_stability_info, client.retry_config = record_stability_info, retry_config
        return client

    async def create_sampling_client_async(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        """Async version of `create_sampling_client`.

        Returns:
            SamplingClient: The new client.
        """
        _check_sampling_source(model_path, base_model)
        client = await self.run_op(self._create_sampling_client(model_path, base_model))
        client.record_stability_info, client.retry_config = record_stability_info, retry_config
        return client

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

    # ----- SDK 0.38 surface: sessions, custom losses, copies, REST -----------------------------

    async def _create_session(self) -> str:
        """`create_session`, with the display name (HTTP) when one was given."""
        if self._display_name is None:
            return await self.transport.create_session(
                self._tags, self._user_metadata, self._project_id
            )
        wire = json_wire(self.transport, "ServiceClient(display_name=...)")
        body: dict[str, Any] = {
            "tags": self._tags,
            "user_metadata": self._user_metadata,
            "sdk_version": SDK_WIRE_VERSION,
        }
        if self._project_id is not None:
            body["project_id"] = self._project_id
        body |= {"display_name": self._display_name, "type": "create_session"}
        answer = await wire.request_json("POST", "/create_session", body)
        return str(answer["session_id"])

    def create_custom_loss(
        self, fn: PerDatumLossFn, input_ranks: Mapping[str, CustomLossInputRank]
    ) -> APIFuture[LossHandle]:
        """Trace a per-datum loss for `TrainingClient.forward_backward_custom`.

        The function is traced with torch.fx and checked against the SDK's rules
        (tinker_ref/loss_handle.py). Where the service's config says `custom_loss_server_side` it
        is uploaded and runs on the server; else it runs client-side. Each loss once per session.

        Args:
            fn: `fn(logprobs, *inputs) -> (loss, metrics)`, run once per datum; its parameters
                after `logprobs` name the `loss_fn_inputs` it reads.
            input_ranks: The rank (0, 1 or 2) of each parameter of `fn`, `logprobs` included.

        Returns:
            APIFuture[LossHandle]: The handle to pass to `forward_backward_custom`.

        Raises:
            ValueError: From the future: `fn` breaks a tracing rule, or this session already
                created the same loss.
            ConfigurationError: From the future: a server-side upload over the gRPC transport.
        """

        async def create() -> LossHandle:
            session_id = await self._session()
            handle = trace_loss(fn, input_ranks, session_id)
            existing = self._custom_losses.get(handle.key)
            if existing is not None:
                raise ValueError(
                    f"create_custom_loss: this session already created {existing.name!r} with "
                    "the same traced loss; reuse its LossHandle"
                )
            self._custom_losses[handle.key] = handle
            if not self.client_config.custom_loss_server_side:
                return handle
            wire = json_wire(self.transport, "create_custom_loss (server-side)")
            with self._counter_lock:
                number = next(self._custom_loss_seq_ids)
            pending = await wire.submit_json_op(
                "/create_custom_loss",
                create_custom_loss_body(
                    session_id,
                    number,
                    handle.name,
                    [i.to_json() for i in handle.inputs],
                    encode_graph(handle).to_json(),
                ),
                "CreateCustomLoss",
                lambda body: str(body["loss_id"]),
            )
            return dataclasses.replace(handle, loss_id=await pending.result())

        return self.run_op(create())

    def copy_weights(
        self,
        path: str,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
    ) -> APIFuture[str]:
        """Copy weights into this client's project (a new session holds the copy).

        Args:
            path: The tinker path of the weights to copy.
            ttl_seconds: Seconds until the copy expires; None: it never does.
            weights_access_token: A token for another owner's weights.

        Returns:
            APIFuture[str]: The copy's tinker path.

        Raises:
            ValueError: This client has no project (no `project_id`, no `$TINKER_PROJECT_ID`).
            ConfigurationError: Over the gRPC transport (REST is HTTP only).
        """
        return self._rest_client().copy_weights(
            path,
            destination_project_id=self._project_id,
            ttl_seconds=ttl_seconds,
            weights_access_token=weights_access_token,
        )

    def _rest_client(self) -> RestClient:
        """One RestClient per ServiceClient, over a session-less connection of its own."""
        from tinker_ref.rest_client import RestClient

        with self._counter_lock:
            if self._rest is None:
                self._rest = RestClient(self)
            return self._rest

    def create_rest_client(self) -> RestClient:
        """Return a RestClient over this client's own connection.

        Deprecated in SDK 0.38: construct `RestClient()` directly. One per ServiceClient.

        Returns:
            RestClient: The REST client (it needs no closing of its own).

        Raises:
            ConfigurationError: Over the gRPC transport (REST is HTTP only).
        """
        return self._rest_client()

    def get_telemetry(self) -> None:
        """Return None: tinker_ref sends no telemetry."""
        return None
