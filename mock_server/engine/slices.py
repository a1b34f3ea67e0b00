"""Engine work in slices: a long job pauses between two steps so other sessions take turns.

Torch-free on purpose: the engine pool (`mock_server/service/pool.py`) imports it, and the
CLI's start-up path must not import torch (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Unfinished(Generic[T]):
    """Engine work cut into slices, paused between two of them: `resume()` runs the next slice
    (in worker `affinity` only, when given: the engine process holding its state) and returns
    the result or another `Unfinished`; `drop()` lets it go unfinished. The engine pool
    (`service/pool.py`) queues the next slice behind the other sessions' turns, so a long sample
    holds a worker for one slice at a time, not for its whole length."""

    resume: Callable[[], T | Unfinished[T]]
    affinity: int | None = None
    drop: Callable[[], None] = field(default=_nothing)


def then(value: T | Unfinished[T], after: Callable[[T], U]) -> U | Unfinished[U]:
    """`after(result)` once `value` is finished (at once when it already is)."""
    if isinstance(value, Unfinished):
        unfinished = value
        return Unfinished(lambda: then(unfinished.resume(), after), value.affinity, value.drop)
    return after(value)


def never() -> bool:
    return False


def advance(
    steps: Generator[None, None, T], seconds: float, pause: Callable[[], bool] = never
) -> T | Unfinished[T]:
    """Run `steps` (at least one) until they are done, `seconds` have passed, or `pause()`
    says another session waits for this worker: the result, or where it paused."""
    deadline = time.perf_counter() + seconds
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        if pause() or time.perf_counter() >= deadline:
            return Unfinished(lambda: advance(steps, seconds, pause), None, steps.close)


class Preemption:
    """Per pool worker, whether another session waits for it (`EnginePool`'s `preempt`):
    the sliced work that worker runs pauses at its next step. In-process engines keep the
    flags here; engine processes carry them to the process on a socket of their own."""

    def __init__(self) -> None:
        self._flags: dict[int, bool] = {}
        self._local = threading.local()  # .worker: the pool worker this thread is

    def bind(self, worker: int) -> None:
        self._local.worker = worker

    def request(self, worker: int) -> None:
        self._flags[worker] = True

    def taken(self) -> bool:
        """Whether this thread's worker was asked to pause (the request is used up)."""
        worker = getattr(self._local, "worker", None)
        return worker is not None and self._flags.pop(worker, False)
