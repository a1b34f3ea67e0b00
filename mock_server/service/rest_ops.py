"""The REST API's changes, each an operation: delete, TTL, publish, a session's project, copies.

`tinker.RestClient` changes state outside the training queues (no seq_ids, no futures):
`DELETE training_runs/{id}/checkpoints/{kind}/{name}`, `PUT .../ttl`, `POST|DELETE .../publish`,
`PUT sessions/{id}/project` and `POST copy_weights`. Each is a `DirectOp` (admission.py),
answered by the call, submitted through `TinkerService.submit` and so journaled: a replay
deletes, re-dates, publishes and copies again, after the saves it acts on. A request that
depends on the clock carries the time it arrived (`requested_at`), so a replay dates a TTL or
a copy as the first run did. `RestOps` is the facade `TinkerService.rest`: the reads of
`RestQueries` plus one method per change, each submitting its op.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mock_server.service import checkpoint_meta, ids
from mock_server.service.admission import DirectOp
from mock_server.service.auth import Principal
from mock_server.service.checkpoint_meta import CheckpointMeta
from mock_server.service.context import ServiceContext
from mock_server.service.errors import InvalidArgument
from mock_server.service.operation import Submit
from mock_server.service.requests import (
    AssignSessionProject,
    CopyWeights,
    DeleteCheckpoint,
    SetCheckpointPublic,
    SetCheckpointTtl,
)
from mock_server.service.rest_queries import CheckpointView, RestQueries
from mock_server.service.state import Session


def _check_ttl(ttl_seconds: int | None) -> None:
    if ttl_seconds is not None and not (
        checkpoint_meta.MIN_TTL_SECONDS <= ttl_seconds <= checkpoint_meta.MAX_TTL_SECONDS
    ):
        raise InvalidArgument(
            f"must be between {checkpoint_meta.MIN_TTL_SECONDS} (1 hour) and "
            f"{checkpoint_meta.MAX_TTL_SECONDS} (10 years) seconds, or null; got {ttl_seconds}",
            "ttl_seconds",
        )


class DeleteCheckpointOp(DirectOp[DeleteCheckpoint, None]):
    """Remove a checkpoint's directory (in the pool: disk work)."""

    name = "rest.delete_checkpoint"
    _directory: Path

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        self._directory, _ = RestQueries(ctx).find_checkpoint(
            principal, req.training_run_id, req.checkpoint_id
        )

    @property
    def has_engine_work(self) -> bool:
        return True

    def run(self, ctx: ServiceContext) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)  # a concurrent delete: gone either way

    def finish(self, ctx: ServiceContext, value: Any) -> None:
        ctx.checkpoints.removed(self._directory)


class SetCheckpointTtlOp(DirectOp[SetCheckpointTtl, None]):
    """Expire a checkpoint `ttl_seconds` after the call (None: never), as the hosted service
    counts it."""

    name = "rest.set_checkpoint_ttl"
    _directory: Path

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        _check_ttl(req.ttl_seconds)
        self._directory, _ = RestQueries(ctx).find_checkpoint(
            principal, req.training_run_id, req.checkpoint_id
        )

    def finish(self, ctx: ServiceContext, value: Any) -> None:
        req = self.request
        expires_at = checkpoint_meta.expiry(req.requested_at, req.ttl_seconds)
        checkpoint_meta.update(self._directory, expires_at=expires_at)


class SetCheckpointPublicOp(DirectOp[SetCheckpointPublic, None]):
    """Publish (or unpublish) a checkpoint; external weights cannot be published."""

    name = "rest.set_checkpoint_public"
    _directory: Path

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        self._directory, view = RestQueries(ctx).find_checkpoint(
            principal, req.training_run_id, req.checkpoint_id
        )
        if req.public and view.kind == "external_weights":
            raise InvalidArgument("external weights cannot be published", "checkpoint_id")

    def finish(self, ctx: ServiceContext, value: Any) -> None:
        checkpoint_meta.update(self._directory, public=self.request.public)


