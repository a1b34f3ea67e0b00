"""Futures and the event loop the client runs on.

Each `ServiceClient` owns one `EventLoopThread`: an asyncio loop on a daemon thread where all of
its network I/O happens. Public methods submit coroutines to it and hand back an `APIFuture`,
which can be waited on from plain code (`.result(timeout=...)`) or awaited from any event loop
(`await future`). There is no global loop: two ServiceClients never share state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Generator
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


class APIFuture(Generic[T]):
    """The eventual result of one client call.

    Wait for it from plain code (`.result(timeout=...)`) or await it from any event loop
    (`await future`). If the call failed, both raise its error: an APIError subclass
    (RequestFailedError, APIStatusError, APIConnectionError, SessionGoneError), or
    ClientPoisonedError, CustomLossError, ValueError where the call says so.

    Args:
        future: The concurrent future the client's event loop completes.
    """

    def __init__(self, future: concurrent.futures.Future[T]) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> T:
        """Block until the result is there, and return it.

        Args:
            timeout: Seconds to wait at most; None: wait as long as it takes.

        Returns:
            T: The call's result.

        Raises:
            TimeoutError: No result within `timeout` seconds (the call goes on).
        """
        return self._future.result(timeout)

    async def result_async(self) -> T:
        """Wait for the result without blocking the running event loop (what `await future` does).

        Returns:
            T: The call's result; the call's error is raised instead if it failed.
        """
        return await asyncio.wrap_future(self._future)

    def __await__(self) -> Generator[Any, None, T]:
        return self.result_async().__await__()

    def done(self) -> bool:
        """Say whether the call has finished (with a result or an error).

        Returns:
            bool: True once finished.
        """
        return self._future.done()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Block until the call finishes and return its error, if any.

        Args:
            timeout: Seconds to wait at most; None: wait as long as it takes.

        Returns:
            BaseException | None: The call's error, or None if it succeeded.

        Raises:
            TimeoutError: The call did not finish within `timeout` seconds.
        """
        return self._future.exception(timeout)

    def add_done_callback(self, callback: Any) -> None:
        """Call `callback(future)` once the call finishes.

        Args:
            callback: Called with this APIFuture, on the thread that finishes the call (the
                client's event loop), or at once on the caller's if it already has.
        """
        self._future.add_done_callback(lambda _: callback(self))


class ResolvedClientFuture:
    """Lets a client stand in for "a future of the client", as the official SDK 0.38 returns.

    In SDK 0.38 `create_lora_training_client`, `create_training_client_from_state[...]`,
    `create_sampling_client` and `save_weights_and_get_sampling_client` return a future of the
    client (`.result()` / `await`) that also accepts client calls directly. tinker_ref creates
    clients eagerly, so a client is its own already-resolved future: both spellings of a 0.38
    script (`create_...(...).result().forward(...)` and `create_...(...).forward(...)`) run
    unchanged after switching the import.
    """

    def result(self, timeout: float | None = None) -> Self:
        """Return this client, as SDK 0.38's "future of a client" resolves to it.

        Args:
            timeout: Accepted for the SDK's signature; the client is already there.

        Returns:
            Self: This client.
        """
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        async def resolved() -> Self:
            return self

        return resolved().__await__()


class EventLoopThread:
    """An asyncio loop running on its own daemon thread until `close()`."""

    def __init__(self, name: str = "tinker-ref") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> APIFuture[T]:
        return APIFuture(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop and wait for it (never call this from the loop itself)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("EventLoopThread.run() called from its own loop; await instead")
        return self.submit(coroutine).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
