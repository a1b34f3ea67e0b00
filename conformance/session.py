"""The adapter under test: a subprocess speaking PROTOCOL.md over its stdin/stdout.

`AdapterSession` starts the command, performs the version handshake, sends `run` messages and
hands back `result` messages as they arrive — in any order; they are matched by case name. The
adapter's stderr is kept (last 20 000 characters) for error messages. A line that is not a
protocol message is a protocol error: adapters must keep their SDK's prints off stdout.
"""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import threading
from collections.abc import Mapping
from typing import Any

import jsonschema

from conformance import PROTOCOL_VERSION, ROOT

HANDSHAKE_TIMEOUT_S = 120.0  # an SDK import (torch) on a loaded machine can take a while
_STDERR_KEEP = 20_000


class ProtocolError(RuntimeError):
    """The adapter broke the protocol (bad handshake, non-JSON line, unknown message)."""


def _message_validators() -> dict[str, jsonschema.Draft202012Validator]:
    """One validator per message the adapter sends, picked by its `type` (a oneOf over all
    messages would explain a bad result by the branch that fits it least)."""
    defs = json.loads((ROOT / "schema" / "protocol.v1.schema.json").read_text())["$defs"]
    return {
        kind: jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": defs})
        for kind, name in (("hello", "adapter_hello"), ("result", "result"))
    }


_VALIDATORS = _message_validators()


class AdapterSession:
    def __init__(self, command: str, env: Mapping[str, str] | None = None) -> None:
        self.command = command
        self._process = subprocess.Popen(
            shlex.split(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=dict(env) if env is not None else None,
        )
        self._messages: queue.Queue[dict[str, Any] | Exception | None] = queue.Queue()
        self._stderr: list[str] = []
        self._write_lock = threading.Lock()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.hello = self._handshake()

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                self._messages.put(
                    ProtocolError(f"adapter wrote a non-protocol line {line!r}: {exc}")
                )
                continue
            self._messages.put(message)
        self._messages.put(None)  # end of stream

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line)
            while sum(map(len, self._stderr)) > _STDERR_KEEP and len(self._stderr) > 1:
                self._stderr.pop(0)

    def stderr_tail(self) -> str:
        return "".join(self._stderr)[-_STDERR_KEEP:]

    def send(self, message: Mapping[str, Any]) -> None:
        assert self._process.stdin is not None
        with self._write_lock:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        """The next message; ProtocolError on garbage, end of stream or timeout."""
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise ProtocolError(f"no message from the adapter within {timeout:g}s") from None
        if message is None:
            self._messages.put(None)  # stays at end of stream for later callers
            raise ProtocolError(
                f"the adapter exited (code {self._process.poll()}); stderr:\n{self.stderr_tail()}"
            )
        if isinstance(message, Exception):
            raise message
        validator = _VALIDATORS.get(str(message.get("type")))
        if validator is None:
            raise ProtocolError(f"unknown message type from the adapter: {message}")
        # A hello's protocol version is left to _handshake, which names both versions.
        error = jsonschema.exceptions.best_match(validator.iter_errors(message))
        if error is not None and list(error.path) != ["protocol"]:
            raise ProtocolError(f"invalid message {message}: {error.message}")
        return message

    def _handshake(self) -> dict[str, Any]:
        self.send({"type": "hello", "protocol": PROTOCOL_VERSION, "runner": "tinker-conformance"})
        hello = self.receive(HANDSHAKE_TIMEOUT_S)
        if hello.get("type") != "hello":
            raise ProtocolError(f"expected the adapter's hello first, got {hello}")
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version mismatch: runner speaks {PROTOCOL_VERSION}, "
                f"adapter answered {hello.get('protocol')!r} ({hello.get('error', 'no detail')})"
            )
        if not isinstance(hello.get("adapter"), dict) or "name" not in hello["adapter"]:
            raise ProtocolError(f"the adapter's hello lacks adapter.name: {hello}")
        return hello

    @property
    def max_parallel(self) -> int:
        value = self.hello.get("max_parallel", 1)
        return value if isinstance(value, int) and value >= 1 else 1

    def close(self, timeout: float = 30.0) -> None:
        try:
            self.send({"type": "shutdown"})
            assert self._process.stdin is not None
            self._process.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # already gone
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout)
