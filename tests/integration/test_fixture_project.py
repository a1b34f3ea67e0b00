"""Acceptance: a user's test project (tests/fixture_project) passes using only the public
`tinker_mock` fixtures and the official SDK.

The project runs in a subprocess under the cached offline-development venv (official SDK 0.38,
pytest, tinker-ref's dependencies — see `ensure_cookbook_venv`), with tinker-ref installed
from this checkout as a real wheel into a temporary `--target` folder on `PYTHONPATH`: pytest
then finds the plugin through the `pytest11` entry point of the installed distribution, and the
tokenizer files come from the wheel's package data, exactly as for a user who `pip install`s
tinker-ref. Nothing is downloaded (`--no-index`, no build isolation).
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.mock_process import REPO_ROOT
from tests.support.sdk_venv import ensure_cookbook_venv
from tests.support.subprocesses import run_checked

PROJECT = REPO_ROOT / "tests" / "fixture_project"
# What a wheel build of tinker-ref reads (pyproject names README.md as the long description).
SOURCES = ("pyproject.toml", "README.md", "tinker_ref", "mock_server")


def install_checkout(python: Path, where: Path) -> Path:
    """Build and install this checkout's tinker-ref (no dependencies) into `where/site`."""
    source = where / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    site = where / "site"
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps"]
    command += ["--no-index", "--no-build-isolation", "--target", str(site), str(source)]
    run_checked(command, timeout=300, tail=3000)
    return site


# The first run builds the cached venv (transformers, datasets, torch: many minutes here).
@pytest.mark.timeout(2400)
@pytest.mark.sdk
def test_a_user_project_passes_with_only_the_fixture_and_the_official_sdk(tmp_path: Path) -> None:
    python = ensure_cookbook_venv()
    site = install_checkout(python, tmp_path)
    assert (site / "mock_server" / "tokenizers" / "bytes" / "tokenizer.json").is_file()
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    report = tmp_path / "report.xml"
    env = {
        name: value
        for name, value in os.environ.items()
        # The fixture must set these itself; PYTEST_* from this run must not leak in.
        if not name.startswith(("TINKER_", "PYTEST_", "HF_"))
    }
    env.update(PYTHONPATH=str(site), TINKER_TELEMETRY="0", PYTHONDONTWRITEBYTECODE="1")
    run_checked(
        [python, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}", "-q"],
        cwd=project,
        env=env,
        timeout=600,
        tail=6000,
    )
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {case.get("name"): [child.tag for child in case] for case in cases}
    expected = {
        line.split("(")[0].removeprefix("def ")
        for line in (PROJECT / "test_training_loop.py").read_text().splitlines()
        if line.startswith("def test_")
    }
    assert set(outcomes) == expected  # every test ran: none deselected or missed
    assert all(tags == [] for tags in outcomes.values()), outcomes  # none skipped or failed
