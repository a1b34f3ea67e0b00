"""A `tinker-mock serve --data-dir DIR` subprocess that a test can SIGKILL and restart.

The restart listens on the same port, so a client that was talking to the first process
reconnects through its ordinary retries (connection refused / reset are retried). `kill_when`
watches the journal (`<data_dir>/journal/ops.jsonl`, read-only) and kills the moment a
predicate holds, e.g. "the forward of step 2 was accepted".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from mock_server.service.journal import read_journal
from tests.support.mock_process import MockServer, running_mock_server

Records = list[dict[str, Any]]
REPLAYED = re.compile(r"journal: replayed (?P<ops>\d+) ops, (?P<diverged>\d+) diverged")


class CrashableServer:
    def __init__(self, data_dir: Path, *extra_args: str) -> None:
        self.data_dir = data_dir
        self._extra = extra_args
        self._stack: ExitStack | None = None
        self._server: MockServer | None = None
        self.port = 0  # 0 until the first start picked one
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start (or restart, on the same port); returns the stderr once the server answers."""
        self._stack = ExitStack()
        self._server = self._stack.enter_context(
            running_mock_server(
                "--port",
                str(self.port),
                "--grpc-port",
                "-1",
                "--data-dir",
                str(self.data_dir),
                *self._extra,
            )
        )
        self.port = int(self._server.url.rsplit(":", 1)[1])
        self.starts += 1
        self._server.wait_loaded()  # the journal is replayed by then
        return self._server.stderr()

    def replayed(self, stderr: str) -> tuple[int, int]:
        """(ops replayed, ops whose replayed outcome diverged) from a start's log."""
        match = REPLAYED.search(stderr)
        assert match is not None, f"no journal replay line in the server log:\n{stderr[-3000:]}"
        return int(match.group("ops")), int(match.group("diverged"))

    def kill(self) -> Records:
        """SIGKILL (no shutdown code runs); returns the journal as the dead server left it."""
        assert self._server is not None and self._stack is not None
        self._server.process.kill()
        self._server.process.wait(10)
        self._stack.close()
        self._server = None
        return read_journal(self.data_dir)

    def kill_when(self, predicate: Callable[[Records], bool], timeout: float = 60.0) -> Records:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(read_journal(self.data_dir)):
                return self.kill()
            time.sleep(0.001)
        raise AssertionError(f"the journal never reached the kill point within {timeout:g} s")

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._server = None


def request_of(record: dict[str, Any]) -> dict[str, Any]:
    """The journaled request's fields (tagged JSON, service/journal.py) of a record."""
    fields: dict[str, Any] = record["request"]["f"]
    return fields


def training_ops(records: Records, op: str) -> Records:
    return [r for r in records if r["op"] == f"training.{op}"]


def accepted_twice(records: Records) -> list[tuple[str, int]]:
    """(model_id, seq_id) pairs accepted by more than one journaled record: ops applied twice."""
    seen: dict[tuple[str, int], int] = {}
    for record in records:
        if record["op"].startswith("training.") and record["outcome"].get("ok"):
            fields = request_of(record)
            if "seq_id" in fields and "model_id" in fields:
                key = (fields["model_id"], fields["seq_id"])
                seen[key] = seen.get(key, 0) + 1
    return sorted(key for key, count in seen.items() if count > 1)