class AssignSessionProjectOp(DirectOp[AssignSessionProject, None]):
    name = "rest.assign_session_project"
    _session: Session

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        if not self.request.project_id:
            raise InvalidArgument("must not be empty", "project_id")
        self._session = ctx.registry.session(principal, self.request.session_id)

    def finish(self, ctx: ServiceContext, value: Any) -> None:
        self._session.project_id = self.request.project_id


class CopyWeightsOp(DirectOp[CopyWeights, str]):
    """Copy a checkpoint into a new training run of a new (finished) session: the copy keeps
    its kind and cannot be trained on. The files are copied in the pool to a staging directory;
    `finish` mints the session and moves the copy into place. Answers the copy's tinker path."""

    name = "rest.copy_weights"
    _source: Path
    _view: CheckpointView
    _owner: str

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        parts = req.source_path.removeprefix("tinker://").split("/")
        if not req.source_path.startswith("tinker://") or len(parts) != 3:
            raise InvalidArgument(
                f"expected tinker://<run>/<kind>/<name>, got {req.source_path!r}", "source_path"
            )
        _check_ttl(req.ttl_seconds)
        run_id, kind, name = parts
        self._source, self._view = RestQueries(ctx).find_checkpoint(
            principal, run_id, f"{kind}/{name}"
        )
        self._owner = principal.identity

    @property
    def has_engine_work(self) -> bool:
        return True

    def run(self, ctx: ServiceContext) -> Path:
        root = ctx.checkpoints.root
        root.mkdir(parents=True, exist_ok=True)
        # ".staging-*": a copy killed half-way is dropped on the next start (journal.py).
        staging = Path(tempfile.mkdtemp(prefix=".staging-copy-", dir=root))
        shutil.copytree(self._source, staging, dirs_exist_ok=True)
        return staging

    def finish(self, ctx: ServiceContext, staging: Path) -> str:
        req, view = self.request, self._view
        session_id = ctx.ids.session_id()
        session = Session(session_id, self._owner, (), {}, None)
        session.project_id = req.destination_project_id
        session.finished = True  # holds the copy only: nothing trains in it
        session.finish_reason = "success"
        ctx.registry.sessions[session_id] = session
        copy_run = ids.model_id(session_id, 0)
        target = RestQueries(ctx).checkpoint_dir(copy_run, view.kind, view.name)
        if target.exists():  # a replay: the copy made before the restart, the same bytes
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        meta = CheckpointMeta(
            req.requested_at,
            checkpoint_meta.expiry(req.requested_at, req.ttl_seconds),
            False,
            view.meta.user_metadata,
        )
        checkpoint_meta.write(target, meta)
        return f"tinker://{copy_run}/{view.kind}/{view.name}"


class RestOps(RestQueries):
    """`TinkerService.rest`: the REST reads (`RestQueries`) and the changes, each submitted."""

    def __init__(self, ctx: ServiceContext, submit: Submit) -> None:
        super().__init__(ctx)
        self._submit = submit

    async def delete_checkpoint(
        self, principal: Principal, training_run_id: str, checkpoint_id: str
    ) -> None:
        await self._submit(
            principal, DeleteCheckpointOp(DeleteCheckpoint(training_run_id, checkpoint_id))
        )

    async def set_checkpoint_ttl(
        self, principal: Principal, training_run_id: str, checkpoint_id: str, ttl: int | None
    ) -> None:
        req = SetCheckpointTtl(training_run_id, checkpoint_id, ttl, time.time())
        await self._submit(principal, SetCheckpointTtlOp(req))

    async def set_checkpoint_public(
        self, principal: Principal, training_run_id: str, checkpoint_id: str, public: bool
    ) -> None:
        req = SetCheckpointPublic(training_run_id, checkpoint_id, public)
        await self._submit(principal, SetCheckpointPublicOp(req))

    async def assign_session_project(
        self, principal: Principal, session_id: str, project_id: str
    ) -> None:
        req = AssignSessionProject(session_id, project_id)
        await self._submit(principal, AssignSessionProjectOp(req))

    async def copy_weights(
        self,
        principal: Principal,
        source_path: str,
        destination_project_id: str | None,
        ttl_seconds: int | None,
    ) -> str:
        req = CopyWeights(source_path, destination_project_id, ttl_seconds, time.time())
        return await self._submit(principal, CopyWeightsOp(req))
