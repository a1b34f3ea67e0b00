"""Run `client_scenario.py` (one custom-loss training run, official SDK or tinker_ref) as a
subprocess against a running server; returns the JSON line it prints."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

SCENARIO = Path(__file__).with_name("client_scenario.py")


def run_client_scenario(
    python: Path | str,
    sdk: str,
    transport: str,
    address: str,
    timeout: float = 240,
    script: Path = SCENARIO,
) -> dict[str, Any]:
    """`script` (default: client_scenario.py) takes the same three arguments."""
    completed = subprocess.run(
        [str(python), str(script), sdk, transport, address],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TINKER_TELEMETRY": "0"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result
