"""ServiceClient: the entry point. Owns the event loop, the transport and the session.

    client = ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev")
    training = client.create_lora_training_client("Qwen/Qwen3-8B", rank=8)

`base_url` defaults to `$TINKER_BASE_URL`, then to the production service; `api_key` to
`$TINKER_API_KEY`. `transport="grpc"` speaks the mock server's gRPC service instead, with
`base_url` a gRPC target such as "127.0.0.1:50051". The session is created on first use;
its heartbeat runs in the background every 10 s. Names and argument order follow the
official SDK, so a script switches by changing its import.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

from tinker_ref.errors import ConfigurationError, TinkerRefError
from tinker_ref.futures import EventLoopThread
from tinker_ref.sampling_client import SamplingClient
from tinker_ref.training_client import TrainingClient
from tinker_ref.transport.base import ClientConfig, Transport
from tinker_ref.transport.grpc import GrpcTransport
from tinker_ref.transport.http import HttpTransport
from tinker_ref.types import LoraConfig
from tinker_ref.types.responses import GetServerCapabilitiesResponse

DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
HEARTBEAT_SECONDS = 10.0
TRANSPORTS = ("http", "grpc")


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
    ) -> None:
        if transport not in TRANSPORTS:
            raise ConfigurationError(
                f"unknown transport {transport!r}; available: {', '.join(TRANSPORTS)}"
            )
        self.base_url = base_url or os.environ.get("TINKER_BASE_URL") or DEFAULT_BASE_URL
        self.transport: Transport
        if transport == "grpc":
            # base_url is a gRPC target: "host:port" (a "grpc://" prefix is accepted).
            target = self.base_url.removeprefix("grpc://")
            self.transport = GrpcTransport(target, _api_key(api_key))
        else:
            self.transport = HttpTransport(self.base_url, _api_key(api_key))
        self.loop = EventLoopThread()
        self._user_metadata = dict(user_metadata or {})
        self._tags = list(tags)
        self._project_id = project_id
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
                self._session_id = await self.transport.create_session(
                    self._tags, self._user_metadata, self._project_id
                )
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

    def close(self) -> None:
        """End the session and release the connection pool and the loop thread."""
        if self.loop.loop.is_closed():
            return

        async def shutdown() -> None:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            try:
                if self._session_id is not None:
                    await self.transport.finish_session(self._session_id, "success")
            except TinkerRefError:
                pass  # closing must not fail because the service is gone
            finally:
                await self.transport.close()

        self.loop.run(shutdown(), timeout=30)
        self.loop.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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
    ) -> TrainingClient:
        lora = LoraConfig(rank, seed, train_mlp, train_attn, train_unembed)
        return self.loop.run(self._create_lora_training_client(base_model, lora, user_metadata))

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
        return await self.loop.submit(coroutine)

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
        return self.loop.run(self._from_state(path, False, user_metadata))

    def create_training_client_from_state_with_optimizer(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> TrainingClient:
        """A new model with the checkpoint's weights and Adam state (continues bit-exactly)."""
        return self.loop.run(self._from_state(path, True, user_metadata))

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
        return await self.loop.submit(self._from_state(path, False, user_metadata))

    async def create_training_client_from_state_with_optimizer_async(
        self, path: str, user_metadata: Mapping[str, str] | None = None
    ) -> TrainingClient:
        return await self.loop.submit(self._from_state(path, True, user_metadata))

    def create_sampling_client(
        self, model_path: str | None = None, base_model: str | None = None
    ) -> SamplingClient:
        """Sample from saved sampler weights (`tinker://...`) or from a base model."""
        _check_sampling_source(model_path, base_model)
        return self.loop.run(self._create_sampling_client(model_path, base_model))

    async def create_sampling_client_async(
        self, model_path: str | None = None, base_model: str | None = None
    ) -> SamplingClient:
        _check_sampling_source(model_path, base_model)
        return await self.loop.submit(self._create_sampling_client(model_path, base_model))

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
