"""Older official SDKs train against a real `tinker-mock serve` process: the JSON era (0.15.0:
JSON bodies and results, `/forward`; 0.24.1: JSON bodies, protobuf-or-JSON results) and the
first protobuf release (0.25.0). One server; the three drivers run concurrently, each in its
own cached venv (`tests/support/legacy_sdk_driver.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.support.mock_process import running_mock_server
from tests.support.sdk_venv import ensure_sdk_venv

VERSIONS = ("0.15.0", "0.24.1", "0.25.0")
DRIVER = Path(__file__).resolve().parents[1] / "support" / "legacy_sdk_driver.py"

pytestmark = pytest.mark.sdk


@pytest.fixture(scope="module")
def legacy_runs() -> dict[str, Any]:
    pythons = {version: ensure_sdk_venv(version) for version in VERSIONS}
    env = {**os.environ, "TINKER_TELEMETRY": "0"}
    with running_mock_server() as server:
        processes = {
            version: subprocess.Popen(
                [str(python), str(DRIVER), server.url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for version, python in pythons.items()
        }
        runs: dict[str, Any] = {}
        for version, process in processes.items():
            try:
                stdout, stderr = process.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            result = _result_line(stdout)
            if process.returncode != 0 and not (process.returncode < 0 and result is not None):
                pytest.fail(
                    f"tinker {version} driver failed ({process.returncode}):\n{stderr[-6000:]}\n"
                    f"--- server ---\n{server.stderr()[-3000:]}"
                )
            if process.returncode != 0:
                # Seen once under a loaded CI run: the 0.24.1 driver printed its whole result,
                # then died of SIGABRT with nothing on stderr, in the old SDK's interpreter
                # teardown. The workflow is complete; the tests below judge it.
                warnings.warn(
                    f"tinker {version} driver died of signal {-process.returncode} after "
                    "printing its result",
                    stacklevel=1,
                )
            assert result is not None
            runs[version] = result
        runs["records"] = server.requests()
    return runs


def _result_line(stdout: str) -> dict[str, Any] | None:
    """The driver's result (its last stdout line, a JSON object), or None if it printed none."""
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) and "sdk_version" in result else None


@pytest.mark.spec("WIRE-6", "WIRE-7", "WIRE-18", "SMP-7")
@pytest.mark.parametrize("version", VERSIONS)
def test_workflow(legacy_runs: dict[str, Any], version: str) -> None:
    run = legacy_runs[version]
    assert run["sdk_version"] == version
    assert all(b < a for a, b in pairwise(run["ce_losses"])), run["ce_losses"]
    assert all(b < a for a, b in pairwise(run["custom_losses"])), run["custom_losses"]
    # <= 0.25 custom-loss metrics: the server's surrogate stays in loss:sum, nothing renamed.
    assert "loss:sum" in run["custom_metrics"]
    assert "surrogate_loss:sum" not in run["custom_metrics"]
    assert run["restored_forward"] == run["after_training"]
    assert run["after_load_state"] == run["after_training"]
    assert run["samples_again"] == run["samples"]
    assert run["compute_logprobs"][0] is None
    assert run["compute_logprobs"][1:] == run["training_view"]


@pytest.mark.spec("WIRE-5", "WIRE-6", "OPT-2", "DET-1")
def test_every_era_trains_the_same_model(legacy_runs: dict[str, Any]) -> None:
    """Same seeds, same data: the wire format must not change a single bit of the result."""
    reference = legacy_runs[VERSIONS[0]]
    for version in VERSIONS[1:]:
        run = legacy_runs[version]
        assert run["after_training"] == reference["after_training"]
        assert run["samples"] == reference["samples"]


def _requests_of(legacy_runs: dict[str, Any], version: str) -> list[dict[str, Any]]:
    agent = f"AsyncTinker/Python {version}"
    return [r for r in legacy_runs["records"] if r["headers"].get("user-agent") == agent]


@pytest.mark.spec("WIRE-3", "WIRE-6")
def test_each_era_spoke_its_own_wire(legacy_runs: dict[str, Any]) -> None:
    old = _requests_of(legacy_runs, "0.15.0")
    assert not any(r["endpoint"].endswith("client/config") for r in old)  # 0.15 never asks
    assert any(r["endpoint"] == "/api/v1/forward" for r in old)
    assert all(r["headers"].get("content-type") == "application/json" for r in old)
    assert all("protobuf" not in r["headers"].get("accept", "") for r in old)
    transition = _requests_of(legacy_runs, "0.24.1")
    fwdbwd = [r for r in transition if r["endpoint"] == "/api/v1/forward_backward"]
    assert fwdbwd and all(r["headers"]["content-type"] == "application/json" for r in fwdbwd)
    proto = _requests_of(legacy_runs, "0.25.0")
    assert not any(r["endpoint"] == "/api/v1/forward" for r in proto)
    fwdbwd = [r for r in proto if r["endpoint"] == "/api/v1/forward_backward"]
    assert fwdbwd and all(r["headers"]["content-type"] == "application/x-protobuf" for r in fwdbwd)
    for version in VERSIONS:  # create_training_client_from_state asked for the checkpoint shape
        assert any(
            r["endpoint"] == "/api/v1/weights_info" for r in _requests_of(legacy_runs, version)
        )
