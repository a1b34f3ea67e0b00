"""Engine work in slices: a long job pauses between two steps so other sessions take turns.

Torch-free on purpose: the engine pool (`mock_server/service/pool.py`) imports it, and the
CLI's start-up path must not import torch (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

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


def advance(steps: Generator[None, None, T], seconds: float) -> T | Unfinished[T]:
    """Run `steps` for about `seconds` (at least one step): its result, or where it paused."""
    deadline = time.perf_counter() + seconds
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        if time.perf_counter() >= deadline:
            return Unfinished(lambda: advance(steps, seconds), None, steps.close)
