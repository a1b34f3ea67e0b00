"""pytest plugin shipped with tinker-ref (entry point `pytest11`): the mock as a fixture.

Installing tinker-ref makes three fixtures available to any test suite, with no conftest:

    def test_my_training_loop(tinker_mock):          # fresh server for this test
        service = tinker.ServiceClient()               # reads TINKER_BASE_URL / TINKER_API_KEY
        ...
        assert tinker_mock.losses(model_id)[-1] < tinker_mock.losses(model_id)[0]

- `tinker_mock`: a mock on a free loopback port for one test, with `TINKER_BASE_URL` and
  `TINKER_API_KEY` set for that test (monkeypatch, so they are restored afterwards). Mark a
  test `@pytest.mark.tinker_mock(seed=3, client_config_overrides={...})` to pass
  `ServerConfig` fields, `grpc=True` (gRPC beside HTTP) or `api_keys=[...]` (only those keys,
  each seeing only its own sessions): the arguments of `mock_server.testing.serve`.
- `tinker_mock_module`: one mock for every test of a module, the variables set while the
  module runs; configured by the module's `pytestmark = pytest.mark.tinker_mock(...)` (a mark
  on a single test cannot reach a server its module shares). For tests that share a model or a
  request record, and for hypothesis `@given` tests, which may not use function-scoped fixtures.
- `tinker_mock_session`: one mock for the whole session, the variables set for the session;
  cheaper when tests do not need a clean server (ids and weights then depend on test order).

All yield a `mock_server.testing.MockServer` (URL, request record, weights digests, per-model
loss history). This module imports nothing heavy at load time: pytest loads every installed
plugin in every run, and torch alone takes seconds to import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mock_server.testing import MockServer

MARKER = "tinker_mock"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**overrides): ServerConfig fields (seed=..., client_config_overrides=...), "
        "grpc=True or api_keys=[...] for the tinker_mock and tinker_mock_module fixtures",
    )


@pytest.fixture
def tinker_mock(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MockServer]:
    """A mock server for this test; the official SDK's environment variables point at it."""
    with _serve(_marked_overrides(request.node), monkeypatch) as mock:
        yield mock


@pytest.fixture(scope="module")
def tinker_mock_module(request: pytest.FixtureRequest) -> Iterator[MockServer]:
    """One mock server for every test of this module, configured by the module's `pytestmark`;
    the SDK's variables point at it until the module's last test is done."""
    with (
        pytest.MonkeyPatch.context() as patch,
        _serve(_marked_overrides(request.node), patch) as mock,
    ):
        yield mock


@pytest.fixture(scope="session")
def tinker_mock_session() -> Iterator[MockServer]:
    """One mock server for the whole session; the SDK's variables point at it throughout."""
    with pytest.MonkeyPatch.context() as patch, _serve({}, patch) as mock:
        yield mock


def _marked_overrides(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    """The keyword arguments of the closest `tinker_mock` mark (the test's, else its module's)."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only")
    return dict(marker.kwargs)


@contextmanager
def _serve(overrides: dict[str, Any], patch: pytest.MonkeyPatch) -> Iterator[MockServer]:
    from mock_server.testing import serve

    with serve(**overrides) as mock:
        for name, value in mock.environ().items():
            patch.setenv(name, value)
        yield mock
