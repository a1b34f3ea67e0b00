"""Checkpoint addresses and their place under the data directory.

A checkpoint is addressed as `tinker://<model_id>/<kind>/<name>` (kind `weights` for
`save_state`, `sampler_weights` for sampler snapshots; spec CKPT-9: exactly three segments).
Names are confined to `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, model ids to the server's own format,
so no address can reach outside `<data_dir>/checkpoints` (no `..`, no separators, no absolute
paths). On disk: `<data_dir>/checkpoints/<model_id with ':' as '~'>/<kind>/<name>/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mock_server.service.errors import InvalidArgument
from mock_server.service.ids import MODEL_ID_PATTERN

CheckpointKind = Literal["weights", "sampler_weights"]
SCHEME = "tinker://"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KINDS: tuple[CheckpointKind, ...] = ("weights", "sampler_weights")


@dataclass(frozen=True)
class CheckpointAddress:
    model_id: str
    kind: CheckpointKind
    name: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.model_id}/{self.kind}/{self.name}"


def check_name(name: str, field: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(
            f"checkpoint name {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}} "
            "(no path separators)",
            field,
        )
    return name


def parse_address(uri: str, field: str) -> CheckpointAddress:
    if not uri.startswith(SCHEME):
        raise InvalidArgument(f"expected tinker://<model_id>/<kind>/<name>, got {uri!r}", field)
    parts = uri[len(SCHEME) :].split("/")
    if len(parts) != 3:
        raise InvalidArgument(
            f"expected exactly three segments tinker://<model_id>/<kind>/<name>, got {uri!r}",
            field,
        )
    model, kind, name = parts
    if not MODEL_ID_PATTERN.match(model):
        raise InvalidArgument(f"{model!r} is not a model id of this server", field)
    if kind not in _KINDS:
        raise InvalidArgument(f"checkpoint kind {kind!r} is not one of {', '.join(_KINDS)}", field)
    return CheckpointAddress(model, kind, check_name(name, field))


class CheckpointStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "checkpoints"
        # During a journal replay, "exists" means "saved earlier in this replay": the files on
        # disk are the pre-crash outputs of the very saves being replayed (service/journal.py).
        self._replayed: set[Path] | None = None

    def exists(self, directory: Path) -> bool:
        return directory in self._replayed if self._replayed is not None else directory.exists()

    def saved(self, directory: Path) -> None:
        if self._replayed is not None:
            self._replayed.add(directory)

    def removed(self, directory: Path) -> None:
        """A checkpoint was deleted (rest_ops.py): a later save of that name is new."""
        if self._replayed is not None:
            self._replayed.discard(directory)

    def begin_replay(self) -> None:
        self._replayed = set()

    def end_replay(self) -> None:
        self._replayed = None

    def directory(self, address: CheckpointAddress) -> Path:
        return self.root / address.model_id.replace(":", "~") / address.kind / address.name
