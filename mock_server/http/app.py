"""The aiohttp application factory and the runner that serves it.

`create_app(config)` builds the app: the service is created on startup and closed on cleanup
(`cleanup_ctx`), long-polls are released on shutdown so connections drain at once, the one
middleware records, authenticates and maps errors. `start_http(app, host, port)` serves it with
aiohttp's request decompression off (bodies are decompressed, with caps, in `bodies`), and
returns the runner and the real port (port 0 picks a free one).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

from aiohttp import web

from mock_server.engine import Engine
from mock_server.faults import FaultInjector
from mock_server.http.keys import BOARD_KEY, CONFIG_KEY, SERVICE_KEY
from mock_server.http.middleware import FAULTS_KEY, api_middleware
from mock_server.http.rest_routes import add_rest_routes
from mock_server.http.routes import add_routes
from mock_server.http.status_board import StatusBoard
from mock_server.service import ServerConfig, TinkerService

# Options for aiohttp's request handler (AppRunner / TestServer kwargs): decompression is ours.
SERVER_KWARGS: dict[str, bool] = {"auto_decompress": False}


def create_app(config: ServerConfig, engine: Engine | None = None) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=config.max_body_bytes)
    app[CONFIG_KEY] = config
    app[BOARD_KEY] = StatusBoard()
    if config.fault_plan is not None:  # only an explicit plan injects faults
        app[FAULTS_KEY] = FaultInjector(config.fault_plan)

    async def service_context(app: web.Application) -> AsyncIterator[None]:
        service = TinkerService(config, engine)
        app[SERVICE_KEY] = service
        await service.recover()  # journal replay (crash safety), before the port opens
        yield
        await service.close()

    async def release_long_polls(app: web.Application) -> None:
        app[SERVICE_KEY].begin_shutdown()

    app.cleanup_ctx.append(service_context)
    app.on_shutdown.append(release_long_polls)
    add_routes(app)
    add_rest_routes(app)  # training runs, checkpoints, sessions: tinker.RestClient
    return app


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout: float = 10.0,
    sock: socket.socket | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (call `cleanup()` to stop) and the bound port. With
    `sock`, serve that listening socket (bound earlier: `mock_server.startup`), not host:port."""
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, auto_decompress=False
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port) if sock is None else web.SockSite(runner, sock)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)
