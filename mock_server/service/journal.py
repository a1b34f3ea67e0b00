"""Crash safety: an fsync'd append-only journal of accepted ops, replayed on start.

Design. The engine is deterministic (same seed + same ops in the same per-model order => the same
bits), so the server's whole state — sessions, models, adapter weights, optimizer moments,
seq_id positions, dedupe tables, samplers, uploaded losses and every future's outcome — is a
function of the ops it accepted. With `ServerConfig.journal` (the CLI turns it on with
`--data-dir`) every operation submitted to the service (`TinkerService.submit`, which every
state-changing call goes through; `operation.py`) is appended to `<data_dir>/journal/ops.jsonl`
as a value — its name and its request — and fsync'd *before its answer leaves the server*; on
start the journal is read back and every recorded op accepted again, in order. So:

* an op the client heard about (it holds a request_id) is on disk; after a SIGKILL it runs again
  and its future gets the same request_id (ids are minted from counters advanced by these same
  calls), so polls of that id — and POST retries, deduplicated by `(model_id, seq_id)` — find it;
* an op the client did not hear about may be lost; its POST is retried and accepted afresh;
* rejected calls are journaled too: a rejection consumes a seq_id, and replaying it consumes it
  again (the same validation runs, so it is rejected again).

Replay waits for the engine to go idle after each record, so an op runs after the ones that
were accepted before it (a load after the save it reads, a sample after the ephemeral sampler
save it samples). Each record keeps the call's outcome (the id it returned, or the error class);
replay compares, and counts divergences (`Recovery.mismatches`, logged as errors).

Records are `<sha256[:16]> <json>\\n`, the json `{"op": name, "principal", "request",
"outcome"}`; an op is rebuilt as `operation_named(name)(request)`, so replay imports nothing by
name. Requests are tagged JSON (dataclasses of the service's request modules and of modules
that define operations, tuples, numpy arrays as raw bytes, non-finite floats), never pickle. A
torn last line (killed mid-append) is dropped; a damaged line before it stops the start with
`JournalError`. Not journaled: reads, heartbeats, `cancel_future` (a replayed cancelled sample
runs), gap-timeout abandonment (timer-driven), session expiry (idle time), a checkpoint's TTL
running out (rest_queries.py deletes it when next looked at). Checkpoint files are
rewritten by the replayed saves (bit-identical). There are no snapshots: replay re-executes the
whole history, O(ops) at start.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import importlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mock_server.service.auth import Principal
from mock_server.service.context import ServiceContext
from mock_server.service.errors import Overloaded, ServiceError
from mock_server.service.operation import Operation, operation_modules, operation_named
from mock_server.service.results import SessionInfo, SubmittedFuture

log = logging.getLogger(__name__)
A = TypeVar("A")

# Classes a journal may name: request types of the service and the values inside them. Modules
# that define operations count too (`operation_modules`): an op's request lives beside it.
_TRUSTED_MODULES = ("mock_server.service.", "tinker_ref.types.")
JOURNAL_FILE = Path("journal") / "ops.jsonl"


class JournalError(RuntimeError):
    """The journal cannot be written or read back (raised loudly; never swallowed)."""


@dataclass(frozen=True)
class Recovery:
    records: int  # records replayed
    mismatches: int  # replayed calls whose outcome differed from the journaled one
    torn_tail: bool  # a partial last record (killed mid-append) was dropped


# ----- tagged JSON: what a request dataclass holds, losslessly (fingerprints match) -----


def encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, tuple):
        return {"$t": [encode(item) for item in value]}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise JournalError(f"cannot journal a dict with non-text keys: {list(value)[:3]}")
        return {"$d": {key: encode(item) for key, item in value.items()}}
    if isinstance(value, (bytes, bytearray)):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, np.ndarray):
        raw = np.ascontiguousarray(value).tobytes()
        return {"$a": [value.dtype.str, list(value.shape), base64.b64encode(raw).decode()]}
    if isinstance(value, np.generic):
        return {"$n": [value.dtype.str, base64.b64encode(value.tobytes()).decode()]}
    if isinstance(value, enum.Enum):
        return {"$e": _class_name(type(value)), "v": encode(value.value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$c": _class_name(type(value)), "f": fields}
    raise JournalError(f"cannot journal a {type(value).__name__}")


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "$f" in value:
        return float(value["$f"])
    if "$t" in value:
        return tuple(decode(item) for item in value["$t"])
    if "$d" in value:
        return {key: decode(item) for key, item in value["$d"].items()}
    if "$b" in value:
        return base64.b64decode(value["$b"])
    if "$a" in value:
        dtype, shape, data = value["$a"]
        return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape)
    if "$n" in value:
        dtype, data = value["$n"]
        return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype))[0]
    if "$e" in value:
        enum_class = _trusted_class(value["$e"])
        return enum_class(decode(value["v"]))
    if "$c" in value:
        cls = _trusted_class(value["$c"])
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise JournalError(f"{value['$c']} is not a dataclass")
        # Rebuilt field by field, bypassing __init__: the value was validated when it was
        # accepted, and some types (Datum, TensorData) take a different constructor signature.
        instance = object.__new__(cls)
        for name, item in value["f"].items():
            object.__setattr__(instance, name, decode(item))
        return instance
    raise JournalError(f"unknown journal value tag in {sorted(value)[:3]}")


def _trusted(module_name: str) -> bool:
    return module_name.startswith(_TRUSTED_MODULES) or module_name in operation_modules()


def _class_name(cls: type) -> str:
    name = f"{cls.__module__}:{cls.__qualname__}"
    if not _trusted(cls.__module__):
        raise JournalError(f"cannot journal a {name} (not a request type)")
    return name


def _trusted_class(name: str) -> Any:
    module_name, _, qualname = name.partition(":")
    if not _trusted(module_name):
        raise JournalError(f"journal names an untrusted class {name!r}")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _outcome_id(result: object) -> str | None:
    """The id a call answered with: what a client holds and a retry must get back."""
    if isinstance(result, SubmittedFuture):
        return result.request_id
    if isinstance(result, SessionInfo):
        return result.session_id
    return result if isinstance(result, str) else None


# ----- the journal -----


class Journal:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / JOURNAL_FILE
        self._checkpoints_root = data_dir / "checkpoints"
        self._fd: int | None = None
        self._answered: set[str] = set()  # ids already journaled: their retries are not
        self._records = 0

    # ----- writing -----

    async def record(self, ctx: ServiceContext, principal: Principal, op: Operation[Any, A]) -> A:
        """Accept `op` and append it with its outcome: accepted and rejected ops alike (a
        rejection may consume a seq_id), not one refused for load (nothing happened) nor a retry
        answered with an id already journaled (replaying the first call answers it)."""
        # Encoded first: a value the journal cannot hold is refused before it is accepted.
        request = encode(op.request)
        try:
            answer = await op.accept(ctx, principal)
        except Overloaded:
            raise  # refused before anything was accepted or consumed: nothing to replay
        except ServiceError as error:
            self._append(op, principal, request, {"error": type(error).__name__})
            raise
        answered = _outcome_id(answer)
        if answered is None or answered not in self._answered:
            self._append(op, principal, request, {"ok": answered})
        return answer

    def _append(
        self, op: Operation[Any, Any], principal: Principal, request: Any, outcome: dict[str, Any]
    ) -> None:
        record = {
            "op": op.name,
            "principal": principal.identity,
            "request": request,
            "outcome": outcome,
        }
        text = json.dumps(record, separators=(",", ":"), allow_nan=False)
        line = f"{_checksum(text)} {text}\n".encode()
        fd = self._open()
        try:
            os.write(fd, line)
            # Durable before the answer goes out: a client that holds a request_id can count on
            # the op surviving a crash.
            os.fsync(fd)
        except OSError as exc:
            raise JournalError(f"cannot append to {self.path}: {exc}") from exc
        if outcome.get("ok") is not None:
            self._answered.add(outcome["ok"])
        self._records += 1

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            _fsync_dir(self.path.parent)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ----- reading back -----

    async def replay(self, ctx: ServiceContext) -> Recovery:
        """Accept every recorded op again, in order (not appending it again), waiting for the
        engine to go idle after each."""
        self._remove_staging_leftovers()
        lines, torn = self._read_lines()
        mismatches = 0
        ctx.checkpoints.begin_replay()
        try:
            for index, record in enumerate(lines):
                op = self._operation(index, record)
                try:
                    answer = await op.accept(ctx, Principal(record["principal"]))
                    outcome: dict[str, Any] = {"ok": _outcome_id(answer)}
                except ServiceError as error:
                    outcome = {"error": type(error).__name__}
                await ctx.sequencer.drain()
                await ctx.drain()
                if outcome != record["outcome"]:
                    mismatches += 1
                    log.error(
                        "journal replay diverged at record %d (%s): journaled %s, replayed %s",
                        index,
                        record["op"],
                        record["outcome"],
                        outcome,
                    )
                if outcome.get("ok") is not None:
                    self._answered.add(outcome["ok"])
        finally:
            ctx.checkpoints.end_replay()
        self._records = len(lines)
        log.info("journal: replayed %d ops, %d diverged", len(lines), mismatches)
        return Recovery(len(lines), mismatches, torn)

    def _operation(self, index: int, record: dict[str, Any]) -> Operation[Any, Any]:
        """The op a record holds, rebuilt from its registered name and its request."""
        cls = operation_named(record.get("op", ""))
        if cls is None or "request" not in record:
            raise JournalError(
                f"{self.path}: record {index}: unknown op {record.get('op')!r} (a journal of "
                "another server version? move it away to start empty)"
            )
        return cls(decode(record["request"]))

    def _read_lines(self) -> tuple[list[dict[str, Any]], bool]:
        if not self.path.exists():
            return [], False
        data = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        offset = 0
        torn = False
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:  # killed mid-append: the op was never answered, drop it
                torn = True
                break
            record = _parse(data[offset:end])
            if record is None:
                if data.find(b"\n", end + 1) < 0 and not data[end + 1 :].strip():
                    torn = True  # the damaged line is the last one: a torn write
                    break
                raise JournalError(
                    f"{self.path}: record {len(records)} (byte {offset}) is damaged and is not "
                    "the last one; move the journal away to start empty"
                )
            records.append(record)
            offset = end + 1
        if torn:
            with open(self.path, "r+b") as file:  # later appends must start on a clean line
                file.truncate(offset)
                os.fsync(file.fileno())
        return records, torn

    def _remove_staging_leftovers(self) -> None:
        """A save killed mid-write leaves a `.staging-*` dir (engine/checkpoint.py); drop it."""
        if self._checkpoints_root.exists():
            for staging in self._checkpoints_root.rglob(".staging-*"):
                shutil.rmtree(staging, ignore_errors=True)


def read_journal(data_dir: Path) -> list[dict[str, Any]]:
    """The intact records of `data_dir`'s journal, oldest first, without touching the file
    (tests and tools: which ops were accepted, once each)."""
    path = data_dir / JOURNAL_FILE
    records = []
    for line in path.read_bytes().split(b"\n") if path.exists() else []:
        record = _parse(line) if line else None
        if record is not None:
            records.append(record)
    return records


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse(line: bytes) -> dict[str, Any] | None:
    checksum, _, text = line.decode("utf-8", errors="replace").partition(" ")
    if _checksum(text) != checksum:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
