"""The one retry policy of tinker_ref: what is retried, how long to wait, when to give up.

Both transports send every request through `RetryPolicy.call` and pace the polls of every future
with a `PollPacer`. They translate their failures into `tinker_ref.errors` first (an HTTP status
and headers; a gRPC code with the server's `tinker-http-status` trailer and trailing metadata),
so one set of rules sees both wires.

The rules are the official SDK 0.38's (`_base_client.py` `_should_retry` and
`_calculate_retry_timeout`, `lib/internal_client_holder.py` `execute_with_retries` and
`_should_pause_on_billing`, `lib/api_future_impl.py` for polls), flattened into one loop:

- Retried: no answer (connection refused or reset, timeout), 408, 409, 429, 5xx, and a 400
  without a body (a proxy's glitch, not the service's answer; at most 16 per request). The
  server's `x-should-retry: true|false` overrides the status.
- Wait: `retry-after-ms` / `retry-after` (seconds or an HTTP date) when it is in (0, 60] s;
  otherwise 0.5 s doubling up to 10 s, times a jitter in (0.75, 1] so that clients hit by the
  same outage do not retry in lockstep.
- Give up: once a request has been failing for 300 s (the SDK's `execute_with_retries` budget;
  the last try is made at the 300 s mark).
- 402 (billing): the account is paused, not broken. Try again every 5 s without spending the
  budget, for at most `billing_exception_max_pause_duration_sec` (client config, 1 h) per
  incident; an incident ends after 5 min without a 402. Logged at most once a minute.
- Polls (`PollPacer`): 408 and `try_again` are polled again at once (the server held the poll);
  5xx, 429 and no answer back off as above with no budget: a future is waited for as long as the
  server keeps answering like a server in trouble (the SDK does so too, but re-polls a 5xx at
  once: 2180 polls in 12 s against the mock); 402 pauses; anything else fails the future.

Stricter than the SDK: `x-should-retry: false` is final (the SDK's outer loop retries a 409 that
says so anyway), and there is one backoff (0.5 s -> 10 s) instead of two stacked ones (the SDK's
0.5 s -> 10 s for 10 tries inside an outer 1 s -> 30 s loop), so a request notices a recovered
server within 10 s. A 401 `invalid_token` is not a retry: the HTTP transport's auth layer
replaces the JWT and replays the request once, as the SDK's auth flow does.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from tinker_ref.errors import APIConnectionError, APIError, APIStatusError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryConfig:
    """Knobs of the retry policy; the defaults are the official SDK 0.38's numbers."""

    retry_delay_base: float = 0.5  # s, the first backoff (SDK INITIAL_RETRY_DELAY)
    retry_delay_max: float = 10.0  # s, the backoff cap (SDK MAX_RETRY_DELAY)
    jitter_factor: float = 0.25  # a backoff is scaled by 1 - jitter_factor * U[0, 1)
    max_retry_after: float = 60.0  # s; a longer (or non-positive) Retry-After is not honoured
    budget_seconds: float = 300.0  # s a request may keep failing (SDK execute_with_retries)
    max_retries: int | None = None  # retries per request on top of the budget; None: no cap
    bare_400_retries: int = 16  # per request (SDK MAX_CONNECTION_ERROR_RETRIES)
    slow_warning_seconds: float = 30.0  # a request still failing after this is logged (WARNING)
    billing_pause_seconds: float = 5.0  # s between tries while the account is paused (402)
    billing_max_pause_seconds: float = 3600.0  # per incident; the client config's value wins
    billing_reset_seconds: float = 300.0  # a 402 after this long without one: a new incident
    billing_log_seconds: float = 60.0  # at most one "paused" warning per this many seconds


class Action(enum.Enum):
    RETRY = "retry"
    PAUSE = "pause"  # 402: wait for the account, without spending the budget
    FAIL = "fail"


def retryable_status(status: int) -> bool:
    """The SDK's `is_retryable_status_code`: 408, 409, 429 and 5xx."""
    return status in (408, 409, 429) or 500 <= status < 600


def is_bare_400(error: APIStatusError) -> bool:
    """A 400 without a body: a proxy in front of the service refused the request."""
    return error.status_code == 400 and not error.body


def classify(error: BaseException) -> Action:
    """What to do after `error` (a tinker_ref error; anything else fails)."""
    if isinstance(error, APIConnectionError):  # no answer at all, timeouts included
        return Action.RETRY
    if not isinstance(error, APIStatusError):
        return Action.FAIL
    if error.status_code == 402:
        return Action.PAUSE
    should_retry = error.headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        return Action.RETRY if should_retry == "true" else Action.FAIL
    if is_bare_400(error) or retryable_status(error.status_code):
        return Action.RETRY
    return Action.FAIL


