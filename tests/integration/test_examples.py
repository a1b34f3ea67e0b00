"""The examples run as documented: `make demo`'s script with no server running, and the
official-SDK example against a real `tinker-mock serve` process with the README's environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mock_process import REPO_ROOT, running_mock_server

STEP_LINE = re.compile(r"^step (\d+): mean NLL (\d+\.\d+) tokens (\d+)$", re.MULTILINE)
TOKENS_PER_STEP = 60  # the three example sentences: 22 + 22 + 19 bytes, minus 1 each


def run_example(python: Path | str, script: str, *args: str, **env: str) -> str:
    completed = subprocess.run(
        [str(python), str(REPO_ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TINKER_TELEMETRY": "0", **env},
        cwd=REPO_ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


def assert_trains(stdout: str, steps: int) -> list[float]:
    lines = STEP_LINE.findall(stdout)
    assert [int(step) for step, _, _ in lines] == list(range(steps)), stdout
    assert all(int(tokens) == TOKENS_PER_STEP for _, _, tokens in lines)
    losses = [float(loss) for _, loss, _ in lines]
    assert losses[-1] < losses[0] - 1.0, losses
    assert "sample: b'the " in stdout
    return losses


def test_demo_runs_with_no_server_and_prints_loss_and_custom_metric_per_step() -> None:
    stdout = run_example(sys.executable, "custom_loss_training.py", "--steps", "4")
    assert re.search(r"^mock server at http://127\.0\.0\.1:\d+$", stdout, re.MULTILINE)
    assert_trains(stdout, 4)


@pytest.mark.sdk
def test_official_sdk_example_against_the_cli_server_matches_the_reference_client(
    official_sdk_38: Path,
) -> None:
    with running_mock_server() as server:
        official = run_example(
            official_sdk_38,
            "official_sdk_with_mock.py",
            TINKER_API_KEY="tml-dev",
            TINKER_BASE_URL=server.url,
        )
    official_losses = assert_trains(official, 8)
    # Same server seed, same requests: tinker_ref prints the very same losses (4 decimals).
    reference = run_example(sys.executable, "custom_loss_training.py", "--steps", "8")
    assert assert_trains(reference, 8) == official_losses
