"""The deterministic training engine: pure torch + Python, no web framework.

Modules: `catalog` (base-model names -> tiny configs), `model` (the tiny causal LM with LoRA
adapters), `losses` (built-in loss formulas and input validation), `training` (one trainable
model: forward/backward, gradient accumulation, AdamW), `sampling` (seeded sampling and prompt
logprobs), `checkpoint` (safetensors save/load), `engine` (the facade front ends hold), and
the `custom_loss` package (uploaded losses: allow-list, compiler, interpreter; imported by name,
not re-exported here).
"""

from mock_server.engine.catalog import ModelSpec, get_spec, load_catalog
from mock_server.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mock_server.engine.engine import Engine, EngineConfig
from mock_server.engine.errors import (
    CheckpointError,
    EngineError,
    InvalidInputError,
    UnknownBaseModelError,
)
from mock_server.engine.losses import LOSSES, get_loss
from mock_server.engine.model import LoraConfig, derive_seed
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
    "ForwardBackwardResult",
    "InvalidInputError",
    "LoraConfig",
    "ModelSpec",
    "OptimizerState",
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
