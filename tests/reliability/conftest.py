"""The in-process HTTP mock fixture of the integration tests, shared (one definition)."""

from tests.integration.conftest import make_mock_api

__all__ = ["make_mock_api"]
