"""The REST side of the API, its reads: training runs, checkpoints, sessions.

What `tinker.RestClient` reads outside the training queues (no seq_ids, no futures):
`GET training_runs[/{id}]`, `GET training_runs/{id}/checkpoints`, `GET checkpoints`,
`GET .../external_weights_urls`, `GET sessions[/{id}]`, `POST sessions/search`, and the admin
reads (audit log, billing), which the mock answers empty: it bills nothing. Its changes (delete,
TTL, publish, a session's project, `copy_weights`) are operations (`rest_ops.py`), submitted and
journaled like every other change; they find their checkpoint with `find_checkpoint` here.

A training run is a model of the registry *or* a model directory on disk (a run of an earlier
server process, or a copy made by `copy_weights`), so a resumed script can read the run behind
a checkpoint path after the server restarted (`--data-dir`). Checkpoints are listed from disk
with their sidecar (`checkpoint_meta.py`); one whose TTL has passed is deleted when a REST call
next looks at it (time-driven, like a session's expiry, so not journaled: a replayed save of it
is deleted again when next looked at). Ownership follows the registry: in api-keys mode another
key's run, checkpoint or session answers 404 like one that never existed (spec WIRE-2).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mock_server.engine import CheckpointError, load_checkpoint
from mock_server.service import checkpoint_meta, ids
from mock_server.service.auth import Principal
from mock_server.service.checkpoint_meta import CheckpointMeta
from mock_server.service.checkpoints import check_name
from mock_server.service.context import ServiceContext
from mock_server.service.errors import Conflict, InvalidArgument, NotFound
from mock_server.service.state import Session

# path segment -> the checkpoint type the REST API reports (as the SDK parses paths)
KINDS = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}
ACCESS_SCOPES = ("owned", "accessible")


@dataclass(frozen=True)
class CheckpointView:
    training_run_id: str
    kind: str  # path segment: weights, sampler_weights, external_weights
    name: str
    meta: CheckpointMeta

    @property
    def checkpoint_id(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def checkpoint_type(self) -> str:
        return KINDS[self.kind]

    @property
    def tinker_path(self) -> str:
        return f"tinker://{self.training_run_id}/{self.kind}/{self.name}"


@dataclass(frozen=True)
class TrainingRunView:
    training_run_id: str
    base_model: str
    model_owner: str
    lora_rank: int | None
    last_request_time: float
    last_checkpoint: CheckpointView | None
    last_sampler_checkpoint: CheckpointView | None
    user_metadata: dict[str, str] | None


@dataclass(frozen=True)
class SessionView:
    session: Session
    training_run_ids: list[str]
    sampler_ids: list[str]
    checkpoints: list[CheckpointView] = field(default_factory=list)


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int
    total_count: int


def _page(limit: int, offset: int) -> None:
    if limit < 1:
        raise InvalidArgument(f"must be >= 1, got {limit}", "limit")
    if offset < 0:
        raise InvalidArgument(f"must be >= 0, got {offset}", "offset")


def check_access_scope(scope: str) -> None:
    if scope not in ACCESS_SCOPES:
        raise InvalidArgument(
            f"must be one of {', '.join(ACCESS_SCOPES)}, got {scope!r}", "access_scope"
        )


class RestQueries:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    # ----- where things are -----

    @property
    def _root(self) -> Path:
        return self._ctx.checkpoints.root

    def _run_dir(self, training_run_id: str) -> Path:
        return self._root / training_run_id.replace(":", "~")

    def checkpoint_dir(self, training_run_id: str, kind: str, name: str) -> Path:
        return self._run_dir(training_run_id) / kind / name

    def _parse_checkpoint_id(self, checkpoint_id: str) -> tuple[str, str]:
        kind, _, name = checkpoint_id.partition("/")
        if kind not in KINDS or not name:
            raise InvalidArgument(
                f"expected <kind>/<name>, kind one of {', '.join(KINDS)}; got {checkpoint_id!r}",
                "checkpoint_id",
            )
        return kind, check_name(name, "checkpoint_id")

    def _check_run_id(self, training_run_id: str) -> None:
        if not ids.MODEL_ID_PATTERN.match(training_run_id):
            raise NotFound(f"no training run {training_run_id!r}", "training_run_id")

    # ----- checkpoints -----

    def _views(self, training_run_id: str) -> list[CheckpointView]:
        """The run's live checkpoints, oldest first; expired ones are deleted on the way."""
        views = []
        now = time.time()
        run_dir = self._run_dir(training_run_id)
        for kind in KINDS:
            kind_dir = run_dir / kind
            if not kind_dir.is_dir():
                continue
            for directory in sorted(kind_dir.iterdir()):
                if directory.name.startswith(".") or not (directory / "metadata.json").exists():
                    continue  # a save in progress (engine/checkpoint.py stages under ".staging-")
                meta = checkpoint_meta.read(directory)
                if meta.expired(now):
                    shutil.rmtree(directory, ignore_errors=True)
                    continue
                views.append(CheckpointView(training_run_id, kind, directory.name, meta))
        views.sort(key=lambda v: (v.meta.created_at, v.checkpoint_id))
        return views

    def _owned_run(self, principal: Principal, training_run_id: str) -> None:
        self._check_run_id(training_run_id)
        self._ctx.registry.check_checkpoint(
            principal, training_run_id, f"training run {training_run_id!r}", "training_run_id"
        )

    def checkpoints(self, principal: Principal, training_run_id: str) -> list[CheckpointView]:
        self._owned_run(principal, training_run_id)
        if (
            training_run_id not in self._ctx.registry.models
            and not self._run_dir(training_run_id).is_dir()
        ):
            raise NotFound(f"no training run {training_run_id!r}", "training_run_id")
        return self._views(training_run_id)

    def user_checkpoints(
        self, principal: Principal, limit: int, offset: int
    ) -> tuple[list[CheckpointView], Page]:
        _page(limit, offset)
        views = [
            view for run_id in self._visible_run_ids(principal) for view in self._views(run_id)
        ]
        views.sort(key=lambda v: (-v.meta.created_at, v.tinker_path))
        return views[offset : offset + limit], Page(offset, limit, len(views))

    def find_checkpoint(
        self, principal: Principal, training_run_id: str, checkpoint_id: str
    ) -> tuple[Path, CheckpointView]:
        """The directory and view of a live checkpoint `principal` may read (NotFound else)."""
        self._owned_run(principal, training_run_id)
        kind, name = self._parse_checkpoint_id(checkpoint_id)
        directory = self.checkpoint_dir(training_run_id, kind, name)
        if not (directory / "metadata.json").exists():
            raise NotFound(
                f"no checkpoint tinker://{training_run_id}/{kind}/{name}", "checkpoint_id"
            )
        meta = checkpoint_meta.read(directory)
        if meta.expired(time.time()):
            shutil.rmtree(directory, ignore_errors=True)
            raise NotFound(
                f"checkpoint tinker://{training_run_id}/{kind}/{name} expired", "checkpoint_id"
            )
        return directory, CheckpointView(training_run_id, kind, name, meta)

    def external_weights_files(
        self, principal: Principal, training_run_id: str, checkpoint_id: str
    ) -> tuple[Path, list[str]]:
        directory, view = self.find_checkpoint(principal, training_run_id, checkpoint_id)
        if view.kind != "external_weights":
            raise InvalidArgument(
                f"{view.tinker_path} is not an external weights checkpoint", "checkpoint_id"
            )
        files = sorted(
            p.name
            for p in directory.iterdir()
            if p.is_file() and p.name != checkpoint_meta.META_FILE and not p.name.startswith(".")
        )
        return directory, files

    def external_file(self, training_run_id: str, name: str, file_name: str) -> Path:
        """A file of external weights, for the mock's download URL (no credential, as a signed
        URL needs none); NotFound unless it is a file of an existing export."""
        self._check_run_id(training_run_id)
        check_name(name, "name")
        directory = self.checkpoint_dir(training_run_id, "external_weights", name)
        path = directory / file_name
        if (
            "/" in file_name
            or file_name.startswith(".")
            or file_name == checkpoint_meta.META_FILE
            or not path.is_file()
        ):
            raise NotFound(f"no file {file_name!r} in external weights {name!r}", "file")
        return path

    # ----- training runs -----

    def _visible_run_ids(self, principal: Principal) -> list[str]:
        registry = self._ctx.registry
        run_ids = set(registry.models)
        if self._root.is_dir():
            run_ids.update(
                d.name.replace("~", ":")
                for d in self._root.iterdir()
                if d.is_dir() and ids.MODEL_ID_PATTERN.match(d.name.replace("~", ":"))
            )
        visible = []
        for run_id in sorted(run_ids):
            try:
                registry.check_checkpoint(principal, run_id, "training run", "training_run_id")
            except NotFound:
                continue
            visible.append(run_id)
        return visible

    def training_run(self, principal: Principal, training_run_id: str) -> TrainingRunView:
        self._owned_run(principal, training_run_id)
        registry = self._ctx.registry
        views = self._views(training_run_id)
        model = registry.models.get(training_run_id)
        session = registry.sessions.get(ids.session_of_model(training_run_id) or "")
        owner = session.owner if session is not None else (model.owner if model else "unknown")
        last_time = max([v.meta.created_at for v in views], default=0.0)
        if model is not None:
            if model.base_model is None:
                raise Conflict(
                    f"training run {training_run_id!r} is still being created", "training_run_id"
                )
            return TrainingRunView(
                training_run_id,
                model.base_model,
                owner,
                model.lora.rank if model.lora is not None else None,
                max(last_time, model.created_at),
                _last(views, "weights"),
                _last(views, "sampler_weights"),
                model.user_metadata,
            )
        if not views:
            raise NotFound(f"no training run {training_run_id!r}", "training_run_id")
        try:  # a run known from its checkpoints only: read its base model from one of them
            checkpoint = load_checkpoint(
                self.checkpoint_dir(training_run_id, views[-1].kind, views[-1].name),
                with_optimizer=False,
            )
        except CheckpointError as exc:
            raise NotFound(str(exc), "training_run_id") from exc
        return TrainingRunView(
            training_run_id,
            checkpoint.base_model,
            owner,
            checkpoint.lora.rank,
            last_time,
            _last(views, "weights"),
            _last(views, "sampler_weights"),
            None,
        )

    def training_runs(
        self, principal: Principal, limit: int, offset: int, project_id: str | None
    ) -> tuple[list[TrainingRunView], Page]:
        _page(limit, offset)
        runs = []
        for run_id in self._visible_run_ids(principal):
            session = self._ctx.registry.sessions.get(ids.session_of_model(run_id) or "")
            if project_id is not None and (session is None or session.project_id != project_id):
                continue
            try:
                runs.append(self.training_run(principal, run_id))
            except (NotFound, Conflict):
                continue  # still being created, failed, or its checkpoints all expired
        runs.sort(key=lambda r: (-r.last_request_time, r.training_run_id))
        return runs[offset : offset + limit], Page(offset, limit, len(runs))

    # ----- sessions -----

    def _sessions(self, principal: Principal) -> list[Session]:
        registry = self._ctx.registry
        visible = []
        for session in registry.sessions.values():
            try:
                registry.check_owner(principal, session.owner, "session", "session_id")
            except NotFound:
                continue
            visible.append(session)
        visible.sort(key=lambda s: (-s.created_at, s.session_id))
        return visible

    def session(self, principal: Principal, session_id: str) -> SessionView:
        registry = self._ctx.registry
        session = registry.session(principal, session_id)
        runs = sorted(m.model_id for m in registry.models.values() if m.session_id == session_id)
        disk_runs = [
            run_id
            for run_id in self._visible_run_ids(principal)
            if ids.session_of_model(run_id) == session_id and run_id not in runs
        ]
        samplers = sorted(
            s.sampling_session_id for s in registry.samplers.values() if s.session_id == session_id
        )
        all_runs = runs + disk_runs
        checkpoints = [view for run_id in all_runs for view in self._views(run_id)]
        return SessionView(session, all_runs, samplers, checkpoints)

    def sessions(self, principal: Principal, limit: int, offset: int) -> list[str]:
        _page(limit, offset)
        return [s.session_id for s in self._sessions(principal)][offset : offset + limit]

    def search_sessions(
        self,
        principal: Principal,
        session_id: str | None,
        display_name: str | None,
        project_ids: Iterable[str] | None,
        user_metadata: dict[str, str],
        statuses: Iterable[str] | None,
        limit: int,
        after: tuple[float, str] | None,
    ) -> tuple[list[SessionView], tuple[float, str] | None]:
        """Newest first; `after` is the (created_at, session_id) of the previous page's last."""
        if not 1 <= limit <= 200:
            raise InvalidArgument(f"must be between 1 and 200, got {limit}", "limit")
        words = display_name.lower().split() if display_name else []
        projects = set(project_ids) if project_ids is not None else None
        wanted = set(statuses) if statuses is not None else None
        matches = []
        for session in self._sessions(principal):
            by_id = session_id is not None and session.session_id == session_id
            by_name = bool(words) and all(w in (session.display_name or "").lower() for w in words)
            if (session_id is not None or words) and not (by_id or by_name):
                continue
            if projects is not None and session.project_id not in projects:
                continue
            if any(session.user_metadata.get(k) != v for k, v in user_metadata.items()):
                continue
            if wanted is not None and session_status(session) not in wanted:
                continue
            if after is not None and (-session.created_at, session.session_id) <= (
                -after[0],
                after[1],
            ):
                continue
            matches.append(session)
        page = matches[:limit]
        next_cursor = (page[-1].created_at, page[-1].session_id) if len(matches) > limit else None
        return [self.session(principal, s.session_id) for s in page], next_cursor


def session_status(session: Session) -> str:
    """The status `type` of a session summary: active, client_finished or cancelled."""
    if session.expired:
        return "cancelled"
    return "client_finished" if session.finished else "active"


def _last(views: list[CheckpointView], kind: str) -> CheckpointView | None:
    of_kind = [v for v in views if v.kind == kind]
    return of_kind[-1] if of_kind else None
