"""Per-model `seq_id` ordering: buffer early arrivals, run strictly in order, dedupe retries.

The official SDK numbers every training op of a model (`seq_id`, 1, 2, …; the model's creation
is 0) and may deliver them out of order: chunks of one call are POSTed concurrently with the
first chunk *last* (spec CL-12, SEQ-3). A `Lane` per model therefore

* deduplicates `(model_id, seq_id)` **before** queueing: a retried POST (new idempotency key,
  same seq_id and body) gets the original request_id back and never runs twice; the same seq_id
  with a different body is a `Conflict`;
* buffers arrivals until every earlier seq_id has been consumed, then runs them one at a time
  (ops of one model never overlap; different lanes run concurrently);
* lets a rejected op (invalid input, answered 4xx) and a failed op consume their seq_id, since
  the SDK moves on to the next id either way;
* fails buffered ops with a clear `Gone` error when a gap is not filled within
  `gap_timeout_seconds` (never a silent hang); a late arrival of an abandoned seq_id is `Gone`.

What an op does is opaque here: a lane queues `Queued` values (`operation.Job`: an accepted op
and its future), whose `run` executes the op and records its outcome and whose `fail` records a
failure without running it. Runs on the event loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from mock_server.service.errors import Conflict, Gone, ServiceError

log = logging.getLogger(__name__)


class Queued(Protocol):
    """An accepted op, as a lane queues it."""

    @property
    def request_id(self) -> str: ...

    async def run(self) -> None:
        """Execute the op and record its outcome (in its future)."""

    def fail(self, error: ServiceError) -> None:
        """Record `error` as the op's outcome without running it."""


@dataclass(frozen=True)
class _Seen:
    fingerprint: str  # digest of the request body's meaning; "" for abandoned ids
    request_id: str | None  # None when the op was rejected or abandoned
    rejection: ServiceError | None = None  # why it was rejected (replayed to retries)
    abandoned: bool = False  # given up after a gap timeout


@dataclass(eq=False)
class Lane:
    key: str  # the model id
    next_seq: int  # the seq_id that runs next
    buffered: dict[int, Queued | None] = field(default_factory=dict)  # None = rejected slot
    seen: dict[int, _Seen] = field(default_factory=dict)
    running: bool = False
    closed: bool = False
    timer: asyncio.TimerHandle | None = None


