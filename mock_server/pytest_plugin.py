"""pytest plugin shipped with tinker-ref (entry point `pytest11`): the mock as a fixture.

Installing tinker-ref makes two fixtures available to any test suite, with no conftest:

    def test_my_training_loop(tinker_mock):          # fresh server for this test
        service = tinker.ServiceClient()               # reads TINKER_BASE_URL / TINKER_API_KEY
        ...
        assert tinker_mock.losses(model_id)[-1] < tinker_mock.losses(model_id)[0]

- `tinker_mock`: a mock on a free loopback port for one test, with `TINKER_BASE_URL` and
  `TINKER_API_KEY` set for that test (monkeypatch, so they are restored afterwards). Mark a
  test `@pytest.mark.tinker_mock(seed=3, client_config_overrides={...})` to pass
  `ServerConfig` fields.
- `tinker_mock_session`: one mock for the whole session, the variables set for the session;
  cheaper when tests do not need a clean server (ids and weights then depend on test order).

Both yield a `mock_server.testing.MockServer` (URL, request record, weights digests, per-model
loss history). This module imports nothing heavy at load time: pytest loads every installed
plugin in every run, and torch alone takes seconds to import.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mock_server.testing import MockServer

MARKER = "tinker_mock"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**overrides): ServerConfig fields (seed=..., client_config_overrides=...) "
        "for the tinker_mock fixture",
    )


@pytest.fixture
def tinker_mock(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MockServer]:
    """A mock server for this test; the official SDK's environment variables point at it."""
    from mock_server.testing import serve

    marker = request.node.get_closest_marker(MARKER)
    overrides = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only")
    with serve(**overrides) as mock:
        for name, value in mock.environ().items():
            monkeypatch.setenv(name, value)
        yield mock


@pytest.fixture(scope="session")
def tinker_mock_session() -> Iterator[MockServer]:
    """One mock server for the whole session; the SDK's variables point at it throughout."""
    from mock_server.testing import serve

    with serve() as mock, pytest.MonkeyPatch.context() as patch:
        for name, value in mock.environ().items():
            patch.setenv(name, value)
        yield mock
