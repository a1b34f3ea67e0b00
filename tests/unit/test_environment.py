"""The environment variables SDK 0.38 reads, read the same way (tinker_ref/environment.py)."""

from __future__ import annotations

import pytest

from tinker_ref import environment
from tinker_ref.errors import ConfigurationError, TinkerError

pytestmark = pytest.mark.spec("WIRE-21")


def test_the_key_comes_from_the_argument_then_the_variable_then_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "tml-env")
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", "echo tml-command")
    assert environment.api_key("tml-arg") == "tml-arg"
    assert environment.api_key(None) == "tml-env"
    monkeypatch.delenv("TINKER_API_KEY")
    assert environment.api_key(None) == "tml-command"
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", "echo oops >&2; exit 3")
    with pytest.raises(ConfigurationError, match="exited with 3"):
        environment.api_key(None)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD")
    with pytest.raises(TinkerError, match="TINKER_CREDENTIAL_CMD"):
        environment.api_key(None)
    with pytest.raises(ConfigurationError, match="tml-"):
        environment.api_key("sk-wrong")


def test_project_tags_base_url_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_PROJECT_ID", "proj")
    monkeypatch.setenv("TINKER_TAGS", "b,a,b")
    monkeypatch.setenv("TINKER_BASE_URL", "http://h:1/")
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_ID", "id")
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_SECRET", "secret")
    assert environment.project_id(None) == "proj" and environment.project_id("x") == "x"
    assert environment.tags(()) == ["b", "a"] and environment.tags(["t"]) == ["t"]
    assert (
        environment.base_url(None) == "http://h:1"
        and environment.base_url("http://o") == "http://o"
    )
    assert environment.default_headers() == {
        "CF-Access-Client-Id": "id",
        "CF-Access-Client-Secret": "secret",
    }
    monkeypatch.setenv("TINKER_BASE_URL", "")
    assert environment.base_url(None) == environment.DEFAULT_BASE_URL


def test_top_level_exceptions_are_the_sdks_names() -> None:
    import tinker_ref as tinker

    assert issubclass(tinker.RateLimitError, tinker.APIStatusError)
    assert issubclass(tinker.APIError, tinker.TinkerError)
    assert tinker.BillingError.status_code == 402
    assert tinker.errors.status_error(402, {}).__class__ is tinker.BillingError
