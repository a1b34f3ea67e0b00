"""The one retry policy (tinker_ref/retry.py) on a fake clock: what it retries, how long it
waits, when it gives up, the billing pause and the pacing of polls. The rules' origin in the
official SDK 0.38 is checked against the SDK itself in
tests/integration/test_retry_rules_vs_official_sdk.py."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tinker_ref import errors
from tinker_ref.retry import PollPacer, RetryConfig, RetryPolicy, retry_after_seconds


class FakeTime:
    """A clock that only moves when the policy sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(fake: FakeTime, jitter: float = 0.0, **config: Any) -> RetryPolicy:
    return RetryPolicy(
        RetryConfig(**config), clock=fake.clock, sleep=fake.sleep, jitter=lambda: jitter
    )


def status(code: int, body: Any = "x", headers: Mapping[str, str] | None = None) -> Exception:
    return errors.status_error(code, body, headers)


def failing(
    *failures: Exception | Callable[[], Exception], then: Any = "done"
) -> Callable[[int], Any]:
    """An attempt function raising `failures` in turn (a callable is called for each try from
    then on, forever), then returning `then`."""
    script = list(failures)
    tries: list[int] = []

    async def attempt(retries_taken: int) -> Any:
        tries.append(retries_taken)
        if script:
            failure = script[0]
            if callable(failure) and not isinstance(failure, Exception):
                raise failure()
            script.pop(0)
            raise failure
        return then

    attempt.tries = tries  # type: ignore[attr-defined]
    return attempt


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_503_is_retried_with_doubling_backoff_capped_at_ten_seconds() -> None:
    fake = FakeTime()
    attempt = failing(*[status(503) for _ in range(8)])
    assert run(policy(fake).call(attempt, "POST /x")) == "done"
    assert fake.sleeps == [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert attempt.tries == list(range(9))  # type: ignore[attr-defined]


def test_jitter_only_shortens_a_backoff_by_at_most_a_quarter() -> None:
    fake = FakeTime()
    run(policy(fake, jitter=0.999).call(failing(status(500), status(500)), "x"))
    assert fake.sleeps == pytest.approx([0.5 * 0.75025, 1 * 0.75025])


def test_a_persistent_outage_is_retried_for_300_seconds_then_the_error_is_raised() -> None:
    fake = FakeTime()
    attempt = failing(lambda: status(503))
    with pytest.raises(errors.InternalServerError):
        run(policy(fake).call(attempt, "POST /x"))
    assert sum(fake.sleeps) == pytest.approx(300)  # the last try lands on the budget's end
    assert max(fake.sleeps) == 10
    # Sleeps 0.5 + 1 + 2 + 4 + 8 = 15.5 s, 28 x 10 s = 295.5 s, then 4.5 s: 34 sleeps.
    assert len(attempt.tries) == 35  # type: ignore[attr-defined]


def test_a_40_second_outage_does_not_end_a_request() -> None:
    """The issue's probe: 9 attempts over 38.5 s used to be the end of a run."""
    fake = FakeTime()

    async def attempt(retries_taken: int) -> str:
        if fake.now < 40:
            raise status(503)
        return "up"

    assert run(policy(fake).call(attempt, "POST /x")) == "up"
    assert 40 <= fake.now <= 50  # noticed within one 10 s backoff of the recovery


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(code: int) -> None:
    fake = FakeTime()
    assert run(policy(fake).call(failing(status(code)), "x")) == "done"
    assert len(fake.sleeps) == 1


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 413, 415, 422])
def test_client_errors_with_a_body_are_raised_at_once(code: int) -> None:
    fake = FakeTime()
    attempt = failing(status(code, {"detail": "no"}))
    with pytest.raises(errors.APIStatusError) as raised:
        run(policy(fake).call(attempt, "x"))
    assert raised.value.status_code == code
    assert fake.sleeps == []


@pytest.mark.parametrize(
    "failure", [errors.APIConnectionError("refused"), errors.APITimeoutError("slow")]
)
def test_no_answer_is_retried(failure: Exception) -> None:
    fake = FakeTime()
    assert run(policy(fake).call(failing(failure, failure), "x")) == "done"
    assert fake.sleeps == [0.5, 1]


def test_a_400_without_a_body_is_retried_16_times_then_raised() -> None:
    fake = FakeTime()
    attempt = failing(lambda: status(400, None))
    with pytest.raises(errors.BadRequestError):
        run(policy(fake).call(attempt, "x"))
    assert len(attempt.tries) == 17  # type: ignore[attr-defined]


