"""Run the mock server inside the current process, on a background thread.

    with serve(seed=0) as mock:
        client = tinker_ref.ServiceClient(base_url=mock.url, api_key="tml-dev")

    with serve(grpc=True) as mock:  # also gRPC, over the same service
        client = tinker_ref.ServiceClient(
            base_url=mock.grpc_target, api_key="tml-dev", transport="grpc"
        )

The server gets its own event loop on a daemon thread, so synchronous code (scripts, pytest
tests, the official SDK with its own loop thread) can talk to it over loopback exactly as it
would talk to `tinker-mock serve`. Leaving the `with` block stops it the same way SIGTERM stops
the CLI: long-polls are answered, connections drain, the engine pool finishes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc.aio
from aiohttp import web

from mock_server.grpc import start_grpc, stop_grpc
from mock_server.http import create_app, start_http
from mock_server.http.keys import SERVICE_KEY
from mock_server.http.middleware import FAULTS_KEY
from mock_server.service import ServerConfig, TinkerService

START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class EmbeddedServer:
    """A running in-process mock: its base URL(s) and its service (for white-box helpers)."""

    url: str  # http://127.0.0.1:PORT
    config: ServerConfig
    service: TinkerService
    loop: asyncio.AbstractEventLoop
    grpc_server: grpc.aio.Server | None = None  # set when started with gRPC
    grpc_port: int | None = None

    @property
    def grpc_target(self) -> str:
        """The gRPC target, "127.0.0.1:PORT" (`ServiceClient(base_url=..., transport="grpc")`)."""
        if self.grpc_port is None:
            # AttributeError: `getattr(server, "grpc_target", None)` probes for it.
            raise AttributeError("this embedded server serves no gRPC; start it with grpc=True")
        host = self.config.host
        return f"[{host}]:{self.grpc_port}" if ":" in host else f"{host}:{self.grpc_port}"

    def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the server's loop (its state is only touched there)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(START_TIMEOUT_SECONDS)


@contextmanager
def serve(
    config: ServerConfig | None = None, *, grpc: bool | None = None, **overrides: Any
) -> Iterator[EmbeddedServer]:
    """Start a mock server on a free loopback port (unless `config` says otherwise).

    `overrides` replace fields of `config` (default: `ServerConfig(port=0)`), e.g.
    `serve(seed=3, client_config_overrides={"fwdbwd_max_chunk_len": 2})`. gRPC is served when
    `config.grpc_port` is set (0 = a free port); `grpc=True` turns it on (on a free port unless
    the config names one), `grpc=False` off. Its address: `EmbeddedServer.grpc_target`.
    """
    config = dataclasses.replace(config or ServerConfig(port=0), **overrides)
    if grpc and config.grpc_port is None:
        config = dataclasses.replace(config, grpc_port=0)
    elif grpc is False:
        config = dataclasses.replace(config, grpc_port=None)
    loop = asyncio.new_event_loop()
    started: Future[tuple[web.AppRunner, EmbeddedServer]] = Future()

    async def start() -> None:
        app = create_app(config)
        runner, port = await start_http(app, config.host, config.port)
        service = app[SERVICE_KEY]
        grpc_server, grpc_port = None, None
        if config.grpc_port is not None:
            try:
                grpc_server, grpc_port = await start_grpc(
                    service, config.host, config.grpc_port, app.get(FAULTS_KEY)
                )
            except BaseException:
                await runner.cleanup()
                raise
        host = f"[{config.host}]" if ":" in config.host else config.host
        server = EmbeddedServer(
            f"http://{host}:{port}", config, service, loop, grpc_server, grpc_port
        )
        started.set_result((runner, server))

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # handed to the caller, which re-raises it
            started.set_exception(exc)
        else:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run_loop, name="tinker-mock-embedded", daemon=True)
    thread.start()
    runner, server = started.result(START_TIMEOUT_SECONDS)

    async def stop() -> None:
        if server.grpc_server is not None:
            await stop_grpc(server.grpc_server, server.service)
        await runner.cleanup()

    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(START_TIMEOUT_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_SECONDS)
