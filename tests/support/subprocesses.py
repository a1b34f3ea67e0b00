"""Run a command a test depends on (a script in an SDK venv, a probe, a CLI) and fail with its
output when it fails: one place for the `subprocess.run` + return-code assertion + "the JSON
object on the last stdout line" that many tests need."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def run_checked(
    command: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    tail: int = 4000,
) -> subprocess.CompletedProcess[str]:
    """Run `command` (text, captured output); assert it exits 0, else fail with the last `tail`
    characters of its stdout and stderr."""
    done = subprocess.run(
        [str(part) for part in command],
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-tail:] + done.stderr[-tail:]
    return done


def last_json_line(stdout: str) -> Any:
    """The JSON value on the last line of `stdout` (scripts may log before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def run_json(
    command: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """`run_checked`, then the JSON object on the last line of its stdout."""
    result: dict[str, Any] = last_json_line(
        run_checked(command, timeout=timeout, env=env, cwd=cwd).stdout
    )
    return result