def test_x_should_retry_overrides_the_status() -> None:
    fake = FakeTime()
    refused = failing(status(503, headers={"x-should-retry": "false"}))
    with pytest.raises(errors.InternalServerError):
        run(policy(fake).call(refused, "x"))
    invited = failing(status(400, {"detail": "d"}, headers={"x-should-retry": "true"}))
    assert run(policy(fake).call(invited, "x")) == "done"
    assert fake.sleeps == [0.5]


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "60"}, 60.0),
        ({"retry-after": "61"}, 0.5),  # too long: the backoff instead
        ({"retry-after": "0"}, 0.5),
        ({"retry-after": "soon"}, 0.5),
    ],
)
def test_retry_after_is_honoured_between_zero_and_sixty_seconds(
    headers: dict[str, str], wait: float
) -> None:
    fake = FakeTime()
    run(policy(fake).call(failing(status(429, headers=headers)), "x"))
    assert fake.sleeps == [wait]


def test_retry_after_may_be_an_http_date() -> None:
    in_five = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert retry_after_seconds({"retry-after": in_five}) == pytest.approx(5, abs=1.5)


def test_a_sampling_429_is_left_to_the_caller() -> None:
    fake = FakeTime()
    with pytest.raises(errors.RateLimitError):
        run(policy(fake).call(failing(status(429)), "x", retry_rate_limits=False))
    assert run(policy(fake).call(failing(status(503)), "x", retry_rate_limits=False)) == "done"


def test_max_retries_caps_the_retries_before_the_budget_does() -> None:
    fake = FakeTime()
    attempt = failing(lambda: status(503))
    with pytest.raises(errors.InternalServerError):
        run(policy(fake, max_retries=2).call(attempt, "x"))
    assert len(attempt.tries) == 3  # type: ignore[attr-defined]


def test_a_billing_pause_waits_five_seconds_per_try_without_spending_the_budget() -> None:
    fake = FakeTime()
    # 500 s of 402s (longer than the 300 s budget), then a 503 that is still retried.
    attempt = failing(*[status(402) for _ in range(100)], status(503))
    assert run(policy(fake).call(attempt, "x")) == "done"
    assert fake.sleeps == [5.0] * 100 + [0.5]


def test_a_billing_pause_longer_than_the_service_allows_raises_402() -> None:
    fake = FakeTime()
    retry = policy(fake)
    retry.configure(billing_max_pause_seconds=30)
    with pytest.raises(errors.PaymentRequiredError):
        run(retry.call(failing(lambda: status(402)), "x"))
    assert sum(fake.sleeps) == pytest.approx(35)  # 402s at 0, 5, ..., 35 s: the last one raises


def test_a_billing_incident_ends_after_five_minutes_without_a_402() -> None:
    fake = FakeTime()
    retry = policy(fake)
    retry.configure(billing_max_pause_seconds=12)
    run(retry.call(failing(status(402), status(402)), "x"))  # a 10 s pause
    fake.now += 301
    run(retry.call(failing(status(402), status(402)), "x"))  # a new incident: allowed again
    fake.now += 1
    with pytest.raises(errors.PaymentRequiredError):  # the same incident: 11 s, then 16 > 12 s
        run(retry.call(failing(lambda: status(402)), "x"))


def test_failed_polls_back_off_and_never_give_up_on_a_failing_server() -> None:
    fake = FakeTime()
    pacer = PollPacer(policy(fake), "future r1")

    async def polls() -> None:
        for _ in range(200):  # 200 failed polls: 33 minutes of backoff, no error
            await pacer.failed(status(503))

    run(polls())
    assert fake.sleeps[:6] == [0.5, 1, 2, 4, 8, 10]
    assert set(fake.sleeps[5:]) == {10}
    assert fake.now == pytest.approx(15.5 + 195 * 10)


def test_a_poll_answered_408_is_repeated_at_once_and_an_answer_resets_the_backoff() -> None:
    fake = FakeTime()
    pacer = PollPacer(policy(fake), "future r1")

    async def polls() -> None:
        await pacer.failed(status(500))
        await pacer.failed(status(500))
        await pacer.failed(status(408))
        await pacer.failed(status(500))
        pacer.answered()
        await pacer.failed(errors.APIConnectionError("reset"))

    run(polls())
    assert fake.sleeps == [0.5, 1, 0.5, 0.5]


@pytest.mark.parametrize("code", [404, 410, 401])
def test_a_poll_refused_for_good_raises(code: int) -> None:
    fake = FakeTime()
    pacer = PollPacer(policy(fake), "future r1")
    with pytest.raises(errors.APIStatusError) as raised:
        run(pacer.failed(status(code, {"detail": "gone"})))
    assert raised.value.status_code == code
    assert fake.sleeps == []


def test_a_poll_during_a_billing_pause_waits_five_seconds() -> None:
    fake = FakeTime()
    pacer = PollPacer(policy(fake), "future r1")
    run(pacer.failed(status(402)))
    assert fake.sleeps == [5.0]
