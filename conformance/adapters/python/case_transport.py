"""tinker_ref clients that send `X-Conformance-Case` on every request (HTTP header or gRPC
metadata), so the mock can record one case's traffic.

tinker_ref has no public "extra headers" option, so the adapter wraps the transport the
ServiceClient built: every request of either transport passes through one method (`_send` for
HTTP, the per-call metadata for gRPC), and the wrapper adds the header there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tinker_ref
from tinker_ref.transport.grpc import GrpcTransport
from tinker_ref.transport.http import HttpTransport


class _CaseHttpTransport(HttpTransport):
    def __init__(self, base_url: str, api_key: str, header: Mapping[str, str]) -> None:
        super().__init__(base_url, api_key)
        self._case_header = dict(header)

    async def _send(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        kwargs["headers"] = {**self._case_header, **(kwargs.get("headers") or {})}
        return await super()._send(method, path, body, **kwargs)


def tinker_ref_client(
    transport: str, server: Mapping[str, Any], api_key: str, header: Mapping[str, str]
) -> tinker_ref.ServiceClient:
    if transport == "grpc":
        target = server.get("grpc")
        if not target:
            raise RuntimeError("the runner's mock offers no gRPC endpoint (server.grpc is null)")
        client = tinker_ref.ServiceClient(base_url=target, api_key=api_key, transport="grpc")
        grpc_transport = client.transport
        assert isinstance(grpc_transport, GrpcTransport)
        # gRPC metadata keys are lower-case by rule.
        extra = tuple((k.lower(), v) for k, v in header.items())
        grpc_transport._metadata = (*grpc_transport._metadata, *extra)  # type: ignore[assignment]
        return client
    client = tinker_ref.ServiceClient(base_url=server["http"], api_key=api_key)
    client.transport = _CaseHttpTransport(server["http"], api_key, header)
    return client
