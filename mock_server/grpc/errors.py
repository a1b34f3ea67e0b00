"""The gRPC error model: `ServiceError` classes -> gRPC status codes, with the HTTP status.

One gRPC code per error class, chosen by what a client should do about it (the table and the
reasons are in `training.proto`'s header). The status message is the HTTP error body's
`detail`; the trailing metadata carries what a gRPC code alone cannot: `tinker-http-status`
(the status the same failure has on the HTTP API, so tinker_ref raises the same exception
class on both transports — 400 and 422 are both INVALID_ARGUMENT), `tinker-field` (the bad
field, as in the HTTP body) and `x-should-retry: false` where the HTTP API sends it (409).
"""

from __future__ import annotations

import grpc

from mock_server.service.errors import (
    STATUS,
    Conflict,
    Gone,
    InvalidArgument,
    MalformedRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
    status_of,
)

HTTP_STATUS_KEY = "tinker-http-status"
FIELD_KEY = "tinker-field"
SHOULD_RETRY_KEY = "x-should-retry"

GRPC_CODE: dict[type[ServiceError], grpc.StatusCode] = {
    MalformedRequest: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    # Resending the same request cannot succeed; ABORTED would invite clients to retry it.
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    Gone: grpc.StatusCode.FAILED_PRECONDITION,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Overloaded: grpc.StatusCode.UNAVAILABLE,  # transient: gRPC clients retry UNAVAILABLE
    UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    # Well-formed but wrong (unknown loss, token outside the vocabulary): the argument is the
    # problem, not the server's state, so not FAILED_PRECONDITION.
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
}

Trailers = tuple[tuple[str, str], ...]


def code_of(error: ServiceError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in GRPC_CODE:
            return GRPC_CODE[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def trailers_of(error: ServiceError) -> Trailers:
    trailers: list[tuple[str, str]] = [(HTTP_STATUS_KEY, str(status_of(error)))]
    if error.field is not None:
        trailers.append((FIELD_KEY, _metadata_value(error.field)))
    if isinstance(error, Conflict):
        trailers.append((SHOULD_RETRY_KEY, "false"))
    return tuple(trailers)


def internal_trailers() -> Trailers:
    return ((HTTP_STATUS_KEY, "500"),)


# HTTP statuses without a ServiceError class (injected faults answer any 4xx/5xx): transient
# ones are UNAVAILABLE, as grpc maps 429/502/503/504; the trailer carries the exact status.
_CODE_OF_STATUS = {
    408: grpc.StatusCode.UNAVAILABLE,  # not DEADLINE_EXCEEDED: that is the client's own timeout
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


def code_of_status(status: int) -> grpc.StatusCode:
    """The gRPC code for an HTTP error status: its ServiceError class's code where it has one
    (429 is Overloaded: UNAVAILABLE), else `_CODE_OF_STATUS`, else UNKNOWN."""
    for cls, http_status in STATUS.items():
        if http_status == status:
            return GRPC_CODE[cls]
    return _CODE_OF_STATUS.get(status, grpc.StatusCode.UNKNOWN)


def _metadata_value(text: str) -> str:
    # Metadata values must be printable ASCII; a field path can hold a user's dict key.
    return "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in text)
