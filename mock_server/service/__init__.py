"""The transport-neutral service layer of the mock server.

Front ends (HTTP in `mock_server.http`, gRPC in `mock_server.grpc`, one service behind both)
decode a request into a typed value from `requests`, call `TinkerService`, and encode the typed
result from `results`; errors are the `errors` tree. Modules: `config` (ServerConfig),
`service` (the facade: `TinkerService`, `.training`, `.sampling`), `operation` (what every
state-changing call is: an `Operation` value with validate / run / finish), `admission` (the
kinds of op: how one is deduplicated, ordered and answered), the operations themselves
(`training_ops`, `creation_ops`, `session_ops`, `sampling_ops`), `journal` (crash safety: the
submitted ops, replayed on start), `sequencer` (seq_id ordering and dedupe), `futures` (the
future store and long-poll), `state` (sessions, models, samplers, losses), `checkpoints`
(addresses and on-disk layout), `auth` (API keys, JWTs), `ids` (deterministic identifiers),
`records` (what the server received, for tests), `convert` / `fingerprint` / `validation`
(helpers). Nothing here imports a web framework or a wire codec.
"""

from typing import TYPE_CHECKING

from mock_server._lazy import lazy_exports
from mock_server.service.config import ConfigError, ServerConfig
from mock_server.service.errors import (
    Conflict,
    Gone,
    InvalidArgument,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from mock_server.service.service import TinkerService

# TinkerService (and with it the engine and torch) is imported on first use, so the CLI reads
# a ServerConfig and binds its ports before paying for torch (mock_server/cli.py).
__getattr__ = lazy_exports(__name__, {"TinkerService": "service"})

__all__ = [
    "ConfigError",
    "Conflict",
    "Gone",
    "InvalidArgument",
    "MalformedRequest",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ServerConfig",
    "ServiceError",
    "TinkerService",
    "Unauthenticated",
    "UnsupportedMediaType",
]
