"""`tinker-mock serve`: the ready line, port 0, both front ends over one service, config and
port errors, graceful shutdown — as a process, and in-process where a process adds nothing."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from mock_server import cli
from mock_server.service import ServerConfig
from tests.support.mock_process import READY, REPO_ROOT, running_mock_server
from tinker_ref import codec
from tinker_ref._proto.tinker_ref.training.v1 import training_pb2 as pb
from tinker_ref._proto.tinker_ref.training.v1.training_pb2_grpc import TrainingServiceStub
from tinker_ref.types import Datum, ModelInput

_GRPC_KEY = (("x-api-key", "tml-dev"),)


def _call(url: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    request = urllib.request.Request(
        f"{url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": "tml-dev", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_ready_line_then_silence_on_stdout_and_graceful_sigterm() -> None:
    with running_mock_server(
        "--seed", "3", "--client-config", '{"fwdbwd_max_chunk_len": 7}'
    ) as server:
        assert server.grpc_target is not None
        assert READY.match(f"tinker-mock listening http={server.url} grpc={server.grpc_target}")
        assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
        assert server.grpc_target.startswith("127.0.0.1:")
        assert not server.grpc_target.endswith(":0")
        channel = grpc.insecure_channel(server.grpc_target)
        stub = TrainingServiceStub(channel)
        assert _call(server.url, "/api/v1/healthz") == {"status": "ok"}
        config = _call(server.url, "/api/v1/client/config", {"sdk_version": "0.38.0"})
        assert config["fwdbwd_max_chunk_len"] == 7
        session = _call(server.url, "/api/v1/create_session", {})["session_id"]
        model = _call(
            server.url,
            "/api/v1/create_model",
            {"session_id": session, "model_seq_id": 0, "base_model": "tinker-ref/tiny-64"},
        )
        # A long-poll on a future that cannot finish (seq 1 never comes) is pending at SIGTERM.
        _call(server.url, "/api/v1/retrieve_future", {"request_id": model["request_id"]})
        body = codec.encode_forward_backward_request(
            model["model_id"],
            2,
            [Datum(ModelInput.from_ints([1, 2]), {"target_tokens": [2, 3], "weights": [1.0, 1.0]})],
            "cross_entropy",
        )
        request = urllib.request.Request(
            f"{server.url}/api/v1/forward_backward",
            data=body,
            headers={"X-API-Key": "tml-dev", "Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            pending = json.loads(response.read())["request_id"]
        # One service behind both front ends: the model made over HTTP answers over gRPC.
        config = stub.GetClientConfig(pb.GetClientConfigRequest(), metadata=_GRPC_KEY, timeout=10)
        assert config.fwdbwd_max_chunk_len == 7
        info = stub.GetInfo(
            pb.GetInfoRequest(model_id=model["model_id"]), metadata=_GRPC_KEY, timeout=30
        )
        assert info.model_id == model["model_id"] and info.model_name == "tinker-ref/tiny-64"
        answers: list[Any] = []
        grpc_answers: list[pb.RetrieveFutureResponse] = []

        def long_poll() -> None:
            answers.append(_call(server.url, "/api/v1/retrieve_future", {"request_id": pending}))

        def grpc_long_poll() -> None:
            request = pb.RetrieveFutureRequest(request_id=pending)
            grpc_answers.append(stub.RetrieveFuture(request, metadata=_GRPC_KEY, timeout=40))

        pollers = [threading.Thread(target=long_poll), threading.Thread(target=grpc_long_poll)]
        for poller in pollers:
            poller.start()
        time.sleep(0.5)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 0
        for poller in pollers:
            poller.join(20)
        channel.close()
        assert time.monotonic() - started < 15  # the long-polls did not hold shutdown for 30 s
        assert answers and answers[0]["type"] == "try_again"
        assert grpc_answers and grpc_answers[0].WhichOneof("outcome") == "try_again"
        assert server.process.stdout is not None and server.process.stdout.read() == ""


async def _serve_in_process(
    config: ServerConfig, capsys: pytest.CaptureFixture[str]
) -> tuple[asyncio.Task[None], re.Match[str]]:
    """`cli.serve(config)` as a task of the running loop, once its ready line is printed."""
    server = asyncio.create_task(cli.serve(config))
    printed = ""
    while "\n" not in printed:
        await asyncio.sleep(0.05)
        assert not server.done(), server
        printed += capsys.readouterr().out
    url = READY.match(printed.strip())
    assert url is not None, printed
    return server, url


def test_grpc_port_minus_one_turns_grpc_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (a process start costs seconds of imports): the CLI's own parse and serve.
    args = ["serve", "--port", "0", "--grpc-port", "-1", "--data-dir", str(tmp_path)]
    config = cli.config_from_args(cli.build_parser().parse_args(args))
    assert config.grpc_port is None

    async def run() -> None:
        server, url = await _serve_in_process(config, capsys)
        assert url.group("grpc") == "-"
        health = await asyncio.to_thread(_call, url.group("http"), "/api/v1/healthz")
        assert health == {"status": "ok"}
        os.kill(os.getpid(), signal.SIGTERM)  # serve() installed its handler before printing
        await asyncio.wait_for(server, 20)

    asyncio.run(run())


def test_requests_that_arrive_while_the_stack_loads_are_held_then_answered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ready line comes before torch and the service are loaded (mock_server/startup.py).
    # The load is held here until requests of both front ends have arrived: they must wait, not
    # be refused, and then get the ready server's answers.
    from mock_server import startup

    loading, release = threading.Event(), threading.Event()
    real_load = startup.load_stack

    def held_load() -> None:
        loading.set()
        release.wait(60)
        real_load()

    monkeypatch.setattr(startup, "load_stack", held_load)
    args = ["serve", "--port", "0", "--grpc-port", "0", "--data-dir", str(tmp_path)]
    args += ["--client-config", '{"fwdbwd_max_chunk_len": 5}']
    config = cli.config_from_args(cli.build_parser().parse_args(args))

    async def run() -> None:
        server, url = await _serve_in_process(config, capsys)
        assert await asyncio.to_thread(loading.wait, 30)
        channel = grpc.insecure_channel(url.group("grpc"))
        stub = TrainingServiceStub(channel)
        get_config = functools.partial(
            stub.GetClientConfig, pb.GetClientConfigRequest(), metadata=_GRPC_KEY, timeout=60
        )
        held = [
            asyncio.ensure_future(asyncio.to_thread(_call, url.group("http"), path, body, 60))
            for path, body in [("/api/v1/healthz", None), ("/api/v1/create_session", {})]
        ]
        held.append(asyncio.ensure_future(asyncio.to_thread(get_config)))
        await asyncio.sleep(1.0)
        try:
            assert not any(call.done() for call in held), [call for call in held if call.done()]
        finally:
            release.set()
        health, session, grpc_config = await asyncio.wait_for(asyncio.gather(*held), 60)
        assert health == {"status": "ok"}
        assert session["session_id"]
        assert grpc_config.fwdbwd_max_chunk_len == 5
        channel.close()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server, 20)

    try:
        asyncio.run(run())
    finally:
        release.set()


def test_the_cli_server_process_hands_the_gil_over_quickly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `tinker-mock serve` owns its interpreter: it shortens the GIL switch interval so the event
    # loop is not held ~5 ms per syscall by engine threads (mock_server/startup.py).
    from mock_server import startup

    seen: list[float] = []

    async def fake_serve(config: ServerConfig) -> None:
        seen.append(sys.getswitchinterval())

    before = sys.getswitchinterval()
    monkeypatch.setattr(cli, "serve", fake_serve)
    try:
        assert cli.main(["serve", "--port", "0", "--grpc-port", "-1"]) == 0
    finally:
        sys.setswitchinterval(before)
    assert seen == [startup.SWITCH_INTERVAL_S] and before > startup.SWITCH_INTERVAL_S


def test_a_grpc_port_in_use_exits_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--port", "0", "--grpc-port", str(port)]) == 1
    captured = capsys.readouterr()
    assert f"127.0.0.1:{port}" in captured.err and captured.out == ""


def test_bad_client_config_exits_with_a_message() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mock_server",
            "serve",
            "--port",
            "0",
            "--client-config",
            '{"fwdbwd_max_chunk_lenn": 2}',
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert "fwdbwd_max_chunk_lenn" in completed.stderr and completed.stdout == ""


def test_session_lifetimes_are_flags_with_the_config_defaults() -> None:
    parse = cli.build_parser().parse_args
    default = cli.config_from_args(parse(["serve"]))
    assert default.session_idle_seconds == ServerConfig().session_idle_seconds == 3600.0
    assert default.session_abandon_seconds == ServerConfig().session_abandon_seconds == 60.0
    args = ["serve", "--session-idle-seconds", "90", "--session-abandon-seconds", "2.5"]
    config = cli.config_from_args(parse(args))
    assert (config.session_idle_seconds, config.session_abandon_seconds) == (90.0, 2.5)


def test_a_session_lifetime_that_is_not_positive_exits_with_a_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["serve", "--port", "0", "--session-abandon-seconds", "0"]) == 2
    captured = capsys.readouterr()
    assert "session_abandon_seconds must be > 0, got 0.0" in captured.err
    assert captured.out == ""
