"""Checkpoint addresses: `tinker://<training_run_id>/<kind>/<name>` and their parts.

Kinds on the wire: `weights` (`save_state`, type `training`), `sampler_weights`
(`save_weights_for_sampler`, type `sampler`) and `external_weights` (`save_weights_external`,
type `external`). A checkpoint's id within its training run is `<kind>/<name>`, which is what
the REST endpoints take (`/training_runs/{id}/checkpoints/weights/step-10`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from tinker_ref.types._records import Record

__all__ = ["CHECKPOINT_KINDS", "CheckpointType", "ParsedCheckpointTinkerPath"]

CheckpointType: TypeAlias = Literal["training", "sampler", "external"]

# path segment -> checkpoint type, as the SDK parses them
CHECKPOINT_KINDS: dict[str, CheckpointType] = {
    "weights": "training",
    "sampler_weights": "sampler",
    "external_weights": "external",
}


@dataclass(frozen=True, kw_only=True)
class ParsedCheckpointTinkerPath(Record):
    tinker_path: str
    training_run_id: str
    checkpoint_type: CheckpointType
    checkpoint_id: str  # "<kind>/<name>"

    @classmethod
    def from_tinker_path(cls, tinker_path: str) -> ParsedCheckpointTinkerPath:
        """Split a `tinker://` path; ValueError for anything else (as the SDK raises)."""
        if not tinker_path.startswith("tinker://"):
            raise ValueError(f"Invalid tinker path: {tinker_path}")
        parts = tinker_path.removeprefix("tinker://").split("/")
        if len(parts) != 3 or parts[1] not in CHECKPOINT_KINDS:
            raise ValueError(f"Invalid tinker path: {tinker_path}")
        return cls(
            tinker_path=tinker_path,
            training_run_id=parts[0],
            checkpoint_type=CHECKPOINT_KINDS[parts[1]],
            checkpoint_id=f"{parts[1]}/{parts[2]}",
        )
