"""The REST endpoints of `tinker.RestClient` (and `AdminClient`), over `service.rest`.

Training runs, checkpoints (list, delete, TTL, publish, external weights URLs), sessions (read,
list, search, project, trace export), `copy_weights`, the admin reads (answered empty: the mock
bills nothing and keeps no audit log), `save_weights_external`, and the mock's own download of
exported files (`/_mock/external_weights/...`, standing in for a signed URL). Answers are the
JSON shapes of SDK 0.38's response models; times are ISO 8601 in UTC. A GET's query string is
kept in the request record (`extra.query`) so differential tests compare parameters too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from mock_server.http import parse
from mock_server.http.keys import RECORD_KEY
from mock_server.http.routes import (
    API,
    _json,
    _principal,
    _read_json,
    _read_sequenced,
    _service,
    _submitted_op,
)
from mock_server.service.errors import MalformedRequest
from mock_server.service.rest_queries import (
    CheckpointView,
    Page,
    SessionView,
    TrainingRunView,
    check_access_scope,
    session_status,
)

# How long an external weights URL is said to stay valid (the mock's never expire).
URL_LIFETIME = dt.timedelta(hours=1)
TRACE_EXPORT_UNAVAILABLE = "the mock keeps no session traces to export"


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def _query(request: web.Request) -> parse.Fields:
    """Query parameters as typed fields (numbers parsed), recorded for tests."""
    values: dict[str, Any] = {}
    for key, value in request.query.items():
        values[key] = int(value) if value.lstrip("-").isdigit() else value
    if values:
        request[RECORD_KEY].extra["query"] = values
    return parse.Fields(values, "query")


def _scope(query: parse.Fields) -> None:
    check_access_scope(query.opt_text("access_scope") or "owned")


def _cursor(page: Page) -> dict[str, int]:
    return {"offset": page.offset, "limit": page.limit, "total_count": page.total_count}


def checkpoint_json(view: CheckpointView) -> dict[str, Any]:
    body: dict[str, Any] = {
        "checkpoint_id": view.checkpoint_id,
        "checkpoint_type": view.checkpoint_type,
        "time": _iso(view.meta.created_at),
        "tinker_path": view.tinker_path,
        "size_bytes": view.meta.size_bytes,
        "public": view.meta.public,
        "user_metadata": view.meta.user_metadata,
        "expires_at": None if view.meta.expires_at is None else _iso(view.meta.expires_at),
    }
    return body


def training_run_json(run: TrainingRunView) -> dict[str, Any]:
    return {
        "training_run_id": run.training_run_id,
        "base_model": run.base_model,
        "model_owner": run.model_owner,
        "is_lora": True,
        "corrupted": False,
        "lora_rank": run.lora_rank,
        "last_request_time": _iso(run.last_request_time),
        "last_checkpoint": checkpoint_json(run.last_checkpoint) if run.last_checkpoint else None,
        "last_sampler_checkpoint": checkpoint_json(run.last_sampler_checkpoint)
        if run.last_sampler_checkpoint
        else None,
        "user_metadata": run.user_metadata,
    }


def _status_json(view: SessionView) -> dict[str, Any]:
    status = session_status(view.session)
    if status == "client_finished":
        return {
            "type": "client_finished",
            "reason": {"type": view.session.finish_reason or "success"},
            "detail": view.session.finish_detail,
        }
    if status == "cancelled":
        return {"type": "cancelled", "detail": "expired for idleness"}
    return {"type": "active"}


def session_summary_json(view: SessionView) -> dict[str, Any]:
    session = view.session
    return {
        "session_id": session.session_id,
        "created_at": _iso(session.created_at),
        "owner": session.owner,
        "project_id": session.project_id or "",
        "status": _status_json(view),
        "checkpoints_count": len(view.checkpoints),
        "display_name": session.display_name,
        "user_metadata": {str(k): str(v) for k, v in session.user_metadata.items()},
        "checkpoint_storage_bytes": sum(c.meta.size_bytes for c in view.checkpoints),
    }


# ----- training runs and checkpoints -----


async def get_training_run(request: web.Request) -> web.Response:
    _scope(_query(request))
    run = _service(request).rest.training_run(
        _principal(request), request.match_info["training_run_id"]
    )
    return _json(training_run_json(run))


async def list_training_runs(request: web.Request) -> web.Response:
    query = _query(request)
    _scope(query)
    runs, page = _service(request).rest.training_runs(
        _principal(request),
        query.integer_or("limit", 20),
        query.integer_or("offset", 0),
        query.opt_text("project_id"),
    )
    return _json({"training_runs": [training_run_json(r) for r in runs], "cursor": _cursor(page)})


async def list_checkpoints(request: web.Request) -> web.Response:
    views = _service(request).rest.checkpoints(
        _principal(request), request.match_info["training_run_id"]
    )
    return _json({"checkpoints": [checkpoint_json(v) for v in views], "cursor": None})


async def list_user_checkpoints(request: web.Request) -> web.Response:
    query = _query(request)
    views, page = _service(request).rest.user_checkpoints(
        _principal(request), query.integer_or("limit", 100), query.integer_or("offset", 0)
    )
    return _json({"checkpoints": [checkpoint_json(v) for v in views], "cursor": _cursor(page)})


def _checkpoint_id(request: web.Request) -> str:
    return f"{request.match_info['kind']}/{request.match_info['name']}"


async def delete_checkpoint(request: web.Request) -> web.Response:
    await _service(request).rest.delete_checkpoint(
        _principal(request), request.match_info["training_run_id"], _checkpoint_id(request)
    )
    return web.Response(status=204)


async def set_checkpoint_ttl(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    if "ttl_seconds" not in request[RECORD_KEY].body:
        raise MalformedRequest("required field is missing (null: never expires)", "ttl_seconds")
    await _service(request).rest.set_checkpoint_ttl(
        _principal(request),
        request.match_info["training_run_id"],
        _checkpoint_id(request),
        fields.opt_integer("ttl_seconds"),
    )
    return web.Response(status=204)


async def publish_checkpoint(request: web.Request) -> web.Response:
    await _service(request).rest.set_checkpoint_public(
        _principal(request),
        request.match_info["training_run_id"],
        _checkpoint_id(request),
        request.method == "POST",
    )
    return web.Response(status=204)


async def external_weights_urls(request: web.Request) -> web.Response:
    run_id, name = request.match_info["training_run_id"], request.match_info["name"]
    _, files = _service(request).rest.external_weights_files(
        _principal(request), run_id, f"external_weights/{name}"
    )
    base = f"{request.url.origin()}/_mock/external_weights/{run_id}/{name}"
    expires = dt.datetime.now(dt.UTC) + URL_LIFETIME
    return _json({"urls": {f: f"{base}/{f}" for f in files}, "expires": expires.isoformat()})


async def download_external_file(request: web.Request) -> web.FileResponse:
    path = _service(request).rest.external_file(
        request.match_info["training_run_id"],
        request.match_info["name"],
        request.match_info["file"],
    )
    return web.FileResponse(path)


async def save_weights_external(request: web.Request) -> web.Response:
    req = await _read_sequenced(request, "save_weights_external", parse.save_weights_external)
    training = _service(request).training
    return _submitted_op(request, await training.save_weights_external(_principal(request), req))


async def copy_weights(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    path = await _service(request).rest.copy_weights(
        _principal(request),
        fields.text("source_path"),
        fields.opt_text("destination_project_id"),
        fields.opt_integer("ttl_seconds"),
    )
    return _json({"tinker_path": path})


# ----- sessions -----


async def get_session(request: web.Request) -> web.Response:
    _scope(_query(request))
    view = _service(request).rest.session(_principal(request), request.match_info["session_id"])
    return _json(
        {
            "training_run_ids": view.training_run_ids,
            "sampler_ids": view.sampler_ids,
            "user_metadata": {str(k): str(v) for k, v in view.session.user_metadata.items()},
            "display_name": view.session.display_name,
        }
    )


async def list_sessions(request: web.Request) -> web.Response:
    query = _query(request)
    _scope(query)
    sessions = _service(request).rest.sessions(
        _principal(request), query.integer_or("limit", 20), query.integer_or("offset", 0)
    )
    return _json({"sessions": sessions})


async def assign_session_project(request: web.Request) -> web.Response:
    fields = parse.Fields(await _read_json(request))
    await _service(request).rest.assign_session_project(
        _principal(request), request.match_info["session_id"], fields.text("project_id")
    )
    return web.Response(status=204)


async def search_sessions(request: web.Request) -> web.Response:
    f = parse.Fields(await _read_json(request))
    owner = f.obj("owner", required=False)
    if owner is not None and owner.text("type") != "own":
        raise MalformedRequest(
            "the mock searches the caller's own sessions only (owner.type 'own')", "owner.type"
        )
    statuses = f.raw("statuses")
    if statuses is not None and not (
        isinstance(statuses, list) and all(isinstance(s, dict) and "type" in s for s in statuses)
    ):
        raise MalformedRequest("expected an array of {type}", "statuses")
    cursor = f.obj("cursor", required=False)
    after = None
    if cursor is not None:
        created = dt.datetime.fromisoformat(cursor.text("last_created_at"))
        after = (created.timestamp(), cursor.text("last_session_id"))
    projects = f.raw("project_ids")
    views, next_cursor = _service(request).rest.search_sessions(
        _principal(request),
        f.opt_text("session_id"),
        f.opt_text("display_name"),
        projects if isinstance(projects, list) else None,
        {str(k): str(v) for k, v in (f.mapping("user_metadata") or {}).items()},
        [s["type"] for s in statuses] if statuses is not None else None,
        f.integer_or("limit", 50),
        after,
    )
    return _json(
        {
            "sessions": [session_summary_json(v) for v in views],
            "next_cursor": None
            if next_cursor is None
            else {"last_created_at": _iso(next_cursor[0]), "last_session_id": next_cursor[1]},
        }
    )


async def trace_export(request: web.Request) -> web.Response:
    _service(request).rest.session(_principal(request), request.match_info["session_id"])
    return _json({"status": "failed", "url": None, "error": TRACE_EXPORT_UNAVAILABLE})


# ----- admin: the mock bills nothing -----


async def audit_log(request: web.Request) -> web.Response:
    _query(request)
    return _json({"entries": []})


async def billing_usage(request: web.Request) -> web.Response:
    _query(request)
    return _json({"data": [], "sessions": {}, "cost_data_through": None})


async def checkpoint_storage_usage(request: web.Request) -> web.Response:
    _query(request)
    return _json({"effective_rate_usd_per_gigabyte_month": 0.0, "data": []})


def add_rest_routes(app: web.Application) -> None:
    run = f"{API}/training_runs/{{training_run_id}}"
    checkpoint = f"{run}/checkpoints/{{kind}}/{{name}}"
    router = app.router
    router.add_get(f"{API}/training_runs", list_training_runs, allow_head=False)
    router.add_get(run, get_training_run, allow_head=False)
    router.add_get(f"{run}/checkpoints", list_checkpoints, allow_head=False)
    router.add_get(
        f"{run}/checkpoints/external_weights/{{name}}/external_weights_urls",
        external_weights_urls,
        allow_head=False,
    )
    router.add_delete(checkpoint, delete_checkpoint)
    router.add_put(f"{checkpoint}/ttl", set_checkpoint_ttl)
    router.add_post(f"{checkpoint}/publish", publish_checkpoint)
    router.add_delete(f"{checkpoint}/publish", publish_checkpoint)
    router.add_get(f"{API}/checkpoints", list_user_checkpoints, allow_head=False)
    router.add_post(f"{API}/copy_weights", copy_weights)
    router.add_post(f"{API}/save_weights_external", save_weights_external)
    router.add_get(f"{API}/sessions", list_sessions, allow_head=False)
    router.add_post(f"{API}/sessions/search", search_sessions)
    router.add_get(f"{API}/sessions/{{session_id}}", get_session, allow_head=False)
    router.add_put(f"{API}/sessions/{{session_id}}/project", assign_session_project)
    router.add_get(f"{API}/sessions/{{session_id}}/trace_export", trace_export, allow_head=False)
    router.add_get(f"{API}/audit", audit_log, allow_head=False)
    router.add_get(f"{API}/billing/usage/events", billing_usage, allow_head=False)
    router.add_get(
        f"{API}/billing/usage/checkpoints/current", checkpoint_storage_usage, allow_head=False
    )
    router.add_get(
        "/_mock/external_weights/{training_run_id}/{name}/{file}",
        download_external_file,
        allow_head=False,
    )
