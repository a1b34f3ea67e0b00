"""Fixtures for integration tests that need an official `tinker` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.official_codec_client import OfficialCodecDriver
from tests.support.sdk_venv import ensure_sdk_venv


@pytest.fixture(scope="session")
def official_sdk_38() -> Path:
    """Python executable of a cached venv with `tinker==0.38.0` (built on first use)."""
    return ensure_sdk_venv("0.38.0")


@pytest.fixture(scope="session")
def official_codec(official_sdk_38: Path) -> Iterator[OfficialCodecDriver]:
    """The official 0.38.0 encoder/decoder, one driver process for the whole session."""
    driver = OfficialCodecDriver(official_sdk_38)
    yield driver
    driver.close()
