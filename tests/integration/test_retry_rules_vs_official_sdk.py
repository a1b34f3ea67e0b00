"""tinker_ref's retry policy, flow control, heartbeat and logging numbers against the official SDK
0.38 itself: the SDK's own functions and constants are read inside its virtualenv and compared
with tinker_ref's (tinker_ref/retry.py, flow.py, service_client.py, logs.py).

Where tinker_ref decides differently on purpose, the test says so: `x-should-retry: false` is
final for tinker_ref, while the SDK's outer retry loop retries a 409 (and any 5xx) that says so.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.subprocesses import run_json
from tinker_ref import errors, flow
from tinker_ref.retry import Action, RetryConfig, RetryPolicy, classify, retry_after_seconds
from tinker_ref.service_client import ClientOptions
from tinker_ref.transport.base import ClientConfig
from tinker_ref.transport.http import HttpOptions

pytestmark = pytest.mark.sdk

RETRY_AFTER_CASES: list[dict[str, str]] = [
    {},
    {"retry-after": "2"},
    {"retry-after": "0.25"},
    {"retry-after": "0"},
    {"retry-after": "-3"},
    {"retry-after": "60"},
    {"retry-after": "61"},
    {"retry-after": "soon"},
    {"retry-after-ms": "1500"},
    {"retry-after-ms": "oops", "retry-after": "3"},
    {"retry-after-ms": "70000"},
]

# Runs in the SDK's virtualenv: the SDK's rules, applied to the same inputs, as JSON.
SDK_PROBE = r"""
import inspect, json, re, sys, types
import httpx
from tinker import _constants
from tinker._base_client import BaseClient
from tinker.lib import internal_client_holder as holder_module
from tinker.lib.internal_client_holder import InternalClientHolder
from tinker.lib.public_interfaces import sampling_client
from tinker.types import ClientConfigResponse

cases = json.loads(sys.argv[1])

def local(function, name):
    # A constant the SDK keeps as a local variable: `NAME = <expression>` in the function.
    match = re.search(rf"{name} = ([^\n]+)", inspect.getsource(function))
    return eval(match.group(1))

fake_client = types.SimpleNamespace(
    max_retries=10,
    _parse_retry_after_header=lambda h: BaseClient._parse_retry_after_header(None, h),
)
options = types.SimpleNamespace(get_max_retries=lambda default: default)
honoured = []
for headers in cases:
    asked = BaseClient._parse_retry_after_header(None, httpx.Headers(headers))
    wait = BaseClient._calculate_retry_timeout(fake_client, 10, options, httpx.Headers(headers))
    honoured.append(asked is not None and wait == asked)
