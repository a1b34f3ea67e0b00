"""tinker_ref logs through `logging` only, under the `tinker_ref` logger, and `TINKER_LOG`
switches console output on in the official SDK's format (its level is compared with the SDK's
own in tests/integration/test_retry_rules_vs_official_sdk.py)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import tinker_ref

PACKAGE = Path(tinker_ref.__file__).parent
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts)

# One retry of a 503, logged by the retry policy; nothing else happens in the child process.
ONE_RETRY = """
import asyncio
import tinker_ref
from tinker_ref import errors
from tinker_ref.retry import RetryConfig, RetryPolicy

async def main():
    failures = [errors.status_error(503, {"detail": "down"})]
    async def attempt(n):
        if failures:
            raise failures.pop()
        return "ok"
    return await RetryPolicy(RetryConfig(retry_delay_base=0.01)).call(attempt, "POST /optim_step")

print(asyncio.run(main()))
"""


def test_no_module_of_tinker_ref_prints() -> None:
    printing = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]
    assert printing == []


def test_every_logger_of_tinker_ref_is_named_under_tinker_ref() -> None:
    names = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
            ):
                names.append(ast.unparse(node.args[0]) if node.args else "<root>")
    assert names  # the retry policy, the service client, flow control, the HTTP transport
    assert all(name in ("__name__", "LOGGER_NAME") for name in names), names


def _child(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TINKER_LOG"} | environ
    return subprocess.run(
        [sys.executable, "-c", ONE_RETRY],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )


def test_tinker_log_debug_prints_each_retry_in_the_sdks_format() -> None:
    completed = _child({"TINKER_LOG": "debug"})
    assert completed.stdout.strip() == "ok"
    pattern = (
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - tinker_ref\.retry:\d+ - DEBUG\] "
        r"POST /optim_step failed with status 503; retry 1 in 0\.\d\d s$"
    )
    assert [line for line in completed.stderr.splitlines() if re.match(pattern, line)]


def test_without_tinker_log_a_retry_prints_nothing() -> None:
    completed = _child({})
    assert completed.stdout.strip() == "ok"
    assert completed.stderr == ""
