"""Listeners first, torch later: what `tinker-mock serve` does before its ready line.

Importing the server stack costs over a second, nearly all of it torch; binding two ports costs
milliseconds. So the CLI binds both listeners with only the light modules loaded (this one,
`grpc`, the config), prints its ready line, and loads the rest in a worker thread
(`load_stack`). Meanwhile:

- HTTP: `bind_http_socket` is a plain listening socket; the kernel completes the TCP handshake
  of every connection and queues it (and the bytes its client sends) until aiohttp takes the
  socket over (`web.SockSite`) once the service exists. A request sent after the ready line is
  held, then answered by the full server — never refused, never answered by a stand-in.
- gRPC: the `grpc.aio` server is started at once with `GrpcGate` as its only handler; a call
  that arrives before the service is ready awaits readiness inside the gate, then runs the real
  handler (`mock_server/grpc/server.py`) on the same bytes. Once ready, the gate hands calls to
  the real handler directly.

The hold lasts as long as the load (about one `import torch`); if the load fails the server
exits 1 and the held connections are closed. Nothing answers before the service is ready.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

# How long a thread that wants the GIL waits before the holder must give it up (CPython's
# default is 5 ms). The engine's workers hold the GIL for most of a small model's step (torch's
# Python-level dispatch), so with the default every syscall of the event loop thread (a send, a
# poll) costs it up to 5 ms to get back in while engine work runs: a request answered during a
# step waited ~5 ms per hand-over. Measured on a busy 2-core machine, 0.5 ms cut the small
# model's HTTP step by 10-25% (benchmark row "server overhead (small model)"); on a quiet
# machine it made no difference. Switches happen only when a thread waits for the GIL.
SWITCH_INTERVAL_S = 0.0005

# The modules the ready server needs beyond the light start-up path; torch comes with them.
STACK_MODULES = ("mock_server.http", "mock_server.grpc.server", "mock_server.service.service")


def tune_interpreter() -> None:
    """Process-wide settings for a process that is a server and nothing else (the CLI's)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def load_stack() -> None:
    """Import the server stack (run in a worker thread while the listeners queue requests)."""
    for name in STACK_MODULES:
        importlib.import_module(name)


def bind_http_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on the first address `host` resolves to (port 0 = a free one),
    with SO_REUSEADDR as asyncio's servers set it; OSError when it cannot bind."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def grpc_listener(host: str, port: int, max_body_bytes: int) -> tuple[grpc.aio.Server, int]:
    """A `grpc.aio` server bound to `host:port` (0 = a free port), not started and without
    handlers; returns it and the bound port. OSError when it cannot bind."""
    server = grpc.aio.server(
        options=[
            # The HTTP body cap; above it grpc answers RESOURCE_EXHAUSTED itself.
            ("grpc.max_receive_message_length", max_body_bytes),
            ("grpc.max_send_message_length", -1),
            # Without this a second server could bind the same fixed port and share its traffic.
            ("grpc.so_reuseport", 0),
        ]
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises this when it cannot bind
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from exc
    return server, bound


class GrpcGate(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no types
    """The gRPC server's handler from the first call on: holds calls until `open(handler)`,
    then delegates every call to `handler` (the real generic handler)."""

    def __init__(self) -> None:
        self._ready = asyncio.Event()
        self._handler: grpc.GenericRpcHandler | None = None

    def open(self, handler: grpc.GenericRpcHandler) -> None:
        self._handler = handler
        self._ready.set()

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        if self._handler is not None:
            return self._handler.service(handler_call_details)
        # Not ready: a raw-bytes handler that waits, then runs the real one on the same bytes.
        return grpc.unary_unary_rpc_method_handler(self._held(handler_call_details))

    def _held(
        self, details: grpc.HandlerCallDetails
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]:
        async def behaviour(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            await self._ready.wait()
            assert self._handler is not None
            real = self._handler.service(details)
            if real is None or real.unary_unary is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"no method {details.method}")
            deserialize = real.request_deserializer
            response = await real.unary_unary(
                deserialize(request) if deserialize else request, context
            )
            serialize = real.response_serializer
            answer: bytes = serialize(response) if serialize else response
            return answer

        return behaviour
