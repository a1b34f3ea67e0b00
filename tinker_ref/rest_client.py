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
        """Return None: tinker_ref sends no telemetry."""
        return None


def _run_path(training_run_id: str) -> str:
    return f"/training_runs/{training_run_id}"  # as the SDK writes it (ids are URL-safe)


class RestClient(_RestBase):
    """Training runs, checkpoints and sessions over the REST API, without a training session.

    Every call returns an APIFuture (`.result()` or `await`); the `*_async` twins give the
    result itself. A failed call's future raises an APIError: an APIStatusError subclass
    (NotFoundError, PermissionDeniedError, ...) for an error answer, APIConnectionError when no
    answer came. Built from `base_url`/`api_key`, it shares one connection per (URL, key) in
    the process and needs no closing; `ServiceClient.create_rest_client()` gives one over that
    client's connection. HTTP only.

    Args:
        base_url: The service's URL; default `$TINKER_BASE_URL`, then the production service.
        api_key: The credential; default `$TINKER_API_KEY`, then `$TINKER_CREDENTIAL_CMD`.

    Raises:
        ConfigurationError: No usable API key (or a ServiceClient on the gRPC transport).

    Example:
        >>> rest = RestClient(base_url="http://127.0.0.1:8080", api_key="tml-dev")
        >>> run = rest.get_training_run_by_tinker_path("tinker://<run>/weights/step-10").result()
    """

    # ----- service -----

    def get_server_capabilities(self) -> APIFuture[GetServerCapabilitiesResponse]:
        """Ask the service which models it serves.

        Returns:
            APIFuture[GetServerCapabilitiesResponse]: The supported models and their limits.
        """
        return self._get("/get_server_capabilities", GetServerCapabilitiesResponse.from_json)

    # ----- training runs -----

    def get_training_run(
        self, training_run_id: ModelID, access_scope: AccessScope = "owned"
    ) -> APIFuture[TrainingRun]:
        """Read one training run: its base model, owner, LoRA rank and latest checkpoints.

        Args:
            training_run_id: The run's id (a training client's `model_id`).
            access_scope: "owned" (the caller's runs) or "accessible" (shared ones too).

        Returns:
            APIFuture[TrainingRun]: The run.
        """
        return self._get(
            _run_path(training_run_id), TrainingRun.from_json, {"access_scope": access_scope}
        )

    async def get_training_run_async(
        self, training_run_id: ModelID, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        """Async version of `get_training_run`.

        Returns:
            TrainingRun: The answer itself (not a future).
        """
        return await self.get_training_run(training_run_id, access_scope)

    def get_training_run_by_tinker_path(
        self, tinker_path: str, access_scope: AccessScope = "owned"
    ) -> APIFuture[TrainingRun]:
        """Read the training run a checkpoint path belongs to (what a resumed run reads).

        Args:
            tinker_path: A checkpoint's `tinker://<run>/<kind>/<name>` path.
            access_scope: "owned" or "accessible", as in `get_training_run`.

        Returns:
            APIFuture[TrainingRun]: The run.

        Raises:
            ValueError: `tinker_path` is not a checkpoint's tinker path.
        """
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        return self.get_training_run(parsed.training_run_id, access_scope)

    async def get_training_run_by_tinker_path_async(
        self, tinker_path: str, access_scope: AccessScope = "owned"
    ) -> TrainingRun:
        """Async version of `get_training_run_by_tinker_path`.

        Returns:
            TrainingRun: The answer itself (not a future).
        """
        return await self.get_training_run_by_tinker_path(tinker_path, access_scope)

    def get_weights_info_by_tinker_path(self, tinker_path: str) -> APIFuture[WeightsInfoResponse]:
        """Describe the weights at a tinker path: base model, LoRA rank, optimizer.

        Args:
            tinker_path: The weights' `tinker://` path.

        Returns:
            APIFuture[WeightsInfoResponse]: What the weights are.
        """
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
        """List training runs, a page at a time.

        Args:
            limit: The page's size.
            offset: How many runs to skip.
            access_scope: "owned" (the caller's runs) or "accessible" (shared ones too).
            project_id: Only this project's runs; None: every project's.

        Returns:
            APIFuture[TrainingRunsResponse]: The page of runs and its cursor.
        """
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
        """Async version of `list_training_runs`.

        Returns:
            TrainingRunsResponse: The answer itself (not a future).
        """
        return await self.list_training_runs(limit, offset, access_scope, project_id)

    # ----- checkpoints -----

    def list_checkpoints(self, training_run_id: ModelID) -> APIFuture[CheckpointsListResponse]:
        """List one training run's checkpoints.

        Args:
            training_run_id: The run's id.

        Returns:
            APIFuture[CheckpointsListResponse]: Its checkpoints.

        Raises:
            ValueError: `training_run_id` is empty.
        """
        if not training_run_id:
            raise ValueError("Expected a non-empty value for `model_id`")
        path = f"{_run_path(training_run_id)}/checkpoints"
        return self._get(path, CheckpointsListResponse.from_json)

    async def list_checkpoints_async(self, training_run_id: ModelID) -> CheckpointsListResponse:
        """Async version of `list_checkpoints`.

        Returns:
            CheckpointsListResponse: The answer itself (not a future).
        """
        return await self.list_checkpoints(training_run_id)

    def list_user_checkpoints(
        self, limit: int = 100, offset: int = 0
    ) -> APIFuture[CheckpointsListResponse]:
        """List the caller's checkpoints across all training runs, a page at a time.

        Args:
            limit: The page's size.
            offset: How many checkpoints to skip.

        Returns:
            APIFuture[CheckpointsListResponse]: The page and the paging cursor.
        """
        params = {"limit": limit, "offset": offset}
        return self._get("/checkpoints", CheckpointsListResponse.from_json, params)

    async def list_user_checkpoints_async(
        self, limit: int = 100, offset: int = 0
    ) -> CheckpointsListResponse:
        """Async version of `list_user_checkpoints`.

        Returns:
            CheckpointsListResponse: The answer itself (not a future).
        """
        return await self.list_user_checkpoints(limit, offset)

    def get_external_weights_urls(self, tinker_path: str) -> APIFuture[ExternalWeightsUrlsResponse]:
        """Get one download URL per file of a weights export (`save_weights_external`).

        Args:
            tinker_path: The export's `tinker://<run>/external_weights/<name>` path.

        Returns:
            APIFuture[ExternalWeightsUrlsResponse]: The files' URLs.

        Raises:
            ValueError: `tinker_path` is not an external weights checkpoint.
        """
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
        """Async version of `get_external_weights_urls`.

        Returns:
            ExternalWeightsUrlsResponse: The answer itself (not a future).
        """
        return await self.get_external_weights_urls(tinker_path)

    def delete_checkpoint(self, training_run_id: ModelID, checkpoint_id: str) -> APIFuture[None]:
        """Delete one checkpoint of a training run.

        Args:
            training_run_id: The run's id.
            checkpoint_id: `<kind>/<name>`, e.g. "weights/step-9".

        Returns:
            APIFuture[None]: Done once the service has deleted it.
        """
        return self._send("DELETE", f"{_run_path(training_run_id)}/checkpoints/{checkpoint_id}")

    async def delete_checkpoint_async(self, training_run_id: ModelID, checkpoint_id: str) -> None:
        """Async version of `delete_checkpoint`: returns once it is done."""
        return await self.delete_checkpoint(training_run_id, checkpoint_id)

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        """Delete the checkpoint at a tinker path.

        Args:
            tinker_path: The checkpoint's `tinker://<run>/<kind>/<name>` path.

        Returns:
            APIFuture[None]: Done once the service has deleted it.

        Raises:
            ValueError: `tinker_path` is not a checkpoint's tinker path.
        """
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        return self.delete_checkpoint(parsed.training_run_id, parsed.checkpoint_id)

    async def delete_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        """Async version of `delete_checkpoint_from_tinker_path`: returns once it is done."""
        return await self.delete_checkpoint_from_tinker_path(tinker_path)

    def _checkpoint_path(self, tinker_path: str) -> str:
        parsed = ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
        return f"{_run_path(parsed.training_run_id)}/checkpoints/{parsed.checkpoint_id}"

    def publish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        """Publish a checkpoint, so that other users can read it.

        Args:
            tinker_path: The checkpoint's `tinker://` path.

        Returns:
            APIFuture[None]: Done once it is public.

        Raises:
            ValueError: `tinker_path` is not a checkpoint's tinker path.
        """
        return self._send("POST", f"{self._checkpoint_path(tinker_path)}/publish")

    async def publish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        """Async version of `publish_checkpoint_from_tinker_path`: returns once it is done."""
        return await self.publish_checkpoint_from_tinker_path(tinker_path)

    def unpublish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        """Undo `publish_checkpoint_from_tinker_path`: make the checkpoint private again.

        Args:
            tinker_path: The published checkpoint's path.

        Returns:
            APIFuture[None]: Done once the service has made it private.

        Raises:
            ValueError: Not a checkpoint's tinker path (checked before anything is sent).
        """
        return self._send("DELETE", f"{self._checkpoint_path(tinker_path)}/publish")

    async def unpublish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        """Async version of `unpublish_checkpoint_from_tinker_path`: returns once it is done."""
        return await self.unpublish_checkpoint_from_tinker_path(tinker_path)

    def set_checkpoint_ttl_from_tinker_path(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> APIFuture[None]:
        """Set when a checkpoint expires.

        Args:
            tinker_path: The checkpoint's `tinker://` path.
            ttl_seconds: Expire it this many seconds from now (3600 s to 10 years); None: never.

        Returns:
            APIFuture[None]: Done once the service has recorded it.

        Raises:
            ValueError: `tinker_path` is not a checkpoint's tinker path.
        """
        path = f"{self._checkpoint_path(tinker_path)}/ttl"
        return self._send("PUT", path, {"ttl_seconds": ttl_seconds})

    async def set_checkpoint_ttl_from_tinker_path_async(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> None:
        """Async version of `set_checkpoint_ttl_from_tinker_path`: returns once it is done."""
        return await self.set_checkpoint_ttl_from_tinker_path(tinker_path, ttl_seconds)

    def copy_weights(
        self,
        path: str,
        destination_project_id: str | None = None,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
    ) -> APIFuture[str]:
        """Copy weights into a project.

        Args:
            path: The tinker path of the weights to copy.
            destination_project_id: The project; default `$TINKER_PROJECT_ID`.
            ttl_seconds: Seconds until the copy expires; None: it never does.
            weights_access_token: A token for another owner's weights.

        Returns:
            APIFuture[str]: The copy's tinker path.

        Raises:
            ValueError: No project: neither `destination_project_id` nor `$TINKER_PROJECT_ID`.
        """
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
        """Async version of `copy_weights`.

        Returns:
            str: The answer itself (not a future).
        """
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
        """Read one session: the ids of its training runs and samplers, its metadata.

        Args:
            session_id: The session's id.
            access_scope: "owned" or "accessible", as in `get_training_run`.

        Returns:
            APIFuture[GetSessionResponse]: The session.
        """
        return self._get(
            f"/sessions/{session_id}", GetSessionResponse.from_json, {"access_scope": access_scope}
        )

    async def get_session_async(
        self, session_id: str, access_scope: AccessScope = "owned"
    ) -> GetSessionResponse:
        """Async version of `get_session`.

        Returns:
            GetSessionResponse: The answer itself (not a future).
        """
        return await self.get_session(session_id, access_scope)

    def list_sessions(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> APIFuture[ListSessionsResponse]:
        """List sessions, a page at a time.

        Args:
            limit: The page's size.
            offset: How many sessions to skip.
            access_scope: "owned" (the caller's sessions) or "accessible".

        Returns:
            APIFuture[ListSessionsResponse]: The page's session ids.
        """
        params = {"limit": limit, "offset": offset, "access_scope": access_scope}
        return self._get("/sessions", ListSessionsResponse.from_json, params)

    async def list_sessions_async(
        self, limit: int = 20, offset: int = 0, access_scope: AccessScope = "owned"
    ) -> ListSessionsResponse:
        """Async version of `list_sessions`.

        Returns:
            ListSessionsResponse: The answer itself (not a future).
        """
        return await self.list_sessions(limit, offset, access_scope)

    def assign_session_project(self, session_id: str, project_id: str) -> APIFuture[None]:
        """Assign a session to a project.

        Args:
            session_id: The session's id.
            project_id: The project's id.

        Returns:
            APIFuture[None]: Done once the service has recorded it.
        """
        return self._send("PUT", f"/sessions/{session_id}/project", {"project_id": project_id})

    async def assign_session_project_async(self, session_id: str, project_id: str) -> None:
        """Async version of `assign_session_project`: returns once it is done."""
        return await self.assign_session_project(session_id, project_id)

    def search_sessions(self, request: SessionSearchRequest) -> APIFuture[SessionSearchResponse]:
        """Search sessions by id, project, metadata, name, owner or status.

        Experimental in SDK 0.38: warns ExperimentalWarning, as the SDK does, since it may
        change in any release.

        Args:
            request: The search's filters and page.

        Returns:
            APIFuture[SessionSearchResponse]: The matching sessions.
        """
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
        """Get the download URL of a session's trace, once the service has built it.

        Polls every 5 s while the export is being built.

        Args:
            session_id: The session's id.

        Returns:
            APIFuture[str]: The trace's download URL.

        Raises:
            RuntimeError: From the future: the service reports that the export failed.
        """
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
        """Async version of `export_session_trace`.

        Returns:
            str: The answer itself (not a future).
        """
        return await self.export_session_trace(session_id)

    def get_sampler(self, sampler_id: str) -> APIFuture[GetSamplerResponse]:
        """Read one sampler: its base model and the weights path it samples from.

        Args:
            sampler_id: The sampling session's id.

        Returns:
            APIFuture[GetSamplerResponse]: The sampler.
        """
        return self._get(f"/samplers/{sampler_id}", GetSamplerResponse.from_json)

    async def get_sampler_async(self, sampler_id: str) -> GetSamplerResponse:
        """Async version of `get_sampler`.

        Returns:
            GetSamplerResponse: The answer itself (not a future).
        """
        return await self.get_sampler(sampler_id)

    def whoami(self) -> APIFuture[WhoamiResponse]:
        """Return the caller's identity, read from the JWT of JWT auth.

        Returns:
            APIFuture[WhoamiResponse]: The user and organization URNs and the email.

        Raises:
            RuntimeError: From the future: the service has JWT auth off and the credential is a
                plain API key.
            ValueError: From the future: the JWT's claims cannot be parsed.
        """
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
        """Read the audit log (deprecated here in SDK 0.38: use `AdminClient.get_audit_log`).

        Args:
            event_type: As in `AdminClient.get_audit_log`.
            day: As in `AdminClient.get_audit_log`.

        Returns:
            APIFuture[AuditLogResponse]: The events.
        """
        return self._admin().get_audit_log(event_type, day)

    async def get_audit_log_async(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> AuditLogResponse:
        """Async version of `get_audit_log`.

        Returns:
            AuditLogResponse: The answer itself (not a future).
        """
        return await self.get_audit_log(event_type, day)

    def get_billing_usage(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> APIFuture[BillingUsageResponse]:
        """Read billing usage (deprecated here in SDK 0.38: use `AdminClient.get_billing_usage`).

        Args:
            starting_on: As in `AdminClient.get_billing_usage`.
            ending_before: As in `AdminClient.get_billing_usage`.

        Returns:
            APIFuture[BillingUsageResponse]: The usage events.
        """
        return self._admin().get_billing_usage(starting_on, ending_before)

    async def get_billing_usage_async(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> BillingUsageResponse:
        """Async version of `get_billing_usage`.

        Returns:
            BillingUsageResponse: The answer itself (not a future).
        """
        return await self.get_billing_usage(starting_on, ending_before)

    def get_current_checkpoint_storage_usage(
        self, project_id: str | None = None
    ) -> APIFuture[CurrentCheckpointStorageUsageResponse]:
        """Read checkpoint storage usage (deprecated here in SDK 0.38: use AdminClient's).

        Args:
            project_id: As in `AdminClient.get_current_checkpoint_storage_usage`.

        Returns:
            APIFuture[CurrentCheckpointStorageUsageResponse]: The current usage.
        """
        return self._admin().get_current_checkpoint_storage_usage(project_id)

    async def get_current_checkpoint_storage_usage_async(
        self, project_id: str | None = None
    ) -> CurrentCheckpointStorageUsageResponse:
        """Async version of `get_current_checkpoint_storage_usage`.

        Returns:
            CurrentCheckpointStorageUsageResponse: The answer itself (not a future).
        """
        return await self.get_current_checkpoint_storage_usage(project_id)


class AdminClient(_RestBase):
    """Audit log and billing reads over the REST API (the mock answers them empty).

    Calls return an APIFuture; the `*_async` twins give the result itself. Connections are
    shared as RestClient's are.

    Args:
        base_url: The service's URL; default `$TINKER_BASE_URL`, then the production service.
        api_key: The credential; default `$TINKER_API_KEY`, then `$TINKER_CREDENTIAL_CMD`.

    Raises:
        ConfigurationError: No usable API key.
    """

    def get_audit_log(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> APIFuture[AuditLogResponse]:
        """Read the organization's audit log.

        Args:
            event_type: Which events: "all", "checkpoints", "projects", "teams" or
                "organizations".
            day: Only that day's events; None: no day is sent.

        Returns:
            APIFuture[AuditLogResponse]: The events.
        """
        params: dict[str, object] = {"event_type": event_type}
        if day is not None:
            params["day"] = day.isoformat()
        return self._get("/audit", AuditLogResponse.from_json, params)

    async def get_audit_log_async(
        self, event_type: AuditEventType = "all", day: dt.date | None = None
    ) -> AuditLogResponse:
        """Async version of `get_audit_log`.

        Returns:
            AuditLogResponse: The answer itself (not a future).
        """
        return await self.get_audit_log(event_type, day)

    def get_billing_usage(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> APIFuture[BillingUsageResponse]:
        """Read the billing usage events of a time range.

        Args:
            starting_on: The range's start (a datetime, or an ISO 8601 string).
            ending_before: The range's end, exclusive (a datetime, or an ISO 8601 string).

        Returns:
            APIFuture[BillingUsageResponse]: The usage events.
        """
        params = {"starting_on": _rfc3339(starting_on), "ending_before": _rfc3339(ending_before)}
        return self._get("/billing/usage/events", BillingUsageResponse.from_json, params)

    async def get_billing_usage_async(
        self, starting_on: dt.datetime | str, ending_before: dt.datetime | str
    ) -> BillingUsageResponse:
        """Async version of `get_billing_usage`.

        Returns:
            BillingUsageResponse: The answer itself (not a future).
        """
        return await self.get_billing_usage(starting_on, ending_before)

    def get_current_checkpoint_storage_usage(
        self, project_id: str | None = None
    ) -> APIFuture[CurrentCheckpointStorageUsageResponse]:
        """Read how much checkpoint storage is in use now.

        Args:
            project_id: Only this project's checkpoints; None: the whole organization's.

        Returns:
            APIFuture[CurrentCheckpointStorageUsageResponse]: The usage per item and the rate.
        """
        return self._get(
            "/billing/usage/checkpoints/current",
            CurrentCheckpointStorageUsageResponse.from_json,
            {"project_id": project_id},
        )

    async def get_current_checkpoint_storage_usage_async(
        self, project_id: str | None = None
    ) -> CurrentCheckpointStorageUsageResponse:
        """Async version of `get_current_checkpoint_storage_usage`.

        Returns:
            CurrentCheckpointStorageUsageResponse: The answer itself (not a future).
        """
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
