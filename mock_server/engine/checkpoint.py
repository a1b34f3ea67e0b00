"""Checkpoints on disk: adapter weights (and optionally AdamW state) as safetensors + JSON.

Layout of one checkpoint directory:

    metadata.json           format, base model, LoRA config and seed, has_optimizer
    adapter.safetensors     adapter parameter name -> float32 tensor
    optimizer.safetensors   "<param>.step" / ".exp_avg" / ".exp_avg_sq" (only with optimizer)

safetensors holds raw tensors only, so loading a checkpoint can never execute code (no pickle).
Files are written to a temporary directory and renamed into place, so a crash mid-save leaves
either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file
from torch import Tensor

from mock_server.engine.errors import CheckpointError
from mock_server.engine.model import LoraConfig
from mock_server.engine.training import OptimizerState, TrainingModel

if TYPE_CHECKING:
    from mock_server.engine.processes import RemoteModel

FORMAT = "tinker-ref-checkpoint/v1"


@dataclass(frozen=True)
class Checkpoint:
    base_model: str
    lora: LoraConfig
    lora_seed: int
    weights: dict[str, Tensor]
    optimizer: OptimizerState | None  # None when saved without optimizer state


def save_checkpoint(
    model: TrainingModel | RemoteModel, directory: Path, include_optimizer: bool
) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory.parent))
    try:
        save_file(model.weights(), str(staging / "adapter.safetensors"))
        if include_optimizer:
            state = model.optimizer_state().tensors
            save_file(state, str(staging / "optimizer.safetensors"))
        metadata = {
            "format": FORMAT,
            "base_model": model.base.spec.name,
            "lora": asdict(model.lora),
            "lora_seed": model.lora_seed,
            "has_optimizer": include_optimizer,
        }
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def load_checkpoint(directory: Path, with_optimizer: bool) -> Checkpoint:
    """Read a checkpoint; `with_optimizer` demands that it carries optimizer state."""
    try:
        metadata = json.loads((directory / "metadata.json").read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"no checkpoint at {directory.name!r}") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {directory.name!r} is unreadable: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint format {metadata.get('format')!r} is not {FORMAT!r}")
    if with_optimizer and not metadata["has_optimizer"]:
        raise CheckpointError(
            f"checkpoint {directory.name!r} was saved without optimizer state; "
            "load it without the optimizer or save it with one"
        )
    optimizer = None
    if with_optimizer:
        optimizer = OptimizerState(dict(load_file(str(directory / "optimizer.safetensors"))))
    return Checkpoint(
        base_model=metadata["base_model"],
        lora=LoraConfig(**metadata["lora"]),
        lora_seed=int(metadata["lora_seed"]),
        weights=dict(load_file(str(directory / "adapter.safetensors"))),
        optimizer=optimizer,
    )
