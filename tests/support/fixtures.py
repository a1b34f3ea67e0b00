"""Fixtures shared by every test directory, loaded once by tests/conftest.py (`pytest_plugins`).

- `make_mock_api`: the mock's HTTP app in-process on the test's own event loop, through
  aiohttp's `aiohttp_client` (a fresh app on a free port per call), for tests of the HTTP front
  end that send raw requests and read the service's state directly (`MockApi`,
  tests/support/http_api.py). Tests that drive the mock with a client use the fixtures the
  project ships instead (`tinker_mock`, `tinker_mock_module`, `tinker_mock_session`:
  mock_server/pytest_plugin.py), or `mock_server.embedded.serve` outside fixtures.

The server is imported inside the fixture: this module loads in every run, and the server
pulls in torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support.http_api import MakeMockApi, MockApi


@pytest.fixture
def make_mock_api(aiohttp_client: Any, tmp_path: Path) -> MakeMockApi:
    """Start an in-process mock server (a fresh app on a free port) with config overrides."""
    from aiohttp.test_utils import TestServer

    from mock_server.http import SERVER_KWARGS, create_app
    from mock_server.service import ServerConfig
    from tests.support.http_api import MockApi

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
