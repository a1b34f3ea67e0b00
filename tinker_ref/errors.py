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
        │   ├── BillingError               402
        │   ├── PermissionDeniedError      403
        │   ├── NotFoundError              404
        │   ├── ConflictError              409
        │   ├── RequestTooLargeError       413
        │   ├── UnprocessableEntityError   422
        │   ├── RateLimitError             429
        │   └── InternalServerError        >= 500
        └── RequestFailedError      the request was accepted but its future failed
                                    (`category` is "user", "server" or "unknown")

The names are the official SDK's (`tinker.RateLimitError`, ...), and `tinker_ref` exports them at
top level too, so `except tinker.RateLimitError` keeps working after `import tinker_ref as
tinker`. One difference, kept on purpose: `RequestFailedError` is an `APIError` here (the
service could not do what was asked), where the SDK derives it from `TinkerError` directly, so
`except APIError` also catches failed futures in tinker_ref.
"""

from __future__ import annotations

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
    """The service answered with an error status; `body` is its parsed error body."""

    status_code: int = 0

    def __init__(self, message: str, *, status_code: int, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class BadRequestError(APIStatusError):
    status_code = 400


class AuthenticationError(APIStatusError):
    status_code = 401


class BillingError(APIStatusError):
    """402: the account cannot be billed (the hosted service's answer; the mock never sends
    it)."""

    status_code = 402


class PermissionDeniedError(APIStatusError):
    status_code = 403


class NotFoundError(APIStatusError):
    status_code = 404


class ConflictError(APIStatusError):
    status_code = 409


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
        BillingError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        RequestTooLargeError,
        UnprocessableEntityError,
        RateLimitError,
    )
}


def status_error(status_code: int, body: Any) -> APIStatusError:
    """The APIStatusError subclass for an HTTP status, carrying the parsed body."""
    cls = _STATUS_CLASSES.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(f"Error code: {status_code} - {body}", status_code=status_code, body=body)


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
