"""Fixtures for integration tests that need an official `tinker` SDK."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from mock_server.http import SERVER_KWARGS, create_app
from mock_server.service import ServerConfig
from tests.support.http_api import MockApi
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


# ----- the mock server in-process (HTTP front end tests) -----

MakeMockApi = Callable[..., Awaitable[MockApi]]


@pytest.fixture
def make_mock_api(aiohttp_client: Any, tmp_path: Path) -> MakeMockApi:
    """Start an in-process mock server (a fresh app on a free port) with config overrides."""
    count = 0

    async def make(**overrides: Any) -> MockApi:
        nonlocal count
        count += 1
        settings: dict[str, Any] = {
            "data_dir": tmp_path / f"server-{count}",
            "long_poll_seconds": 2.0,
            "seq_gap_timeout_seconds": 10.0,
            **overrides,
        }
        api_key = settings.pop("api_key", "tml-test")
        server = TestServer(create_app(ServerConfig(**settings)))
        # TestServer ignores constructor kwargs; runner options go to start_server.
        await server.start_server(**SERVER_KWARGS)  # type: ignore[arg-type]
        return MockApi(await aiohttp_client(server), api_key)

    return make
