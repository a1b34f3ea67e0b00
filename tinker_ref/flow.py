"""Flow control: how much one client puts on the wire at once, as the official SDK 0.38 bounds it.

- `BytesSemaphore`: admits holders while their estimated bytes fit a capacity (one holder larger
  than the capacity is admitted alone), first come first served. The SDK's admits a newcomer
  whenever the budget is not yet negative, so its peak can exceed the capacity by one payload;
  this one never does.
- `FlowControl`, one per ServiceClient, sized by the service's `client/config`:
  forward/backward chunk POSTs hold their estimated bytes (`fwdbwd_dispatch_bytes_semaphore_size`,
  50 MB) while they are being sent; sample submissions hold one of 400 dispatch slots and their
  prompt's estimated bytes (`sample_dispatch_bytes_semaphore_size`, 10 MiB). A 429 answer to a
  sample makes all sampling of the client back off (1 s; 5 s for prompts over 128 KiB), then
  stay throttled for 10 s: 10 dispatch slots, and every prompt counts 20 times its size.
  Sampling retries a 429 for as long as the service sends them, as the SDK does.

Only submissions are bounded here; results are bounded by the HTTP transport's response-bytes
semaphore (`inflight_response_bytes_semaphore_size`), which it holds for a large result that
the server announced with `complete_metadata` until the result is read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from tinker_ref.transport.base import ClientConfig
from tinker_ref.types import EncodedTextChunk, ImageChunk, ModelInput

log = logging.getLogger(__name__)

SAMPLE_DISPATCH_SLOTS = 400  # SDK: InternalClientHolder._sample_dispatch_semaphore
THROTTLED_SAMPLE_DISPATCH_SLOTS = 10  # SDK: _sample_dispatch_throttled_semaphore
THROTTLED_BYTES_FACTOR = 20  # SDK: _sample_dispatch_bytes_rate_limit
THROTTLE_SECONDS = 10.0  # how long after a backoff sampling stays throttled
LARGE_PROMPT_BYTES = 128 * 1024  # a 429 on a larger prompt backs off 5 s instead of 1 s
_BYTES_PER_PROMPT_TOKEN = 10  # the SDK's estimate_bytes_count_in_chunk for text


def estimate_prompt_bytes(prompt: ModelInput) -> int:
    """The SDK's estimate of a sampling prompt's size: 10 bytes per token, an image's bytes."""
    total = 0
    for chunk in prompt.chunks:
        if isinstance(chunk, ImageChunk):
            total += len(chunk.data)
        elif isinstance(chunk, EncodedTextChunk):
            total += chunk.length * _BYTES_PER_PROMPT_TOKEN
    return total


class BytesSemaphore:
    """At most `capacity` estimated bytes held at once (an oversized holder goes alone); waiters
    are admitted in arrival order. Event-loop only (no thread safety needed or given)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.holders = 0
        self.peak_holders = 0  # the most holders there ever were at once (for tests and stats)
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, count: int) -> bool:
        return self.holders == 0 or self.in_use + count <= self.capacity

    def _take(self, count: int) -> None:
        self.in_use += count
        self.holders += 1
        self.peak_holders = max(self.peak_holders, self.holders)

    def _release(self, count: int) -> None:
        self.in_use -= count
        self.holders -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            count, granted = self._waiters.popleft()
            if not granted.done():
                self._take(count)
                granted.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self, count: int) -> AsyncIterator[None]:
        if not self._waiters and self._fits(count):
            self._take(count)
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((count, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release(count)  # admitted just as the wait was cancelled
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove((count, granted))
                    self._wake()  # a smaller waiter behind this one may fit now
                raise
        try:
            yield
        finally:
            self._release(count)


class FlowControl:
    """The client-wide bounds above. Built before the service is contacted; `configure` adopts
    the service's sizes (before any request is bounded by them)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        defaults = ClientConfig()
        self.fwdbwd = BytesSemaphore(defaults.fwdbwd_dispatch_bytes_semaphore_size)
        self.sample_bytes = BytesSemaphore(defaults.sample_dispatch_bytes_semaphore_size)
        self._sample_slots = asyncio.Semaphore(SAMPLE_DISPATCH_SLOTS)
        self._throttled_slots = asyncio.Semaphore(THROTTLED_SAMPLE_DISPATCH_SLOTS)
        self._clock = clock
        self._sample_backoff_until: float | None = None
        self.sample_backoffs = 0  # 429s answered to samples so far

    def configure(self, config: ClientConfig) -> None:
        self.fwdbwd.capacity = config.fwdbwd_dispatch_bytes_semaphore_size
        self.sample_bytes.capacity = config.sample_dispatch_bytes_semaphore_size

    def _throttled(self) -> bool:
        until = self._sample_backoff_until
        return until is not None and self._clock() - until < THROTTLE_SECONDS

    @contextlib.asynccontextmanager
    async def sample_dispatch(self, estimated_bytes: int) -> AsyncIterator[None]:
        """Held while one sample request is submitted (its retries after 429s included)."""
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._sample_slots)
            if self._throttled():
                await stack.enter_async_context(self._throttled_slots)
                estimated_bytes *= THROTTLED_BYTES_FACTOR
            await stack.enter_async_context(self.sample_bytes.hold(estimated_bytes))
            yield

    def sample_rate_limited(self, estimated_bytes: int) -> None:
        """The service answered a sample with 429: all sampling of this client backs off."""
        seconds = 1.0 if estimated_bytes <= LARGE_PROMPT_BYTES else 5.0
        self._sample_backoff_until = self._clock() + seconds
        self.sample_backoffs += 1
        log.debug("sampling is rate limited (429); backing off %.0f s", seconds)

    async def sample_backoff(self) -> None:
        """Wait out the current sampling backoff, if any."""
        while self._sample_backoff_until is not None:
            remaining = self._sample_backoff_until - self._clock()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)
