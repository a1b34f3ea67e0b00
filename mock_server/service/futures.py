"""The future store: every asynchronous operation's result, from creation until it expires.

A future is created `pending` when its POST is accepted, becomes `done` (a typed result object)
or `failed` (a message and a category: `user` for bad input, `server` for the mock's own
faults) exactly once, and is read back through `wait`, which long-polls: it returns as soon as
the outcome exists, or after the timeout with the future still pending (the front end then
answers `try_again`). Lifetime: a finished result is kept until its first retrieval plus a
grace period (the SDK may re-poll, e.g. after `complete_metadata`), and an unretrieved one
until `result_ttl`; an expired id raises `Gone` (HTTP 410), an id never issued `NotFound`.

Runs on the event loop thread only; engine threads hand results back through the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mock_server.service.errors import Gone, NotFound

FailureCategory = Literal["user", "server", "unknown"]
_MAX_TOMBSTONES = 100_000


class FutureState(enum.Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Failure:
    message: str
    category: FailureCategory


@dataclass(eq=False)
class FutureRecord:
    request_id: str
    kind: str  # operation name, e.g. "forward_backward", "sample", "create_model"
    owner: str | None  # principal that created it (checked only in api-keys mode)
    created_at: float
    state: FutureState = FutureState.PENDING
    result: object | None = None  # the typed result once DONE
    failure: Failure | None = None  # set once FAILED
    finished_at: float | None = None
    retrieved_at: float | None = None  # first time its outcome was handed out
    metadata_sent: bool = False  # `complete_metadata` goes out at most once per future
    cancel_requested: bool = False  # set by cancel_future; honoured before work starts
    session_id: str | None = None  # the session whose op it is: polling it keeps that alive
    # Encoded payloads per wire format, filled by a front end so re-polls do not re-encode.
    wire_cache: dict[str, bytes] = field(default_factory=dict)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.state is not FutureState.PENDING


class FutureStore:
    def __init__(
        self,
        result_grace_seconds: float,
        result_ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grace = result_grace_seconds
        self._ttl = result_ttl_seconds
        self._clock = clock
        self._records: dict[str, FutureRecord] = {}
        self._tombstones: OrderedDict[str, str] = OrderedDict()  # expired id -> why
        self._closing = False
        self.pending_count = 0  # futures without an outcome (admission control reads it)
        self._last_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._records)

    def create(
        self, request_id: str, kind: str, owner: str | None, session_id: str | None = None
    ) -> FutureRecord:
        self.sweep()
        record = FutureRecord(
            request_id, kind, owner, created_at=self._clock(), session_id=session_id
        )
        self.pending_count += 1
        if self._closing:
            record.event.set()
        self._records[request_id] = record
        return record

    def complete(self, request_id: str, result: object) -> None:
        record = self._pending(request_id)
        if record is not None:
            record.state, record.result = FutureState.DONE, result
            self._finish(record)

    def fail(self, request_id: str, message: str, category: FailureCategory) -> None:
        record = self._pending(request_id)
        if record is not None:
            record.state, record.failure = FutureState.FAILED, Failure(message, category)
            self._finish(record)

    def _pending(self, request_id: str) -> FutureRecord | None:
        # A future finishes once; a late second outcome (e.g. after shutdown failed it) is
        # dropped rather than overwriting what a client may already have read.
        record = self._records.get(request_id)
        return record if record is not None and not record.finished else None

    def _finish(self, record: FutureRecord) -> None:
        self.pending_count -= 1
        record.finished_at = self._clock()
        record.event.set()

    def get(self, request_id: str) -> FutureRecord:
        self.sweep()
        record = self._records.get(request_id)
        if record is not None:
            return record
        why = self._tombstones.get(request_id)
        if why is not None:
            raise Gone(f"future {request_id!r} {why}", "request_id")
        raise NotFound(f"no future with request_id {request_id!r}", "request_id")

    async def wait(self, request_id: str, timeout: float) -> FutureRecord:
        """The record once finished, or still pending after `timeout` seconds (long-poll)."""
        record = self.get(request_id)
        if not record.finished and not self._closing:
            with contextlib.suppress(TimeoutError):  # still pending: the caller says try_again
                await asyncio.wait_for(record.event.wait(), timeout)
        return record

    def mark_retrieved(self, record: FutureRecord) -> None:
        if record.finished and record.retrieved_at is None:
            record.retrieved_at = self._clock()

    def request_cancel(self, request_id: str) -> bool:
        """Flag a pending future for cancellation; True when it was still pending."""
        record = self._records.get(request_id)
        if record is None or record.finished:
            return False
        record.cancel_requested = True
        return True

    def pending(self) -> list[FutureRecord]:
        return [r for r in self._records.values() if not r.finished]

    def close(self) -> None:
        """Release every long-poll now (they answer `try_again`); used at shutdown."""
        self._closing = True
        for record in self._records.values():
            record.event.set()

    def sweep(self, force: bool = False) -> None:
        """Drop expired records (at most once a second unless forced: it scans them all)."""
        now = self._clock()
        if not force and now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        expired: list[tuple[str, str]] = []
        for request_id, record in self._records.items():
            if record.retrieved_at is not None and now - record.retrieved_at > self._grace:
                expired.append((request_id, "was retrieved and has expired"))
            elif (
                record.retrieved_at is None
                and record.finished_at is not None
                and now - record.finished_at > self._ttl
            ):
                expired.append((request_id, "expired before it was retrieved"))
        for request_id, why in expired:
            del self._records[request_id]
            self._tombstones[request_id] = why
        while len(self._tombstones) > _MAX_TOMBSTONES:
            self._tombstones.popitem(last=False)
