"""RestClient and AdminClient: the REST API of SDK 0.38, without a training session.

    rest = tinker_ref.RestClient(base_url="http://127.0.0.1:8080", api_key="tml-dev")
    run = rest.get_training_run_by_tinker_path("tinker://<run>/weights/step-10").result()
    rest.delete_checkpoint_from_tinker_path("tinker://<run>/weights/step-9").result()

Training runs, checkpoints (list, delete, TTL, publish, external weights URLs, copies), sessions
(read, list, search, project), the sampler registry, `whoami`, and the admin reads (audit log,
billing) — the same endpoints, query parameters and bodies as the SDK (spec WIRE-19), answers
decoded into `tinker_ref.types` records. Every call returns an `APIFuture` (`.result()` or
`await`); the `*_async` twins give the result itself.

A RestClient built from `base_url`/`api_key` uses a process-wide connection per (URL, key), as
the SDK's does: it announces itself once (`client/config`), creates no session, and needs no
closing. `ServiceClient.create_rest_client()` gives one over a connection of its own. REST is
HTTP only: over the gRPC transport this raises ConfigurationError.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import datetime as dt
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tinker_ref import environment
from tinker_ref.errors import ConfigurationError, ExperimentalWarning
from tinker_ref.futures import APIFuture, EventLoopThread
from tinker_ref.transport.http import HttpTransport
from tinker_ref.types import (
    AuditLogResponse,
    BillingUsageResponse,
    CheckpointsListResponse,
    CurrentCheckpointStorageUsageResponse,
    ExternalWeightsUrlsResponse,
    GetSamplerResponse,
    GetServerCapabilitiesResponse,
    GetSessionResponse,
    ListSessionsResponse,
    ModelID,
    ParsedCheckpointTinkerPath,
    SessionSearchRequest,
    SessionSearchResponse,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
    WhoamiResponse,
)

if TYPE_CHECKING:
    from tinker_ref.service_client import ServiceClient

T = TypeVar("T")
AccessScope = Literal["owned", "accessible"]
AuditEventType = Literal["all", "checkpoints", "projects", "teams", "organizations"]
TRACE_EXPORT_POLL_SECONDS = 5.0  # between polls while a trace export is being built


class _Connection:
    """One HTTP transport and the loop it runs on, announced to the service once."""

    def __init__(self, loop: EventLoopThread, transport: HttpTransport) -> None:
        self.loop, self.transport = loop, transport
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self.loop.run(self.transport.start())
                self._started = True

    def close(self) -> None:
        """Release the HTTP connection pool (the loop stays with its owner)."""
        if not self.loop.loop.is_closed():
            self.loop.run(self.transport.close(), timeout=10)


_CONNECTIONS: dict[tuple[str, str], _Connection] = {}
_CONNECTIONS_LOCK = threading.Lock()


@atexit.register
def _close_shared_connections() -> None:
    """The shared connections live as long as the process; close their pools at its exit."""
    with _CONNECTIONS_LOCK:
        for connection in _CONNECTIONS.values():
            try:
                connection.close()
                connection.loop.close()
            except Exception:  # the interpreter is going away; nothing left to report to
                pass
        _CONNECTIONS.clear()


def _shared_connection(base_url: str | None, api_key: str | None) -> _Connection:
    url, key = environment.base_url(base_url), environment.api_key(api_key)
    with _CONNECTIONS_LOCK:
        connection = _CONNECTIONS.get((url, key))
        if connection is None:
            connection = _Connection(
                EventLoopThread("tinker-ref-rest"), _with_headers(HttpTransport(url, key))
            )
            _CONNECTIONS[(url, key)] = connection
    return connection


def _with_headers(transport: HttpTransport) -> HttpTransport:
    transport.default_headers.update(environment.default_headers())
    return transport


def _connection_of(service: ServiceClient) -> _Connection:
    if not isinstance(service.transport, HttpTransport):
        raise ConfigurationError(
            "the REST API needs the HTTP transport; create the ServiceClient with "
            "transport='http' (or construct RestClient(base_url=..., api_key=...))"
        )
    transport = HttpTransport(service.base_url, service.transport._api_key)
    transport.default_headers.update(service.transport.default_headers)
    return _Connection(service.loop, transport)


def _rfc3339(value: dt.datetime | str) -> str:
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    text = moment.isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


class _RestBase:
    def __init__(
        self,
        _holder: ServiceClient | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        if _holder is not None and (base_url is not None or api_key is not None):
            raise ValueError(
                f"{type(self).__name__} takes either a ServiceClient or base_url/api_key, not both"
            )
        self._connection = (
            _connection_of(_holder)
            if _holder is not None
            else _shared_connection(base_url, api_key)
        )
        self._connection.start()

    def _call(self, coroutine: Awaitable[T]) -> APIFuture[T]:
        async def run() -> T:
            return await coroutine

        return self._connection.loop.submit(run())

    def _get(
        self, path: str, decode: Callable[[Any], T], params: Mapping[str, object] | None = None
    ) -> APIFuture[T]:
        request = self._connection.transport.request_json("GET", path, params=params)

        async def run() -> T:
            return decode(await request)

        return self._call(run())

    def _send(self, method: str, path: str, body: Any = None) -> APIFuture[None]:
        request = self._connection.transport.request_json(method, path, body)

        async def run() -> None:
            await request

        return self._call(run())

    def get_telemetry(self) -> None:
        """None: tinker_ref sends no telemetry."""
        return None


def _run_path(training_run_id: str) -> str:
    return f"/training_runs/{training_run_id}"  # as the SDK writes it (ids are URL-safe)


class RestClient(_RestBase):
    """Training runs, checkpoints and sessions over the REST API (see the module docstring)."""

    # ----- service -----

    def get_server_capabilities(self) -> APIFuture[GetServerCapabilitiesResponse]:
        return self._get("/get_server_capabilities", GetServerCapabilitiesResponse.from_json)

    # ----- training runs -----

    def get_training_run(
        self, training_run_id: ModelID, access_scope: AccessScope = "owned"
    ) -> APIFuture[TrainingRun]:
        return self._get(
            _run_path(training_run_id), TrainingRun.from_json, {"access_scope": access_scope}
        )

    async def get_training_run_async(
        self, training_run_id: ModelID, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        return await self.get_training_run(training_run_id, access_scope)

    def get_training_run_by_tinker_path(
        self, tinker_path: str, access_scope: AccessScope = "owned"
    ) -> APIFuture[TrainingRun]:
        """The training run a checkpoint path belongs to (what a resumed run reads)."""
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        return self.get_training_run(parsed.training_run_id, access_scope)

    async def get_training_run_by_tinker_path_async(
        self, tinker_path: str, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        return await self.get_training_run_by_tinker_path(tinker_path, access_scope)

    def get_weights_info_by_tinker_path(self, tinker_path: str) -> APIFuture[WeightsInfoResponse]:
        request = self._connection.transport.request_json(
            "POST", "/weights_info", {"tinker_path": tinker_path}
        )

        async def run() -> WeightsInfoResponse:
            return WeightsInfoResponse.from_json(await request)

        return self._call(run())

    def list_training_runs(
        self,
        limit: int = 20,
        offset: int = 0,
        access_scope: AccessScope = "owned",
        project_id: str | None = None,
    ) -> APIFuture[TrainingRunsResponse]:
        params = {"limit": limit, "offset": offset, "access_scope": access_scope}
        return self._get(
            "/training_runs", TrainingRunsResponse.from_json, params | {"project_id": project_id}
        )

    async def list_training_runs_async(
        self,
        limit: int = 20,
        offset: int = 0,
        access_scope: AccessScope = "owned",
        project_id: str | None = None,
    ) -> TrainingRunsResponse:
        return await self.list_training_runs(limit, offset, access_scope, project_id)

    # ----- checkpoints -----

    def list_checkpoints(self, training_run_id: ModelID) -> APIFuture[CheckpointsListResponse]:
        if not training_run_id:
            raise ValueError("Expected a non-empty value for `model_id`")
        path = f"{_run_path(training_run_id)}/checkpoints"
        return self._get(path, CheckpointsListResponse.from_json)

    async def list_checkpoints_async(self, training_run_id: ModelID) -> CheckpointsListResponse:
        return await self.list_checkpoints(training_run_id)

    def list_user_checkpoints(
        self, limit: int = 100, offset: int = 0
    ) -> APIFuture[CheckpointsListResponse]:
        params = {"limit": limit, "offset": offset}
        return self._get("/checkpoints", CheckpointsListResponse.from_json, params)

    async def list_user_checkpoints_async(
        self, limit: int = 100, offset: int = 0
    ) -> CheckpointsListResponse:
        return await self.list_user_checkpoints(limit, offset)

    def get_external_weights_urls(self, tinker_path: str) -> APIFuture[ExternalWeightsUrlsResponse]:
        """One download URL per file of an export (`save_weights_external`)."""
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        if not parsed.checkpoint_id.startswith("external_weights/"):
            raise ValueError(
                "get_external_weights_urls only accepts external weights checkpoints "
                f"(tinker://<training_run_id>/external_weights/<name>), got {tinker_path!r}"
            )
        path = (
            f"{_run_path(parsed.training_run_id)}/checkpoints/{parsed.checkpoint_id}"
            "/external_weights_urls"
        )
        return self._get(path, ExternalWeightsUrlsResponse.from_json)

    async def get_external_weights_urls_async(
        self, tinker_path: str
    ) -> ExternalWeightsUrlsResponse:
        return await self.get_external_weights_urls(tinker_path)

    def delete_checkpoint(self, training_run_id: ModelID, checkpoint_id: str) -> APIFuture[None]:
        """Delete `<kind>/<name>` of a training run (e.g. "weights/step-9")."""
        return self._send("DELETE", f"{_run_path(training_run_id)}/checkpoints/{checkpoint_id}")

    async def delete_checkpoint_async(self, training_run_id: ModelID, checkpoint_id: str) -> None:
        return await self.delete_checkpoint(training_run_id, checkpoint_id)

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        return self.delete_checkpoint(parsed.training_run_id, parsed.checkpoint_id)

    async def delete_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.delete_checkpoint_from_tinker_path(tinker_path)

    def _checkpoint_path(self, tinker_path: str) -> str:
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        return f"{_run_path(parsed.training_run_id)}/checkpoints/{parsed.checkpoint_id}"

    def publish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        return self._send("POST", f"{self._checkpoint_path(tinker_path)}/publish")

    async def publish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.publish_checkpoint_from_tinker_path(tinker_path)

    def unpublish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        return self._send("DELETE", f"{self._checkpoint_path(tinker_path)}/publish")

    async def unpublish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.unpublish_checkpoint_from_tinker_path(tinker_path)

    def set_checkpoint_ttl_from_tinker_path(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> APIFuture[None]:
        """Expire the checkpoint `ttl_seconds` from now (3600 s .. 10 years); None: never."""
        path = f"{self._checkpoint_path(tinker_path)}/ttl"
        return self._send("PUT", path, {"ttl_seconds": ttl_seconds})

    async def set_checkpoint_ttl_from_tinker_path_async(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> None:
        return await self.set_checkpoint_ttl_from_tinker_path(tinker_path, ttl_seconds)

    def copy_weights(
        self,
        path: str,
        destination_project_id: str | None = None,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
    ) -> APIFuture[str]:
        """Copy weights into a project (default `$TINKER_PROJECT_ID`); the copy's path."""
        project = environment.project_id(destination_project_id)
        if project is None:
            raise ValueError("Provide destination_project_id or set TINKER_PROJECT_ID")
        body: dict[str, Any] = {"destination_project_id": project, "source_path": path}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        headers = (
            {"X-Tinker-Weights-Access-Token": weights_access_token}
            if weights_access_token is not None
            else None
        )
        request = self._connection.transport.request_json(
            "POST", "/copy_weights", body, headers=headers
        )

        async def run() -> str:
            return str((await request)["tinker_path"])

        return self._call(run())

    async def copy_weights_async(
        self,
        path: str,
        destination_project_id: str | None = None,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
    ) -> str:
        return await self.copy_weights(
            path,
            destination_project_id,
            ttl_seconds=ttl_seconds,
            weights_access_token=weights_access_token,
        )

    # ----- sessions and samplers -----

    def get_session(
        self, session_id: str, access_scope: AccessScope = "owned"
    ) -> APIFuture[GetSessionResponse]:
        return self._get(
            f"/sessions/{session_id}", GetSessionResponse.from_json, {"access_scope": access_scope}
        )

    async def get_session_async(
        self, session_id: str, access_scope: AccessScope = "owned"
    ) -> GetSessionResponse:
        return await self.get_session(session_id, access_scope)

    def list_sessions(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> APIFuture[ListSessionsResponse]:
        params = {"limit": limit, "offset": offset, "access_scope": access_scope}
        return self._get("/sessions", ListSessionsResponse.from_json, params)

    async def list_sessions_async(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> ListSessionsResponse:
        return await self.list_sessions(limit, offset, access_scope)

    def assign_session_project(self, session_id: str, project_id: str) -> APIFuture[None]:
        return self._send("PUT", f"/sessions/{session_id}/project", {"project_id": project_id})

    async def assign_session_project_async(self, session_id: str, project_id: str) -> None:
        return await self.assign_session_project(session_id, project_id)

    def search_sessions(self, request: SessionSearchRequest) -> APIFuture[SessionSearchResponse]:
        """Experimental in SDK 0.38 (warns `ExperimentalWarning`, as the SDK does)."""
        import warnings

        warnings.warn(
            "RestClient.search_sessions is experimental: it may change or be removed in any "
            "release without a deprecation period.",
            ExperimentalWarning,
            stacklevel=2,
        )
        body = request.to_json()
        body.setdefault("user_metadata", {})  # the SDK's model_dump keeps the empty default
        transport = self._connection.transport
        call = transport.request_json("POST", "/sessions/search", body)

        async def run() -> SessionSearchResponse:
            return SessionSearchResponse.from_json(await call)

        return self._call(run())

    def export_session_trace(self, session_id: str) -> APIFuture[str]:
        """The download URL of the session's trace, once the service has built it."""
        transport = self._connection.transport

        async def run() -> str:
            while True:
                answer = await transport.request_json("GET", f"/sessions/{session_id}/trace_export")
                status = answer.get("status") if isinstance(answer, dict) else None
                if status == "ready":
                    return str(answer["url"])
                if status == "failed":
                    raise RuntimeError(
                        f"Trace export failed for session {session_id}: {answer.get('error')}"
                    )
                await asyncio.sleep(TRACE_EXPORT_POLL_SECONDS)

        return self._call(run())

    async def export_session_trace_async(self, session_id: str) -> str:
        return await self.export_session_trace(session_id)

    def get_sampler(self, sampler_id: str) -> APIFuture[GetSamplerResponse]:
        return self._get(f"/samplers/{sampler_id}", GetSamplerResponse.from_json)

    async def get_sampler_async(self, sampler_id: str) -> GetSamplerResponse:
        return await self.get_sampler(sampler_id)

    def whoami(self) -> APIFuture[WhoamiResponse]:
        """The caller's identity, from the JWT of JWT auth (`client/config` turns it on)."""
        transport = self._connection.transport

        async def run() -> WhoamiResponse:
            token = await transport.identity_jwt()
            if token is None:
                raise RuntimeError(
                    "whoami requires JWT auth, but the server has it disabled and the "
                    "credential is a plain API key."
                )
            claims = _jwt_claims(token)
            return WhoamiResponse(
                user_urn=str(claims["sub"]),
                org_urn=f"tml:organization:{claims['org_id']}",
                email=claims.get("email") or None,
            )

        return self._call(run())

    # ----- admin reads (deprecated on RestClient in SDK 0.38: use AdminClient) -----

    def _admin(self) -> AdminClient:
        admin = AdminClient.__new__(AdminClient)
        admin._connection = self._connection
        return admin

    def get_audit_log(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> APIFuture[AuditLogResponse]:
        return self._admin().get_audit_log(event_type, day)

    async def get_audit_log_async(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> AuditLogResponse:
        return await self.get_audit_log(event_type, day)

    def get_billing_usage(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> APIFuture[BillingUsageResponse]:
        return self._admin().get_billing_usage(starting_on, ending_before)

    async def get_billing_usage_async(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> BillingUsageResponse:
        return await self.get_billing_usage(starting_on, ending_before)

    def get_current_checkpoint_storage_usage(
        self, project_id: str | None = None
    ) -> APIFuture[CurrentCheckpointStorageUsageResponse]:
        return self._admin().get_current_checkpoint_storage_usage(project_id)

    async def get_current_checkpoint_storage_usage_async(
        self, project_id: str | None = None
    ) -> CurrentCheckpointStorageUsageResponse:
        return await self.get_current_checkpoint_storage_usage(project_id)


class AdminClient(_RestBase):
    """Audit log and billing reads (the mock answers them empty: it bills nothing)."""

    def get_audit_log(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> APIFuture[AuditLogResponse]:
        params: dict[str, object] = {"event_type": event_type}
        if day is not None:
            params["day"] = day.isoformat()
        return self._get("/audit", AuditLogResponse.from_json, params)

    async def get_audit_log_async(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> AuditLogResponse:
        return await self.get_audit_log(event_type, day)

    def get_billing_usage(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> APIFuture[BillingUsageResponse]:
        params = {"starting_on": _rfc3339(starting_on), "ending_before": _rfc3339(ending_before)}
        return self._get("/billing/usage/events", BillingUsageResponse.from_json, params)

    async def get_billing_usage_async(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> BillingUsageResponse:
        return await self.get_billing_usage(starting_on, ending_before)

    def get_current_checkpoint_storage_usage(
        self, project_id: str | None = None
    ) -> APIFuture[CurrentCheckpointStorageUsageResponse]:
        return self._get(
            "/billing/usage/checkpoints/current",
            CurrentCheckpointStorageUsageResponse.from_json,
            {"project_id": project_id},
        )

    async def get_current_checkpoint_storage_usage_async(
        self, project_id: str | None = None
    ) -> CurrentCheckpointStorageUsageResponse:
        return await self.get_current_checkpoint_storage_usage(project_id)


def _jwt_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError) as exc:
        raise ValueError(f"Failed to parse JWT claims: {exc}") from exc
    return claims