statuses = range(400, 600)
holder_source = inspect.getsource(InternalClientHolder)
sampling_source = inspect.getsource(sampling_client.SamplingClient._sample_async_impl)
print(json.dumps({
    "outer": [InternalClientHolder._is_retryable_status_code(s) for s in statuses],
    "inner": [BaseClient._should_retry(None, httpx.Response(s)) for s in statuses],
    "should_retry_false_409": BaseClient._should_retry(
        None, httpx.Response(409, headers={"x-should-retry": "false"})
    ),
    "retry_after": [BaseClient._parse_retry_after_header(None, httpx.Headers(h)) for h in cases],
    "honoured": honoured,
    "initial_retry_delay": _constants.INITIAL_RETRY_DELAY,
    "max_retry_delay": _constants.MAX_RETRY_DELAY,
    "timeout": _constants.DEFAULT_TIMEOUT.read,
    "connect_timeout": _constants.DEFAULT_TIMEOUT.connect,
    "budget": local(InternalClientHolder.execute_with_retries, "MAX_WAIT_TIME"),
    "billing_sleep": float(re.search(
        r"_should_pause_on_billing\([^)]*\):\s*await asyncio.sleep\((\d+)\)",
        inspect.getsource(InternalClientHolder.execute_with_retries),
    ).group(1)),
    "bare_400_retries": holder_module.MAX_CONNECTION_ERROR_RETRIES,
    "billing_log": holder_module.BILLING_EXCEPTION_LOGGING_INTERVAL_SEC,
    "billing_reset": holder_module.BILLING_EXCEPTION_RESET_DURATION_SEC,
    "heartbeat": local(InternalClientHolder._session_heartbeat, "SESSION_HEARTBEAT_PERIOD_SEC"),
    "heartbeat_warning": local(
        InternalClientHolder._session_heartbeat, "SESSION_MISSED_HEARTBEAT_WARNING_THRESHOLD_SEC"
    ),
    "sample_slots": int(re.search(
        r"_sample_dispatch_semaphore[^=]*= asyncio.Semaphore\((\d+)\)", holder_source
    ).group(1)),
    "throttled_slots": int(re.search(
        r"_sample_dispatch_throttled_semaphore[^=]*= asyncio.Semaphore\((\d+)\)", holder_source
    ).group(1)),
    "throttled_factor": int(re.search(r"bytes \*= (\d+)", holder_source).group(1)),
    "throttle_seconds": float(re.search(
        r"_sample_backoff_until < (\d+)", holder_source
    ).group(1)),
    "sample_backoff": re.search(
        r"backoff_duration = (\d+) if estimated_bytes_count <= ([\d* ]+) else (\d+)",
        sampling_source,
    ).groups(),
    "config": ClientConfigResponse().model_dump(),
}))
"""


@pytest.fixture(scope="module")
def sdk(official_sdk_38: Path) -> dict[str, Any]:
    return run_json(
        [official_sdk_38, "-c", SDK_PROBE, json.dumps(RETRY_AFTER_CASES)],
        timeout=120,
        env={**os.environ, "TINKER_TELEMETRY": "0"},
    )


def _decision(status: int, headers: dict[str, str] | None = None) -> bool:
    error = errors.status_error(status, {"detail": "x"}, headers)
    return classify(error) is Action.RETRY


def test_the_same_statuses_are_retried(sdk: dict[str, Any]) -> None:
    statuses = range(400, 600)
    # The SDK retries in two layers (the HTTP client, then execute_with_retries); a request is
    # retried when either does. 402 is the billing pause in both (tinker_ref: Action.PAUSE).
    theirs = {
        s
        for s, inner, outer in zip(statuses, sdk["inner"], sdk["outer"], strict=True)
        if inner or outer
    }
    ours = {s for s in statuses if _decision(s)}
    assert ours == theirs
    assert classify(errors.status_error(402, {"detail": "x"})) is Action.PAUSE
    # tinker_ref obeys x-should-retry: false; the SDK's inner layer does, its outer one not.
    assert sdk["should_retry_false_409"] is False and sdk["outer"][409 - 400] is True
    assert _decision(409, {"x-should-retry": "false"}) is False


def test_retry_after_is_read_and_honoured_as_the_sdk_does(sdk: dict[str, Any]) -> None:
    ours = [retry_after_seconds(headers) for headers in RETRY_AFTER_CASES]
    assert ours == sdk["retry_after"]
    policy = RetryPolicy(jitter=lambda: 0.0)
    honoured = []
    for headers in RETRY_AFTER_CASES:
        asked = retry_after_seconds(headers)
        wait = policy.backoff(0, errors.status_error(503, "x", headers))
        honoured.append(asked is not None and wait == asked)
    assert honoured == sdk["honoured"]


def test_backoff_budget_timeouts_and_billing_numbers_are_the_sdks(sdk: dict[str, Any]) -> None:
    config = RetryConfig()
    assert config.retry_delay_base == sdk["initial_retry_delay"]
    assert config.retry_delay_max == sdk["max_retry_delay"]
    assert config.budget_seconds == sdk["budget"]
    assert config.bare_400_retries == sdk["bare_400_retries"]
    assert config.billing_pause_seconds == sdk["billing_sleep"]
    assert config.billing_log_seconds == sdk["billing_log"]
    assert config.billing_reset_seconds == sdk["billing_reset"]
    assert (
        config.billing_max_pause_seconds
        == sdk["config"]["billing_exception_max_pause_duration_sec"]
    )
    http = HttpOptions()
    assert (http.timeout, http.connect_timeout) == (sdk["timeout"], sdk["connect_timeout"])
    options = ClientOptions()
    assert options.heartbeat_seconds == sdk["heartbeat"]
    assert options.heartbeat_warning_seconds == sdk["heartbeat_warning"]


def test_flow_control_numbers_are_the_sdks(sdk: dict[str, Any]) -> None:
    defaults = ClientConfig()
    for name in (
        "fwdbwd_dispatch_bytes_semaphore_size",
        "sample_dispatch_bytes_semaphore_size",
        "inflight_response_bytes_semaphore_size",
        "billing_exception_max_pause_duration_sec",
        "fwdbwd_max_chunk_len",
        "fwdbwd_max_chunk_bytes_count",
        "parallel_fwdbwd_chunks",
    ):
        assert getattr(defaults, name) == sdk["config"][name], name
    assert sdk["sample_slots"] == flow.SAMPLE_DISPATCH_SLOTS
    assert sdk["throttled_slots"] == flow.THROTTLED_SAMPLE_DISPATCH_SLOTS
    assert sdk["throttled_factor"] == flow.THROTTLED_BYTES_FACTOR
    assert sdk["throttle_seconds"] == flow.THROTTLE_SECONDS
    short, limit, long = sdk["sample_backoff"]
    assert (eval(limit), float(short), float(long)) == (flow.LARGE_PROMPT_BYTES, 1.0, 5.0)


def _logger_level(python: Path | str, package: str, value: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TINKER_LOG"}
    if value is not None:
        env["TINKER_LOG"] = value
    code = f"import logging, {package}; print(logging.getLogger('{package}').getEffectiveLevel())"
    completed = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return int(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("value", ["debug", "info", None])
def test_tinker_log_sets_the_same_level_as_in_the_sdk(
    official_sdk_38: Path, value: str | None
) -> None:
    theirs = _logger_level(official_sdk_38, "tinker", value)
    ours = _logger_level(sys.executable, "tinker_ref", value)
    assert ours == theirs
    assert ours == {"debug": logging.DEBUG, "info": logging.INFO, None: logging.WARNING}[value]
