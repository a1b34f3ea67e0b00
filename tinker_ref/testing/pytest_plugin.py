"""pytest options for pointing the state machine at any Tinker-compatible backend.

Loaded by the repository's `tests/conftest.py`; elsewhere with
`-p tinker_ref.testing.pytest_plugin`.
The options are all prefixed `--tinker-` so they cannot collide with other plugins:

    --tinker-base-url URL         the backend (HTTP base URL, or host:port with grpc)
    --tinker-api-key KEY          its API key (default: $TINKER_API_KEY)
    --tinker-transport http|grpc  which wire the client speaks (default http)
    --tinker-tolerance T          rtol = atol for logprobs and metrics (default 1e-4)
    --tinker-base-models A,B      base models to train (default: two the backend advertises)
    --tinker-other-api-key KEY    a second key, to check its sessions cannot reach the first's

The `tinker_backend` fixture is a `BackendConfig` for them, or None when no URL was given.
"""

from __future__ import annotations

import os

import pytest

from tinker_ref.testing.stateful import BackendConfig


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tinker", "Tinker backend state machine (tinker_ref.testing)")
    group.addoption("--tinker-base-url", default=None, help="backend to check")
    group.addoption(
        "--tinker-api-key", default=os.environ.get("TINKER_API_KEY"), help="its API key"
    )
    group.addoption("--tinker-transport", default="http", choices=("http", "grpc"))
    group.addoption("--tinker-tolerance", type=float, default=1e-4)
    group.addoption("--tinker-base-models", default="", help="comma-separated base models")
    group.addoption("--tinker-other-api-key", default=None, help="a second key (isolation)")


@pytest.fixture
def tinker_backend(request: pytest.FixtureRequest) -> BackendConfig | None:
    option = request.config.getoption
    base_url = option("--tinker-base-url")
    if not base_url:
        return None
    api_key = option("--tinker-api-key")
    if not api_key:
        raise pytest.UsageError("--tinker-base-url needs --tinker-api-key (or $TINKER_API_KEY)")
    models = tuple(m.strip() for m in option("--tinker-base-models").split(",") if m.strip())
    return BackendConfig(
        base_url=base_url,
        api_key=api_key,
        transport=option("--tinker-transport"),
        tolerance=option("--tinker-tolerance"),
        base_models=models or BackendConfig.base_models,
        other_api_key=option("--tinker-other-api-key"),
    )
