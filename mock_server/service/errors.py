"""The service's error tree: what went wrong with a request, independent of the transport.

Each class is one outcome a client can act on; the HTTP front end maps them onto status codes
(400, 401, 403, 404, 409, 410, 413, 415, 422) and the gRPC one onto status codes. Every error
names the offending `field` when there is one (a JSON path such as `data[2].loss_fn_inputs`),
so a client sees *what* was wrong. Raising one of these never leaves state half-changed.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `message` says what is wrong (expected vs got), `field` where."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class MalformedRequest(ServiceError):
    """The body cannot be read as the request it claims to be (bad JSON, bad protobuf,
    a missing or mistyped field)."""


class InvalidArgument(ServiceError):
    """Well-formed, but semantically invalid (unknown loss, token id outside the vocabulary,
    a shape that does not match, an unsafe checkpoint name)."""


class Unauthenticated(ServiceError):
    """No usable credential. `invalid_token` marks an expired or forged JWT, which the SDK
    answers by fetching a fresh one."""

    def __init__(self, message: str, field: str | None = None, invalid_token: bool = False):
        super().__init__(message, field)
        self.invalid_token = invalid_token


class PermissionDenied(ServiceError):
    """The credential is valid but does not own the session, model or future."""


class NotFound(ServiceError):
    """An unknown session, model, sampler, future or checkpoint."""


class Conflict(ServiceError):
    """The request contradicts an earlier one: the same seq_id with a different body, a
    counter reused for something else, a finished session."""


class Gone(ServiceError):
    """The thing existed but is no longer available: an expired future, a seq_id abandoned
    after a gap timeout, a finished session's heartbeat."""


class PayloadTooLarge(ServiceError):
    """The body (or its decompressed form) exceeds the configured limit."""


class UnsupportedMediaType(ServiceError):
    """The Content-Type or Content-Encoding is not one this endpoint reads."""


class Overloaded(ServiceError):
    """The server already holds as much queued work as it is configured to (429 with
    Retry-After): nothing was accepted or consumed, the same request may be sent again."""

    def __init__(
        self, message: str, field: str | None = None, retry_after_seconds: float = 1.0
    ) -> None:
        super().__init__(message, field)
        self.retry_after_seconds = retry_after_seconds


# The HTTP status of each error class. Both front ends use it: HTTP answers it, gRPC sends it in
# its `tinker-http-status` trailer (so clients raise the same exception class on both).
STATUS: dict[type[ServiceError], int] = {
    MalformedRequest: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidArgument: 422,
    Overloaded: 429,
}


def status_of(error: ServiceError) -> int:
    """The HTTP status of `error` (its nearest listed class), 500 for anything unlisted."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500
