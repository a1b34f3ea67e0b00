"""Run `client_scenario.py` (one custom-loss training run, official SDK or tinker_ref) as a
subprocess against a running server; returns the JSON line it prints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.support.subprocesses import run_json

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
    return run_json(
        [python, script, sdk, transport, address],
        timeout=timeout,
        env={**os.environ, "TINKER_TELEMETRY": "0"},
    )
