"""`EnginePool`: the threads engine work runs in, shared fairly between sessions.

Engine work (a forward/backward, an optimizer step, a sample, a checkpoint read) is blocking
torch or disk work; the event loop hands it here and awaits the answer. Three rules shape it:

* **As many workers as cores** (default: the CPUs this process may use; with engine processes,
  one per process). Torch runs one
  intra-op thread per call (the engine pins it, for determinism), so more workers than cores
  only make them contend for the cores and the GIL: the work gets slower as clients are added.
* **Sessions take turns.** Work waits in one queue per session, and a free worker takes the
  oldest job of the next session in rotation. A session with 200 queued samples therefore
  delays another session's next op by at most one job per active session, not by its backlog.
  Work of no session (there is little: none today but reads the front ends may add) queues as
  a session of its own.
* **Affinity.** With engine processes (`mock_server/engine/processes.py`) worker `i` feeds
  process `i` (`bind` tells the engine which thread is which), and a job may name the one worker
  that can run it (`affinity`: the process holding its model); jobs without one (samples, new
  models, disk reads) run on any. A free worker takes, in session rotation, the oldest job it
  may run, so one process's backlog never idles another process, and the turns stay fair.

**Slices.** A job may return `engine.Unfinished` (a long sample, paused between two tokens):
its next slice is queued as the session's oldest job, behind the other sessions' turns, and
its caller keeps waiting. Sliced work pauses when a job of another session is queued that it
keeps waiting (`preempt(worker)`: the engine makes that worker's sliced work stop at its next
token), or after `sample_slice_seconds` at the latest. So a session's long work delays another
session's next op by about one token per worker, not a whole sample, and costs nothing extra
while nobody else waits.

`cancel_queued(session)` fails a session's queued jobs (not those already running; a paused
job's state is dropped); the service calls it for sessions whose client is gone (`expiry.py`).
Results return to the loop with `call_soon_threadsafe`; a job whose awaiting task was cancelled
still runs (engine work is never interrupted half-way) and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from mock_server.engine.slices import Unfinished

T = TypeVar("T")
_NO_SESSION = ""  # the queue of work that belongs to no session


def available_cores() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(eq=False)
class _Job:
    work: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[Any]
    affinity: int | None  # the only worker that may run it; None: any
    session: str = _NO_SESSION
    drop: Callable[[], None] | None = None  # a paused job's: let its state go


class PoolClosed(RuntimeError):
    """Work was handed to a pool that is shutting down."""


class EnginePool:
    def __init__(
        self,
        workers: int | None = None,
        name: str = "tinker-engine",
        bind: Callable[[int], None] | None = None,
        preempt: Callable[[int], None] | None = None,
    ) -> None:
        """`bind(i)` runs first in worker thread `i` (engine processes: which one it feeds);
        `preempt(i)` asks the sliced work running on worker `i` to pause soon."""
        self.workers = workers or available_cores()
        self._bind = bind
        self._preempt = preempt
        self._current: list[_Job | None] = [None] * self.workers  # what each worker runs
        self._queues: dict[str, deque[_Job]] = {}  # session -> its queued jobs, oldest first
        self._turns: deque[str] = deque()  # sessions with queued jobs, next to be served first
        self._running = 0
        self._closed = False
        self._lock = threading.Lock()
        # One condition per worker, so a job wakes one worker that may run it (waking them all
        # cost a GIL hand-off per sleeper on every job); `_idle`: workers waiting, in order.
        self._wake = [threading.Condition(self._lock) for _ in range(self.workers)]
        self._idle: deque[int] = deque()
        self._threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    async def run(
        self, work: Callable[[], T], session: str | None = None, affinity: int | None = None
    ) -> T:
        """Run `work` in a worker when `session`'s turn comes (in worker `affinity` only, when
        given); its result or exception."""
        if affinity is not None and not 0 <= affinity < self.workers:
            raise ValueError(f"no worker {affinity} (workers 0..{self.workers - 1})")
        loop = asyncio.get_running_loop()
        job = _Job(work, loop, loop.create_future(), affinity, session or _NO_SESSION)
        with self._lock:
            if self._closed:
                raise PoolClosed("the engine pool is shut down")
            self._queue(job, first=False)
        result: T = await job.answer
        return result

    def queued(self, session: str | None = None) -> int:
        """Jobs waiting (not running) for `session`, or for every session when None."""
        with self._lock:
            if session is None:
                return sum(len(queue) for queue in self._queues.values())
            return len(self._queues.get(session, ()))

    @property
    def running(self) -> int:
        return self._running

    def cancel_queued(self, session: str, error: BaseException) -> int:
        """Fail every queued job of `session` with `error`; the number failed."""
        with self._lock:
            jobs = self._queues.pop(session, deque())
            if jobs:
                self._turns.remove(session)
        for job in jobs:
            if job.drop is not None:
                job.drop()
            job.loop.call_soon_threadsafe(_settle, job.answer, None, error)
        return len(jobs)

    def shutdown(self, wait: bool = True) -> None:
        """Fail queued jobs, let running ones finish (joined when `wait`)."""
        with self._lock:
            self._closed = True
            sessions = list(self._queues)
            for wake in self._wake:
                wake.notify()
        for session in sessions:
            self.cancel_queued(session, PoolClosed("the server is shutting down"))
        if wait:
            for thread in self._threads:
                thread.join()

    def _next(self, worker: int) -> _Job | None:
        """The next job in turn that `worker` may run (None once closed); call with the lock
        held."""
        while True:
            for position, session in enumerate(self._turns):
                queue = self._queues[session]
                job = next((j for j in queue if j.affinity in (None, worker)), None)
                if job is None:
                    continue  # this session waits for another worker; look at the next
                queue.remove(job)
                del self._turns[position]
                if queue:
                    self._turns.append(session)  # its next job waits for every other session
                else:
                    del self._queues[session]
                return job
            if self._closed:
                return None
            self._idle.append(worker)
            self._wake[worker].wait()
            if worker in self._idle:  # woken by shutdown, not by `_wake_one`
                self._idle.remove(worker)

    def _queue(self, job: _Job, first: bool) -> None:
        """Queue `job` (as its session's oldest when `first`); call with the lock held."""
        queue = self._queues.setdefault(job.session, deque())
        if first and queue:  # the rest of a job that just had its turn: to the back of the line
            self._turns.remove(job.session)
            self._turns.append(job.session)
        elif not queue:
            self._turns.append(job.session)
        if first:
            queue.appendleft(job)
        else:
            queue.append(job)
        if not self._wake_one(job.affinity) and not first:
            self._preempt_for(job)

    def _preempt_for(self, job: _Job) -> None:
        """No worker is free for `job`: ask one that may run it, and runs another session's
        work, to pause that work at its next step (only sliced work listens). Lock held."""
        if self._preempt is None:
            return
        for worker, running in enumerate(self._current):
            if (
                job.affinity in (None, worker)
                and running is not None
                and running.session != job.session
            ):
                self._preempt(worker)
                return

    def _wake_one(self, affinity: int | None) -> bool:
        """Wake an idle worker that may run a job of this affinity (any, when None): whether
        there was one. Otherwise the job waits for a worker to finish. Lock held."""
        if affinity is None:
            if self._idle:
                self._wake[self._idle.popleft()].notify()
                return True
        elif affinity in self._idle:
            self._idle.remove(affinity)
            self._wake[affinity].notify()
            return True
        return False

    def _serve(self, worker: int) -> None:
        if self._bind is not None:
            self._bind(worker)
        while True:
            with self._lock:
                job = self._next(worker)
                if job is None:
                    return
                self._running += 1
                self._current[worker] = job
            try:
                value, error = job.work(), None
            except BaseException as exc:  # handed to the awaiting task, never lost
                value, error = None, exc
            finally:
                with self._lock:
                    self._running -= 1
                    self._current[worker] = None
            if isinstance(value, Unfinished):
                with self._lock:
                    if not self._closed:
                        # The rest waits its session's next turn (it stays the oldest job).
                        self._queue(
                            replace(
                                job, work=value.resume, affinity=value.affinity, drop=value.drop
                            ),
                            first=True,
                        )
                        continue
                value.drop()
                value, error = None, PoolClosed("the server is shutting down")
            # A closed loop (RuntimeError) has nobody awaiting the answer any more.
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_settle, job.answer, value, error)


def _settle(answer: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if answer.done():  # the awaiting task was cancelled
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(value)
