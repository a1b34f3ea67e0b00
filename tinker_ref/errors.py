"""The one exception tree of tinker_ref.

Transports translate everything they meet (aiohttp and grpc errors, HTTP statuses, failed
futures) into these classes at the edge, so user code catches tinker_ref errors only:

    TinkerRefError (also exported as TinkerError, the official SDK's name)
    ├── ConfigurationError          bad api key, base URL, transport name
    ├── CustomLossError             the user's loss function misbehaved (ValueError too)
    ├── ClientPoisonedError         an earlier op of this TrainingClient failed; it cannot go on
    └── APIError                    the service could not do what was asked
        ├── APIConnectionError      no HTTP/gRPC answer (connection refused, reset, DNS)
        │   └── APITimeoutError     no answer in time
        ├── APIResponseValidationError  a 2xx answer whose body is not what the API promises
        ├── APIStatusError          an HTTP status >= 400 / a gRPC error status
        │   ├── BadRequestError            400
        │   ├── AuthenticationError        401
        │   ├── PaymentRequiredError       402 (also BillingError, the SDK's name; the client
        │   │                                   pauses before giving up)
        │   ├── PermissionDeniedError      403
        │   ├── NotFoundError              404
        │   ├── ConflictError              409
        │   ├── GoneError                  410
        │   ├── RequestTooLargeError       413
        │   ├── UnprocessableEntityError   422
        │   ├── RateLimitError             429
        │   └── InternalServerError        >= 500
        ├── RequestFailedError      the request was accepted but its future failed
        │                           (`category` is "user", "server" or "unknown")
        └── SessionGoneError        the service ended the client's session (its heartbeat got
                                    410): its models and pending requests are gone

An APIStatusError keeps the answer's headers (gRPC: trailing metadata) in `headers`, lower-cased:
the retry policy (tinker_ref/retry.py) reads `retry-after` and `x-should-retry` there.

The names are the official SDK's (`tinker.RateLimitError`, ...), and `tinker_ref` exports them at
top level too, so `except tinker.RateLimitError` keeps working after `import tinker_ref as
tinker`. One difference, kept on purpose: `RequestFailedError` is an `APIError` here (the
service could not do what was asked), where the SDK derives it from `TinkerError` directly, so
`except APIError` also catches failed futures in tinker_ref.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TinkerRefError(Exception):
    """Base class of every error tinker_ref raises on purpose."""


class ConfigurationError(TinkerRefError, ValueError):
    """The client was configured wrongly (api key, base URL, transport)."""


class CustomLossError(TinkerRefError, ValueError):
    """A custom loss function returned something unusable (non-scalar loss, missing gradient,
    non-numeric metric)."""


class ClientPoisonedError(TinkerRefError, RuntimeError):
    """A previous request of this TrainingClient failed; its reserved seq_ids can never be
    filled, so no later request can run. Create a new client (e.g. from a checkpoint)."""


# The official SDK's name for the root of the tree (`tinker.TinkerError`).
TinkerError = TinkerRefError


class APIError(TinkerRefError):
    """The service could not do what was asked."""


class APIConnectionError(APIError):
    """No answer: the connection failed or broke."""


class APITimeoutError(APIConnectionError):
    """No answer in time."""


class APIStatusError(APIError):
    """The service answered with an error status; `body` is its parsed error body (None when
    the answer had none), `headers` its headers with lower-cased names."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class PaymentRequiredError(APIStatusError):
    """402: the account cannot be billed (the hosted service's answer; the mock sends it only
    as an injected fault). The retry policy pauses on it before giving up (retry.py)."""

    status_code = 402


# The official SDK's name for the 402 error (`tinker.BillingError`).
BillingError = PaymentRequiredError


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


class GoneError(APIStatusError):
    status_code = 410


class RequestTooLargeError(APIStatusError):
    status_code = 413


class UnprocessableEntityError(APIStatusError):
    status_code = 422


class RateLimitError(APIStatusError):
    status_code = 429


class InternalServerError(APIStatusError):
    status_code = 500


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    cls.status_code: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PaymentRequiredError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        GoneError,
        RequestTooLargeError,
        UnprocessableEntityError,
        RateLimitError,
    )
}


def status_error(
    status_code: int, body: Any, headers: Mapping[str, str] | None = None
) -> APIStatusError:
    """The APIStatusError subclass for an HTTP status, carrying the parsed body and headers."""
    cls = _STATUS_CLASSES.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(
        f"Error code: {status_code} - {body}", status_code=status_code, body=body, headers=headers
    )


class APIResponseValidationError(APIError):
    """The service answered 2xx with a body that lacks what the API promises."""

    def __init__(self, message: str, *, status_code: int = 200, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ExperimentalWarning(FutureWarning):
    """Emitted by calls whose API may change in any release (the SDK's
    `tinker.ExperimentalWarning`, e.g. `RestClient.search_sessions`)."""


class RequestFailedError(APIError):
    """An accepted request whose future completed as failed."""

    def __init__(self, message: str, *, request_id: str, category: str) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.category = category


class SessionGoneError(APIError):
    """The service ended this client's session (its heartbeat was answered 410: finished or
    expired for idleness). Its models and sampling sessions are gone, so every request of the
    client still waiting, and every later one, fails with this error."""

    def __init__(self, message: str, *, session_id: str) -> None:
        super().__init__(message)
        self.session_id = session_id
