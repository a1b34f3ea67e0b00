"""The deterministic training engine: pure torch + Python, no web framework.

Modules: `catalog` (base-model names -> tiny configs), `model` (the tiny causal LM with LoRA
adapters), `losses` (built-in loss formulas and input validation), `training` (one trainable
model: forward/backward, gradient accumulation, AdamW), `sampling` (seeded sampling and prompt
logprobs), `checkpoint` (safetensors save/load), `engine` (the facade front ends hold),
`processes` (the same facade over engine processes, messages in `ipc`), and
the `custom_loss` package (uploaded losses: allow-list, compiler, interpreter; imported by name,
not re-exported here).

Importing this package, `catalog` or `errors` does not import torch: the names of the torch
modules are imported on first use (`mock_server/_lazy.py`), so `tinker-mock models` and the
server's start-up path read the catalogue without paying for torch.
"""

from typing import TYPE_CHECKING

from mock_server._lazy import lazy_exports
from mock_server.engine.catalog import ModelSpec, get_spec, load_catalog
from mock_server.engine.errors import (
    CheckpointError,
    EngineError,
    InvalidInputError,
    UnknownBaseModelError,
)

if TYPE_CHECKING:
    from mock_server.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from mock_server.engine.engine import Engine, EngineConfig
    from mock_server.engine.losses import LOSSES, get_loss
    from mock_server.engine.model import LoraConfig, derive_seed
    from mock_server.engine.processes import EngineProcesses, RemoteModel
    from mock_server.engine.sampling import SampledSequence, SampleResult, SampleSpec
    from mock_server.engine.training import (
        AdamConfig,
        DatumInput,
        DatumLoss,
        DatumLossResult,
        ForwardBackwardResult,
        OptimizerState,
        TrainingModel,
    )

__getattr__ = lazy_exports(
    __name__,
    {
        "Checkpoint": "checkpoint",
        "load_checkpoint": "checkpoint",
        "save_checkpoint": "checkpoint",
        "Engine": "engine",
        "EngineConfig": "engine",
        "LOSSES": "losses",
        "get_loss": "losses",
        "LoraConfig": "model",
        "derive_seed": "model",
        "EngineProcesses": "processes",
        "RemoteModel": "processes",
        "SampledSequence": "sampling",
        "SampleResult": "sampling",
        "SampleSpec": "sampling",
        "AdamConfig": "training",
        "DatumInput": "training",
        "DatumLoss": "training",
        "DatumLossResult": "training",
        "ForwardBackwardResult": "training",
        "OptimizerState": "training",
        "TrainingModel": "training",
    },
)

__all__ = [
    "LOSSES",
    "AdamConfig",
    "Checkpoint",
    "CheckpointError",
    "DatumInput",
    "DatumLoss",
    "DatumLossResult",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineProcesses",
    "ForwardBackwardResult",
    "InvalidInputError",
    "LoraConfig",
    "ModelSpec",
    "OptimizerState",
    "RemoteModel",
    "SampleResult",
    "SampleSpec",
    "SampledSequence",
    "TrainingModel",
    "UnknownBaseModelError",
    "derive_seed",
    "get_loss",
    "get_spec",
    "load_catalog",
    "load_checkpoint",
    "save_checkpoint",
]
