"""Credentials: which API keys are accepted, and the JWTs of `pjwt_auth_enabled` mode.

Open mode (no keys file): any key the official SDK itself accepts (`tml-…`) works. Restricted
mode (`--api-keys FILE`, one key per line, `#` comments): only listed keys, and every session,
model and future is visible only to the key that created it. A principal is identified by a
digest of its key, so keys never end up in logs or request records.

`/auth/token` exchanges a key for an HS256 JWT signed with a per-process random secret (not
derived from the server seed: tokens are not part of the deterministic outputs, and a seed
anyone can read must not let them forge one). The SDK decodes `exp`/`iat` without checking
the signature; the server checks both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mock_server.service.errors import Unauthenticated

CREDENTIAL_FIELD = "X-API-Key"


@dataclass(frozen=True)
class Principal:
    identity: str  # "key-<digest>" of the API key; stable across its JWTs


def _identity(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_api_keys(path: Path) -> frozenset[str]:
    keys = set()
    for line in path.read_text().splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.add(key)
    return frozenset(keys)


class Authenticator:
    def __init__(
        self,
        api_keys: Iterable[str] | None,
        jwt_ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = None if api_keys is None else frozenset(api_keys)
        self._identities = (
            None if self._keys is None else frozenset(_identity(k) for k in self._keys)
        )
        self._ttl = jwt_ttl_seconds
        self._clock = clock
        self._secret = secrets.token_bytes(32)

    @property
    def restricted(self) -> bool:
        """True in api-keys mode: resources are visible only to their creator."""
        return self._keys is not None

    def authenticate(self, credential: str | None) -> Principal:
        if not credential:
            raise Unauthenticated("missing API key header", CREDENTIAL_FIELD)
        if credential.startswith("eyJ"):
            return self._verify_jwt(credential)
        if self._keys is None:
            if not credential.startswith("tml-"):
                raise Unauthenticated(
                    "API keys start with 'tml-' (or are a JWT from /api/v1/auth/token)",
                    CREDENTIAL_FIELD,
                )
        elif not any(hmac.compare_digest(credential, key) for key in self._keys):
            raise Unauthenticated("unknown API key", CREDENTIAL_FIELD)
        return Principal(_identity(credential))

    def issue_jwt(self, principal: Principal) -> str:
        now = int(self._clock())
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(
            json.dumps(
                # org_id: the SDK's RestClient.whoami() reads it (tml:organization:<org_id>)
                {"sub": principal.identity, "org_id": "mock", "iat": now, "exp": now + self._ttl}
            ).encode()
        )
        return f"{header}.{payload}.{self._sign(f'{header}.{payload}')}"

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest())

    def _verify_jwt(self, token: str) -> Principal:
        parts = token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(
            self._sign(f"{parts[0]}.{parts[1]}"), parts[2]
        ):
            raise Unauthenticated(
                "JWT signature does not verify", CREDENTIAL_FIELD, invalid_token=True
            )
        try:
            claims = json.loads(_unb64(parts[1]))
            subject, expires = str(claims["sub"]), float(claims["exp"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Unauthenticated(
                f"JWT payload unreadable: {exc}", CREDENTIAL_FIELD, invalid_token=True
            ) from exc
        if expires <= self._clock():
            raise Unauthenticated("JWT has expired", CREDENTIAL_FIELD, invalid_token=True)
        if self._identities is not None and subject not in self._identities:
            raise Unauthenticated(
                "JWT names a key that is no longer accepted", CREDENTIAL_FIELD, invalid_token=True
            )
        return Principal(subject)