def retry_after_seconds(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """The wait a server asks for, as the SDK parses it: `retry-after-ms`, else `retry-after`
    in seconds (a float is accepted), else `retry-after` as an HTTP date. Not range-checked."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            pass
    value = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(value) if value else None
    if parsed is None:
        return None
    return float(email.utils.mktime_tz(parsed) - now())


def describe(error: BaseException) -> str:
    if isinstance(error, APIStatusError):
        return f"status {error.status_code}"
    return f"{type(error).__name__}: {error}"


class RetryPolicy:
    """The retry rules above, applied. One per transport (so one per ServiceClient): the billing
    pause is an account's state, shared by every request of the client.

    `clock`, `sleep` and `jitter` are injectable so the rules can be tested without waiting.
    """

    def __init__(
        self,
        config: RetryConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config or RetryConfig()
        self._clock, self._sleep, self._jitter = clock, sleep, jitter
        self._billing_max_pause = self.config.billing_max_pause_seconds
        self._billing_since: float | None = None  # first 402 of the current incident
        self._billing_last: float | None = None  # latest 402
        self._billing_logged: float | None = None

    def configure(self, billing_max_pause_seconds: float) -> None:
        """Adopt the service's client/config value."""
        self._billing_max_pause = billing_max_pause_seconds

    def backoff(self, step: int, error: BaseException | None = None) -> float:
        """Seconds to wait before retry number `step + 1` after `error`."""
        config = self.config
        if isinstance(error, APIStatusError):
            asked = retry_after_seconds(error.headers)
            if asked is not None and 0 < asked <= config.max_retry_after:
                return asked
        delay = min(config.retry_delay_base * 2.0 ** min(step, 64), config.retry_delay_max)
        return delay * (1 - config.jitter_factor * self._jitter())

    async def call(
        self,
        attempt: Callable[[int], Awaitable[T]],
        what: str,
        *,
        retry_rate_limits: bool = True,
    ) -> T:
        """`attempt(n)` (n = the retries so far, for `x-stainless-retry-count`) until it returns
        or fails for good. `retry_rate_limits=False` lets a 429 through to the caller (sampling
        has its own, client-wide backoff for it: tinker_ref/flow.py)."""
        config = self.config
        started = self._clock()
        attempts = step = bare_400s = 0
        warned = False
        while True:
            try:
                return await attempt(attempts)
            except APIError as error:
                action = classify(error)
                if action is Action.PAUSE and isinstance(error, APIStatusError):
                    await self._pause_for_billing(error, what)
                    started, step = self._clock(), 0  # a pause is not an outage: a new budget
                    attempts += 1
                    continue
                if action is Action.FAIL or (
                    not retry_rate_limits
                    and isinstance(error, APIStatusError)
                    and error.status_code == 429
                ):
                    raise
                if isinstance(error, APIStatusError) and is_bare_400(error):
                    bare_400s += 1
                    if bare_400s > config.bare_400_retries:
                        raise
                elapsed = self._clock() - started
                if elapsed >= config.budget_seconds or (
                    config.max_retries is not None and step >= config.max_retries
                ):
                    log.warning(
                        "%s: giving up after %d attempts over %.1f s; the last failed with %s",
                        what,
                        attempts + 1,
                        elapsed,
                        describe(error),
                    )
                    raise
                if not warned and elapsed >= config.slow_warning_seconds:
                    warned = True
                    log.warning(
                        "%s has been failing for %.0f s (%s); retrying for up to %.0f s",
                        what,
                        elapsed,
                        describe(error),
                        config.budget_seconds,
                    )
                # The last try lands on the budget's end rather than past it (as the SDK's).
                delay = min(self.backoff(step, error), config.budget_seconds - elapsed)
                log.debug(
                    "%s failed with %s; retry %d in %.2f s",
                    what,
                    describe(error),
                    attempts + 1,
                    delay,
                    extra={"retry_delay": delay, "retry_error": describe(error)},
                )
                await self._sleep(delay)
                step += 1
                attempts += 1

    async def _pause_for_billing(self, error: APIStatusError, what: str) -> None:
        """Sleep one billing pause, or raise `error` once the incident has lasted too long."""
        now = self._clock()
        config = self.config
        last = self._billing_last
        if last is not None and now - last > config.billing_reset_seconds:
            self._billing_since = None  # the previous incident is over
        self._billing_last = now
        if self._billing_since is None:
            self._billing_since = now
        paused = now - self._billing_since
        if paused > self._billing_max_pause:
            log.error(
                "%s: the job has been paused for billing for %.0f s (limit %.0f s); giving up",
                what,
                paused,
                self._billing_max_pause,
            )
            raise error
        if self._billing_logged is None or now - self._billing_logged > config.billing_log_seconds:
            self._billing_logged = now
            log.warning("The job is paused due to billing status (402): %s", error)
        await self._sleep(config.billing_pause_seconds)


class PollPacer:
    """Paces the polls of one future (`retrieve_future`): call `answered()` after every poll the
    server answered normally and `failed(error)` after every failed one, which waits as the
    rules say or raises `error` when the future cannot be waited for any longer."""

    def __init__(self, policy: RetryPolicy, what: str) -> None:
        self._policy, self._what = policy, what
        self._step = 0  # consecutive backed-off failures
        self._bare_400s = 0

    def answered(self) -> None:
        self._step = 0

    async def failed(self, error: APIError) -> None:
        policy = self._policy
        action = classify(error)
        if action is Action.PAUSE and isinstance(error, APIStatusError):
            await policy._pause_for_billing(error, self._what)
            return
        if action is Action.FAIL:
            self._raise(error)
        if isinstance(error, APIStatusError):
            if error.status_code == 408:
                self._step = 0  # the server held the poll and says "not yet": poll again now
                return
            if is_bare_400(error):
                self._bare_400s += 1
                if self._bare_400s > policy.config.bare_400_retries:
                    self._raise(error)
        delay = policy.backoff(self._step, error)
        self._step += 1
        log.debug(
            "%s: poll failed with %s; polling again in %.2f s",
            self._what,
            describe(error),
            delay,
            extra={"retry_delay": delay, "retry_error": describe(error)},
        )
        await policy._sleep(delay)

    @staticmethod
    def _raise(error: APIError) -> NoReturn:
        raise error
