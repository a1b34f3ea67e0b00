"""What the REST API says about a checkpoint beyond its weights: when, TTL, public, metadata.

Kept in a sidecar `rest.json` inside the checkpoint's directory (the engine's loader reads only
its own files, so the sidecar never changes what loads). A save writes it (with the request's
`ttl_seconds` and `user_metadata`); `PUT .../ttl` and `.../publish` rewrite it; an overwrite or
a delete removes it with the directory. A checkpoint without a sidecar (saved by an older mock)
reads as created at its files' time, never expiring, private, without metadata.

Times are wall-clock seconds (UTC): they are what the REST API reports, never an input to
training, so they do not affect determinism. A journal replay runs a save again, so its
`created_at` (and a TTL given with the save) count from the replay; a TTL set later
(`PUT .../ttl`) and a copy carry the time of their call (rest_ops.py) and keep it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

META_FILE = "rest.json"
# The SDK documents a TTL "between 1 hour (3600) and 10 years"; the mock enforces the same.
MIN_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class CheckpointMeta:
    created_at: float  # seconds since the epoch
    expires_at: float | None = None  # None: never expires
    public: bool = False
    user_metadata: dict[str, str] | None = None
    size_bytes: int = field(default=0, compare=False)  # measured when read, never stored

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def expiry(created_at: float, ttl_seconds: int | None) -> float | None:
    return None if ttl_seconds is None else created_at + ttl_seconds


def record_save(directory: Path, ttl_seconds: int | None, user_metadata: Any) -> None:
    """Called right after a save wrote `directory` (in the engine pool)."""
    now = time.time()
    metadata = (
        {str(k): str(v) for k, v in user_metadata.items()}
        if isinstance(user_metadata, dict)
        else None
    )
    write(directory, CheckpointMeta(now, expiry(now, ttl_seconds), False, metadata))


def read(directory: Path) -> CheckpointMeta:
    size = sum(
        entry.stat().st_size
        for entry in directory.iterdir()
        if entry.is_file() and entry.name != META_FILE
    )
    try:
        stored = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        created = (directory / "metadata.json").stat().st_mtime
        return CheckpointMeta(created, size_bytes=size)
    return CheckpointMeta(
        created_at=float(stored["created_at"]),
        expires_at=None if stored.get("expires_at") is None else float(stored["expires_at"]),
        public=bool(stored.get("public", False)),
        user_metadata=stored.get("user_metadata"),
        size_bytes=size,
    )


def write(directory: Path, meta: CheckpointMeta) -> None:
    body = asdict(meta)
    del body["size_bytes"]
    staging = directory / f".{META_FILE}.tmp"
    staging.write_text(json.dumps(body))
    os.replace(staging, directory / META_FILE)  # atomic: a reader sees old or new


def update(directory: Path, **changes: Any) -> CheckpointMeta:
    meta = replace(read(directory), **changes)
    write(directory, meta)
    return meta
