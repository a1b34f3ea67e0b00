"""Helpers for the conformance tests (tests/conformance/): run the suite in-process against an
adapter command, and read what the reference adapter observed."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from conformance import ROOT
from conformance.cases import load_cases, load_expectations
from conformance.report import Report
from conformance.runner import run_suite

ADAPTER = ROOT / "adapters" / "python" / "adapter.py"
ADAPTERS_DIR = ROOT / "adapters"
BROKEN_ADAPTER = Path(__file__).resolve().parents[1] / "conformance" / "broken_adapter.py"


def python_adapter(python: Path | str, *args: str) -> str:
    return shlex.join([str(python), str(ADAPTER), *args])


def tinker_ref_adapter(transport: str = "http") -> str:
    return python_adapter(sys.executable, "--sdk", "tinker_ref", "--transport", transport)


def run(
    command: str,
    cases: str = "*",
    features: str | None = None,
    known_failing: str | None = None,
    grpc: bool = False,
) -> Report:
    """The suite's verdict on `command` for the cases matching `cases` (comma-separated globs);
    `features` / `known_failing` name files in conformance/adapters/."""
    expectations = load_expectations(
        ADAPTERS_DIR / features if features else None,
        ADAPTERS_DIR / known_failing if known_failing else None,
    )
    return run_suite(load_cases(pattern=cases), command, expectations, grpc=grpc)


def run_reference(cases: str = "*") -> dict[str, dict[str, Any]]:
    """What the reference adapter (tinker_ref over HTTP) left behind per case: observations as
    `runner.observe_case` makes them (steps, state fingerprint, digest, wire)."""
    observed: dict[str, dict[str, Any]] = {}
    run_suite(
        load_cases(pattern=cases),
        tinker_ref_adapter("http"),
        load_expectations(None, None),
        record=observed,
    )
    return observed


def explain(report: Report) -> str:
    """For assertion messages: the summary and every unexpected outcome with its failures."""
    return f"{report.summary()}\n{report.details()}"
