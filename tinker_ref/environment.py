"""The environment variables SDK 0.38 reads, read the same way here.

| variable | effect |
| --- | --- |
| `TINKER_API_KEY` | the API key when `api_key=` is not passed |
| `TINKER_CREDENTIAL_CMD` | without a key: a shell command whose stdout is the credential |
| `TINKER_BASE_URL` | the service URL when `base_url=` is not passed (empty counts as unset) |
| `TINKER_PROJECT_ID` | the session's project when `project_id=` is not passed |
| `TINKER_TAGS` | comma-separated session tags |
| `TINKER_LOG` | `debug` or `info`: tinker_ref's logs on stderr (tinker_ref/logs.py) |
| `CLOUDFLARE_ACCESS_CLIENT_ID` | sent as the `CF-Access-Client-Id` header |
| `CLOUDFLARE_ACCESS_CLIENT_SECRET` | sent as the `CF-Access-Client-Secret` header |

Not read: `TINKER_TELEMETRY` (tinker_ref sends no telemetry, as if it were `0`) and
`TINKER_FEATURE_GATES` (the SDK's internal sampling switches); both are on the surface test's
exclusion list with that reason. Differences, kept on purpose: the credential command runs once,
when the client is created (the SDK runs it again for every fresh token), and `TINKER_TAGS`
keeps the order written (the SDK passes them through a set, in no fixed order).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from tinker_ref.errors import ConfigurationError

DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
CREDENTIAL_COMMAND_TIMEOUT = 60.0  # seconds


def base_url(explicit: str | None) -> str:
    return (explicit or os.environ.get("TINKER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def api_key(explicit: str | None) -> str:
    """The credential: `explicit`, `$TINKER_API_KEY`, else the output of
    `$TINKER_CREDENTIAL_CMD`; it must be a `tml-` key or a JWT."""
    key = explicit or os.environ.get("TINKER_API_KEY")
    if not key:
        command = os.environ.get("TINKER_CREDENTIAL_CMD")
        if command:
            key = _run_credential_command(command)
    if not key:
        raise ConfigurationError(
            "no API key: pass api_key=, set TINKER_API_KEY, or set TINKER_CREDENTIAL_CMD to a "
            "command that prints one"
        )
    if not (key.startswith("tml-") or key.startswith("eyJ")):
        raise ConfigurationError("the api_key must start with 'tml-' (or be a JWT)")
    return key


def _run_credential_command(command: str) -> str:
    try:
        done = subprocess.run(
            command,
            shell=True,  # the SDK runs it through the shell too (create_subprocess_shell)
            capture_output=True,
            text=True,
            timeout=CREDENTIAL_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigurationError(
            f"TINKER_CREDENTIAL_CMD did not finish in {CREDENTIAL_COMMAND_TIMEOUT:.0f} s"
        ) from exc
    credential = done.stdout.strip()
    if done.returncode != 0 or not credential:
        raise ConfigurationError(
            f"TINKER_CREDENTIAL_CMD exited with {done.returncode} and printed no credential: "
            f"{done.stderr.strip()[:200]}"
        )
    return credential


def project_id(explicit: str | None) -> str | None:
    return explicit if explicit is not None else (os.environ.get("TINKER_PROJECT_ID") or None)


def tags(explicit: Sequence[str]) -> list[str]:
    """`explicit` tags (a tinker_ref argument), else `$TINKER_TAGS` split on commas, deduped."""
    if explicit:
        return list(explicit)
    value = os.environ.get("TINKER_TAGS")
    if value is None:
        return []
    return list(dict.fromkeys(value.split(",")))


def default_headers() -> dict[str, str]:
    headers = {}
    if client_id := os.environ.get("CLOUDFLARE_ACCESS_CLIENT_ID"):
        headers["CF-Access-Client-Id"] = client_id
    if client_secret := os.environ.get("CLOUDFLARE_ACCESS_CLIENT_SECRET"):
        headers["CF-Access-Client-Secret"] = client_secret
    return headers
