"""ServiceClient: the entry point. Owns the event loop, the transport and the session.

    client = ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev")
    training = client.create_lora_training_client("Qwen/Qwen3-8B", rank=8)

`base_url` defaults to `$TINKER_BASE_URL`, then to the production service; `api_key` to
`$TINKER_API_KEY`, then to `$TINKER_CREDENTIAL_CMD`'s output; `project_id` to
`$TINKER_PROJECT_ID` (every variable: tinker_ref/environment.py). `transport="grpc"` speaks the
mock server's gRPC service instead, with
`base_url` a gRPC target such as "127.0.0.1:50051". The session is created on first use;
its heartbeat runs in the background every 10 s. Names and argument order follow the
official SDK, so a script switches by changing its import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import threading
import warnings
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from tinker_ref import environment
from tinker_ref.errors import ConfigurationError, TinkerRefError
from tinker_ref.futures import APIFuture, EventLoopThread
from tinker_ref.loss_handle import LossHandle, PerDatumLossFn, encode_graph, trace_loss
from tinker_ref.sampling_client import SamplingClient
from tinker_ref.training_client import TrainingClient
from tinker_ref.transport.base import ClientConfig, Pending, Transport
from tinker_ref.transport.grpc import GrpcTransport
from tinker_ref.transport.http import HttpTransport
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

DEFAULT_BASE_URL = environment.DEFAULT_BASE_URL
SDK_WIRE_VERSION = "0.38.0"  # the create_session `sdk_version` tinker_ref's transports send
HEARTBEAT_SECONDS = 10.0
TRANSPORTS = ("http", "grpc")


def _api_key(api_key: str | None) -> str:
    return environment.api_key(api_key)


def _check_sampling_source(model_path: str | None, base_model: str | None) -> None:
    if (model_path is None) == (base_model is None):
        raise ConfigurationError("pass exactly one of model_path and base_model")
    if model_path is not None and not model_path.startswith("tinker://"):
        raise ConfigurationError(f"model_path must start with 'tinker://', got {model_path!r}")


class ServiceClient:
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
        self.base_url = environment.base_url(base_url)
        self.transport: Transport
        if transport == "grpc":
            # base_url is a gRPC target: "host:port" (a "grpc://" prefix is accepted).
            target = self.base_url.removeprefix("grpc://")
            self.transport = GrpcTransport(target, _api_key(api_key))
        else:
            http = HttpTransport(self.base_url, _api_key(api_key))
            http.default_headers.update(
                environment.default_headers() | dict(default_headers_overrides or {})
            )
            self.transport = http
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
        self._heartbeat: asyncio.Task[None] | None = None
        self._counter_lock = threading.Lock()
        self._model_seq_ids = itertools.count()
        self._sampling_session_seq_ids = itertools.count()

    # ----- lifecycle --------------------------------------------------------------------------

    @property
    def client_config(self) -> ClientConfig:
        if self._client_config is None:
            raise TinkerRefError("the client has not contacted the service yet")
        return self._client_config

    async def _started(self) -> ClientConfig:
        async with self._start_lock:
            if self._client_config is None:
                self._client_config = await self.transport.start()
            return self._client_config

    async def _session(self) -> str:
        await self._started()
        async with self._start_lock:
            if self._session_id is None:
                self._session_id = await self._create_session()
                self._heartbeat = asyncio.get_running_loop().create_task(
                    self._beat(self._session_id)
                )
            return self._session_id

    async def _beat(self, session_id: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.transport.session_heartbeat(session_id)
            except TinkerRefError:
                continue  # a missed heartbeat is not fatal; the next one may get through

    def close(
        self,
        status: Literal["success", "errored", "interrupted"] = "success",
        detail: str | None = None,
    ) -> APIFuture[None]:
        """End the session (as `status`) and release the connection pool and the loop thread.

        Returns a completed future, as SDK 0.38's `close(...)` returns one (`.result()`).
        `detail` (HTTP) is a note kept with the session's finish reason."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        done.set_result(None)
        if self.loop.loop.is_closed():
            return APIFuture(done)

        async def shutdown() -> None:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            try:
                http = detail is not None and hasattr(self.transport, "request_json")
                if self._session_id is not None and http:  # gRPC: no detail field
                    wire = json_wire(self.transport, "close(detail=...)")
                    body = {"reason": {"type": status}, "detail": detail}
                    await wire.request_json("POST", f"/sessions/{self._session_id}/finish", body)
                elif self._session_id is not None:
                    await self.transport.finish_session(self._session_id, status)
            except TinkerRefError:
                pass  # closing must not fail because the service is gone
            finally:
                await self.transport.close()
                if self._rest is not None:  # create_rest_client()'s connection
                    await self._rest._connection.transport.close()

        self.loop.run(shutdown(), timeout=30)
        self.loop.close()
        return APIFuture(done)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("success")
        elif issubclass(exc_type, Exception):
            self.close("errored")
        else:
            self.close("interrupted")

    def next_sampling_session_seq_id(self) -> int:
        with self._counter_lock:
            return next(self._sampling_session_seq_ids)

    def _next_model_seq_id(self) -> int:
        with self._counter_lock:
            return next(self._model_seq_ids)

    # ----- API --------------------------------------------------------------------------------

    def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        return self.loop.run(self.get_server_capabilities_async())

    async def get_server_capabilities_async(self) -> GetServerCapabilitiesResponse:
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
        """A new LoRA model; `optimizer` (fixed for its lifetime) defaults to AdamW."""
        lora = LoraConfig(rank, seed, train_mlp, train_attn, train_unembed)
        return self.loop.run(
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
        lora = LoraConfig(rank, seed, train_mlp, train_attn, train_unembed)
        coroutine = self._create_lora_training_client(base_model, lora, user_metadata, optimizer)
        return await self.loop.submit(coroutine)

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
        """A new model with the checkpoint's weights; fresh optimizer state (`optimizer`,
        default AdamW). `base_model` overrides the checkpoint's (it must be compatible)."""
        return self.loop.run(
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
        """A new model with the checkpoint's weights and Adam state (continues bit-exactly)."""
        return self.loop.run(
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
        return await self.loop.submit(
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
        return await self.loop.submit(
            self._from_state(path, True, user_metadata, base_model, weights_access_token)
        )

    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: object | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        """Sample from saved sampler weights (`tinker://...`) or from a base model.
        `record_stability_info` marks every sample for `stable_reinforce`; `retry_config` is
        accepted for the SDK's signature (tinker_ref's transport retries on its own)."""
        _check_sampling_source(model_path, base_model)
        client = self.loop.run(self._create_sampling_client(model_path, base_model))
        client.record_stability_info, client.retry_config = record_stability_info, retry_config
        return client

    async def create_sampling_client_async(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: object | None = None,
        record_stability_info: bool = False,
    ) -> SamplingClient:
        _check_sampling_source(model_path, base_model)
        client = await self.loop.submit(self._create_sampling_client(model_path, base_model))
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
        """Trace a per-datum loss for `TrainingClient.forward_backward_custom`
        (tinker_ref/loss_handle.py). Uploaded (and run by the server) where the service's
        config says `custom_loss_server_side`; else it runs client-side. Once per session."""

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

        return self.loop.submit(create())

    def copy_weights(
        self,
        path: str,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
    ) -> APIFuture[str]:
        """Copy weights into this client's project (a new session holds the copy)."""
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
        """A RestClient over this client's connection (deprecated in SDK 0.38: construct
        `RestClient()` directly)."""
        return self._rest_client()

    def get_telemetry(self) -> None:
        """None: tinker_ref sends no telemetry."""
        return None
