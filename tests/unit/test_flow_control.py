"""Flow control (tinker_ref/flow.py): byte-bounded concurrency and the sampling backoff."""

from __future__ import annotations

import asyncio

import pytest

from tinker_ref.flow import BytesSemaphore, FlowControl, estimate_prompt_bytes
from tinker_ref.types import ImageChunk, ModelInput


async def _hold_all(semaphore: BytesSemaphore, sizes: list[int], order: list[int]) -> int:
    """Hold `sizes` concurrently (each for two loop turns); the peak bytes ever held."""
    peak = 0

    async def one(index: int, size: int) -> None:
        nonlocal peak
        async with semaphore.hold(size):
            order.append(index)
            peak = max(peak, semaphore.in_use)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    await asyncio.gather(*(one(i, size) for i, size in enumerate(sizes)))
    return peak


def test_holders_never_exceed_the_capacity_and_are_admitted_in_arrival_order() -> None:
    semaphore = BytesSemaphore(10)
    order: list[int] = []
    peak = asyncio.run(_hold_all(semaphore, [4, 4, 4, 9, 1, 1], order))
    assert peak <= 10
    assert order == [0, 1, 2, 3, 4, 5]  # the 9 waits its turn; the 1s behind it do not jump
    assert semaphore.in_use == 0 and semaphore.holders == 0
    assert semaphore.peak_holders == 2


def test_a_holder_larger_than_the_capacity_goes_alone() -> None:
    semaphore = BytesSemaphore(10)
    order: list[int] = []
    peak = asyncio.run(_hold_all(semaphore, [25, 3, 3], order))
    assert peak == 25 and semaphore.peak_holders == 2  # the 25 alone, then both 3s together
    assert order == [0, 1, 2]


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    async def scenario() -> tuple[int, int]:
        semaphore = BytesSemaphore(10)
        released = asyncio.Event()

        async def big() -> None:
            async with semaphore.hold(8):
                await released.wait()

        async def waiter() -> None:
            async with semaphore.hold(8):
                pass

        holder = asyncio.create_task(big())
        await asyncio.sleep(0)
        blocked = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        released.set()
        await holder
        async with semaphore.hold(10):  # the whole capacity is free again
            return semaphore.in_use, semaphore.holders

    assert asyncio.run(scenario()) == (10, 1)


def test_a_sampling_429_backs_off_one_second_then_throttles_to_twenty_times_the_bytes() -> None:
    now = [100.0]
    flow = FlowControl(clock=lambda: now[0])

    async def dispatched_bytes(size: int) -> int:
        async with flow.sample_dispatch(size):
            return flow.sample_bytes.in_use

    assert asyncio.run(dispatched_bytes(1000)) == 1000
    flow.sample_rate_limited(1000)
    assert flow._sample_backoff_until == 101.0
    now[0] = 105.0  # backed off; still within 10 s of the backoff's end
    assert asyncio.run(dispatched_bytes(1000)) == 20_000
    now[0] = 112.0
    assert asyncio.run(dispatched_bytes(1000)) == 1000


def test_a_large_prompt_backs_off_five_seconds() -> None:
    now = [0.0]
    flow = FlowControl(clock=lambda: now[0])
    flow.sample_rate_limited(200 * 1024)
    assert flow._sample_backoff_until == 5.0


def test_prompt_bytes_are_estimated_as_the_sdk_does() -> None:
    prompt = ModelInput.from_ints([1, 2, 3]).append(ImageChunk(b"\x89PNG" * 10, "png", 4))
    assert estimate_prompt_bytes(prompt) == 3 * 10 + 40