class Sequencer:
    def __init__(self, gap_timeout_seconds: float, dedupe_window: int) -> None:
        self._gap_timeout = gap_timeout_seconds
        self._window = dedupe_window
        self._lanes: dict[str, Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- lanes -----

    def open_lane(self, key: str, first_seq: int = 0) -> None:
        if key in self._lanes:
            raise Conflict(f"model {key!r} already exists", "model_id")
        self._lanes[key] = Lane(key, first_seq)

    def has_lane(self, key: str) -> bool:
        return key in self._lanes

    def next_seq(self, key: str) -> int:
        return self._lanes[key].next_seq

    def buffered_seq_ids(self, key: str) -> list[int]:
        return sorted(self._lanes[key].buffered)

    # ----- admission -----

    def check(self, key: str, seq_id: int, fingerprint: str) -> str | None:
        """Dedupe before queueing: the original request_id when this is a retry, None when
        `seq_id` is new. Replays the original rejection of a rejected retry; raises Conflict
        for a reused seq_id with a different body, Gone for an abandoned one."""
        lane = self._lanes[key]
        seen = lane.seen.get(seq_id)
        if seen is not None:
            if seen.abandoned:
                raise Gone(
                    f"seq_id {seq_id} of model {key!r} was abandoned after a "
                    f"{self._gap_timeout:g} s gap timeout; the ops queued behind it were failed",
                    "seq_id",
                )
            if seen.fingerprint != fingerprint:
                raise Conflict(
                    f"seq_id {seq_id} of model {key!r} was already used by a different request "
                    f"(body fingerprint {seen.fingerprint[:12]}, this one {fingerprint[:12]})",
                    "seq_id",
                )
            if seen.rejection is not None:
                raise seen.rejection
            return seen.request_id
        if seq_id < lane.next_seq:
            raise Conflict(
                f"seq_id {seq_id} of model {key!r} was consumed long ago (next expected: "
                f"{lane.next_seq}); it is outside the retry window",
                "seq_id",
            )
        return None

    def reject(self, key: str, seq_id: int, fingerprint: str, error: ServiceError) -> None:
        """Consume `seq_id` for an op that will not run; retries get `error` again."""
        lane = self._lanes[key]
        self._remember(lane, seq_id, _Seen(fingerprint, None, error))
        lane.buffered[seq_id] = None
        self._schedule(lane)

    def enqueue(self, key: str, seq_id: int, fingerprint: str, op: Queued) -> None:
        """Queue a new op (after `check` returned None); it runs once all earlier ids are done."""
        lane = self._lanes[key]
        self._remember(lane, seq_id, _Seen(fingerprint, op.request_id))
        lane.buffered[seq_id] = op
        self._schedule(lane)

    def _remember(self, lane: Lane, seq_id: int, seen: _Seen) -> None:
        lane.seen[seq_id] = seen
        self._forget_old(lane)

    def _forget_old(self, lane: Lane) -> None:
        if len(lane.seen) > self._window + self._window // 4:
            # Forget the oldest consumed ids (amortised: only past 1.25x the window); ids still
            # buffered keep their entry so a retry of one is always recognised.
            consumed = sorted(s for s in lane.seen if s < lane.next_seq)
            for old in consumed[: len(lane.seen) - self._window]:
                del lane.seen[old]

    # ----- execution -----

    def _schedule(self, lane: Lane) -> None:
        if lane.running or lane.closed:
            return
        if lane.next_seq in lane.buffered:
            self._cancel_timer(lane)
            lane.running = True
            task = asyncio.get_running_loop().create_task(self._pump(lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif lane.buffered and lane.timer is None:
            lane.timer = asyncio.get_running_loop().call_later(
                self._gap_timeout, self._on_gap_timeout, lane
            )

    async def _pump(self, lane: Lane) -> None:
        try:
            while not lane.closed and lane.next_seq in lane.buffered:
                op = lane.buffered.pop(lane.next_seq)
                lane.next_seq += 1
                if op is None:
                    continue
                try:
                    await op.run()
                except Exception as exc:  # an op must record its own outcome; this is a bug
                    log.exception("op %s of %s raised", op.request_id, lane.key)
                    op.fail(ServiceError(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            lane.running = False
        self._forget_old(lane)
        self._schedule(lane)

    def _cancel_timer(self, lane: Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None

    def _on_gap_timeout(self, lane: Lane) -> None:
        lane.timer = None
        if lane.running or lane.closed or not lane.buffered or lane.next_seq in lane.buffered:
            return
        last = max(lane.buffered)
        missing = [s for s in range(lane.next_seq, last) if s not in lane.buffered]
        waiting = sorted(s for s, op in lane.buffered.items() if op is not None)
        error = Gone(
            f"seq_id {_ranges(missing)} of model {lane.key!r} never arrived within "
            f"{self._gap_timeout:g} s; the ops waiting behind it (seq_id {_ranges(waiting)}) "
            "were not run",
            "seq_id",
        )
        log.warning("%s", error.message)
        for seq_id in missing:
            lane.seen[seq_id] = _Seen("", None, abandoned=True)
        for _, op in sorted(lane.buffered.items()):
            if op is not None:
                op.fail(error)
        lane.buffered.clear()
        lane.next_seq = last + 1

    def close_lane(self, key: str, error: ServiceError) -> None:
        """Drop a model's lane (its session expired): queued ops fail with `error`."""
        lane = self._lanes.pop(key, None)
        if lane is not None:
            self._stop(lane, error)

    def _stop(self, lane: Lane, error: ServiceError) -> None:
        lane.closed = True
        self._cancel_timer(lane)
        for _, op in sorted(lane.buffered.items()):
            if op is not None:
                op.fail(error)
        lane.buffered.clear()

    async def drain(self) -> None:
        """Wait until no lane is running (ops blocked behind a missing seq_id stay queued)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop every lane: running ops are cancelled, buffered ones fail (server shutdown)."""
        error = ServiceError("the server is shutting down; the op was not run")
        for lane in self._lanes.values():
            self._stop(lane, error)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ranges(ids: list[int]) -> str:
    """`[3, 4, 5, 9]` -> "3-5, 9"."""
    parts: list[str] = []
    start = previous = None
    for value in ids:
        if previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(f"{start}-{previous}" if start != previous else f"{start}")
        start = previous = value
    if start is not None:
        parts.append(f"{start}-{previous}" if start != previous else f"{start}")
    return ", ".join(parts)
