"""Run `tinker-mock serve --port 0` as a subprocess for integration tests.

`running_mock_server(*args)` starts the CLI exactly as a user would (`python -m mock_server
serve --port 0 --grpc-port 0 ...`; a `--grpc-port` in `args` wins), waits (bounded) for its
single ready line, yields a `MockServer` with the HTTP base URL and the gRPC target, and
terminates it with SIGTERM at the end (SIGKILL if it does not exit in time). The server's stderr
goes to a temporary file so a failing test can show it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY = re.compile(r"^tinker-mock listening http=(?P<http>\S+) grpc=(?P<grpc>\S+)$")
REPO_ROOT = Path(__file__).resolve().parents[2]


class MockServerError(RuntimeError):
    """The server did not start (its stderr is in the message)."""


@dataclass(frozen=True)
class MockServer:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[str]
    stderr_path: Path
    grpc_target: str | None = None  # 127.0.0.1:PORT; None when started with --grpc-port -1

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_loaded(self, timeout: float = 60.0) -> None:
        """Return once the server answers (`/api/v1/healthz`): the ready line comes before the
        service is loaded (mock_server/startup.py), its start-up log lines (journal replay,
        banner) once this returns."""
        with urllib.request.urlopen(f"{self.url}/api/v1/healthz", timeout=timeout) as response:
            assert response.status == 200

    def requests(self, case: str | None = None) -> list[dict[str, Any]]:
        """The server's request record (`GET /_mock/requests`)."""
        query = f"?case={case}" if case else ""
        request = urllib.request.Request(
            f"{self.url}/_mock/requests{query}", headers={"X-API-Key": "tml-test"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
        return list(body["requests"])


@contextmanager
def running_mock_server(*args: str, start_timeout: float = 60.0) -> Iterator[MockServer]:
    with tempfile.NamedTemporaryFile(
        "w+", prefix="tinker-mock-", suffix=".log", delete=False
    ) as stderr_file:
        stderr_path = Path(stderr_file.name)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A fixed default gRPC port (50051) would collide between concurrent test servers.
    grpc_args = [] if "--grpc-port" in args else ["--grpc-port", "0"]
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "mock_server", "serve", "--port", "0", *grpc_args, *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    try:
        url, grpc_target = _await_ready(process, stderr_path, start_timeout)
        yield MockServer(url, process, stderr_path, grpc_target)
    finally:
        _stop(process)
        stderr_path.unlink(missing_ok=True)


def _await_ready(
    process: subprocess.Popen[str], stderr_path: Path, timeout: float
) -> tuple[str, str | None]:
    lines: list[str] = []

    def read_first_line() -> None:
        if process.stdout is not None:
            lines.append(process.stdout.readline())

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(timeout)
    line = lines[0].strip() if lines else ""
    match = READY.match(line)
    if match is None:
        _stop(process)
        raise MockServerError(
            f"tinker-mock did not become ready within {timeout:g} s (first stdout line "
            f"{line!r}); stderr:\n{stderr_path.read_text(errors='replace')[-5000:]}"
        )
    grpc_target = match.group("grpc")
    return match.group("http"), None if grpc_target == "-" else grpc_target


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait(5)
    if process.stdout is not None:
        process.stdout.close()
