"""`with tinker_ref.mock.serve(seed=0) as mock:` — the offline mock server, for non-pytest code.

    import tinker_ref.mock

    with tinker_ref.mock.serve(seed=0) as mock:
        client = tinker_ref.ServiceClient(base_url=mock.url, api_key=mock.api_key)
        ...

A convenience door into `mock_server` (installed with tinker-ref): it imports the server only
when called, so `import tinker_ref` stays free of server code and a client-only user never
loads it. The yielded object is a `mock_server.testing.MockServer` (URL, API key, request
record, weights digests, loss history); pytest users get the same from the `tinker_mock`
fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mock_server.testing import MockServer

__all__ = ["serve"]


@contextmanager
def serve(seed: int = 0, **overrides: Any) -> Iterator[MockServer]:
    """Run a mock server on a free loopback port for the `with` block.

    `seed` is the server seed (base weights, ids and default sampling seeds derive from it);
    `overrides` are `mock_server.service.ServerConfig` fields, e.g.
    `client_config_overrides={"fwdbwd_max_chunk_len": 2}`, `grpc=True` (gRPC beside HTTP, at
    `mock.grpc_target`) or `api_keys=[...]` (only those keys): see `mock_server.testing.serve`.
    """
    from mock_server.testing import serve as serve_mock

    with serve_mock(seed=seed, **overrides) as mock:
        yield mock
