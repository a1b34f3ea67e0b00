"""`tinker_mock_module`: one mock for every test of a module, configured by the module's
`pytestmark`, with the official SDK's variables pointing at it while the module runs."""

from __future__ import annotations

import os

import pytest

from mock_server.testing import MockServer
from tinker_ref import ServiceClient

pytestmark = pytest.mark.tinker_mock(seed=5, grpc=True, api_keys=["tml-module"])

_SERVED: list[MockServer] = []  # every server the tests of this module were given


def test_the_module_mark_configures_the_shared_server(tinker_mock_module: MockServer) -> None:
    _SERVED.append(tinker_mock_module)
    assert tinker_mock_module.config.seed == 5
    assert tinker_mock_module.api_key == "tml-module"
    assert os.environ["TINKER_BASE_URL"] == tinker_mock_module.url
    assert os.environ["TINKER_API_KEY"] == "tml-module"
    target = tinker_mock_module.grpc_target
    with ServiceClient(base_url=target, api_key="tml-module", transport="grpc") as service:
        service.create_lora_training_client("tinker-ref/tiny-bytes", rank=4).result()


def test_every_test_of_the_module_gets_the_same_server(tinker_mock_module: MockServer) -> None:
    _SERVED.append(tinker_mock_module)
    assert all(served is tinker_mock_module for served in _SERVED)


def test_a_function_scoped_mock_in_the_same_module_is_a_fresh_server(
    tinker_mock_module: MockServer, tinker_mock: MockServer
) -> None:
    assert tinker_mock.url != tinker_mock_module.url
    assert tinker_mock.config.seed == 5  # the module's mark configures both fixtures
    assert os.environ["TINKER_BASE_URL"] == tinker_mock.url  # the closer scope wins
