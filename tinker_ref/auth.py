"""Local credential checks, as `tinker.auth` offers them (no request is made).

`get_tinker_token()` is the static key from `$TINKER_API_KEY` (None without one);
`tinker_has_credentials()` says whether a credential can be resolved (a configured
`$TINKER_CREDENTIAL_CMD` counts without running it); `raise_if_tinker_not_accessible()` makes one
request to the service and raises its error. The SDK's stored credentials (`tinker auth login`)
are not read: tinker_ref has no login command.
"""

from __future__ import annotations

import os

from tinker_ref import environment

__all__ = ["get_tinker_token", "raise_if_tinker_not_accessible", "tinker_has_credentials"]


def get_tinker_token() -> str | None:
    """Return the static API key from `$TINKER_API_KEY`, if it holds a usable one.

    Returns:
        str | None: The key (a `tml-` key or a JWT), or None when the variable is unset or
        holds anything else. `$TINKER_CREDENTIAL_CMD` is not run.
    """
    key = os.environ.get("TINKER_API_KEY")
    if not key or not (key.startswith("tml-") or key.startswith("eyJ")):
        return None
    return key


def tinker_has_credentials() -> bool:
    """Say whether a credential can be resolved, without making a request.

    Returns:
        bool: True with a usable `$TINKER_API_KEY`, or with `$TINKER_CREDENTIAL_CMD` set (it is
        not run to check).
    """
    return get_tinker_token() is not None or bool(os.environ.get("TINKER_CREDENTIAL_CMD"))


def raise_if_tinker_not_accessible(base_url: str | None = None, api_key: str | None = None) -> None:
    """Check that the service can be reached with these credentials, by one request.

    Makes one `get_server_capabilities` request, over a RestClient.

    Args:
        base_url: The service's URL; default `$TINKER_BASE_URL`, then the production service.
        api_key: The credential; default `$TINKER_API_KEY`, then `$TINKER_CREDENTIAL_CMD`.

    Raises:
        ConfigurationError: No usable credential.
        APIError: The request failed (e.g. AuthenticationError, APIConnectionError).
    """
    from tinker_ref.rest_client import RestClient

    environment.api_key(api_key)  # ConfigurationError (a TinkerError) without a credential
    RestClient(base_url=base_url, api_key=api_key).get_server_capabilities().result()
