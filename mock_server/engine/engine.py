"""The engine facade: the catalogue, shared frozen base weights, and model construction.

Front ends hold one `Engine` per server. It caches the frozen base weights of each base model
(read-only, shared by every model and sampler on it) and creates `TrainingModel`s whose LoRA
seeds are either the client's or derived from the server seed and a stable model key, so the
same server seed and the same request sequence always produce the same weights.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mock_server.engine.catalog import ModelSpec, get_spec, load_catalog
from mock_server.engine.checkpoint import Checkpoint
from mock_server.engine.model import (
    Adapter,
    BaseWeights,
    LoraConfig,
    derive_seed,
    init_base_weights,
)
from mock_server.engine.sampling import SampleResult, SampleSpec, sample, sample_steps
from mock_server.engine.slices import Preemption, Unfinished, advance
from mock_server.engine.training import TrainingModel


@dataclass(frozen=True)
class EngineConfig:
    seed: int = 0  # server seed: base weights and default LoRA seeds derive from it
    # torch's intra-op thread count (process-wide). Reductions that torch or BLAS split across
    # threads round differently with a different split, so results are bit-stable only for a
    # fixed count: 1 makes them independent of the host's cores. None leaves torch's setting.
    intra_op_threads: int | None = 1


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        if self.config.intra_op_threads is not None:
            torch.set_num_threads(self.config.intra_op_threads)
        self._bases: dict[str, BaseWeights] = {}
        self._lock = threading.Lock()
        self._preemption = Preemption()

    def bind_worker(self, worker: int) -> None:
        """`EnginePool`'s `bind`: the calling thread is pool worker `worker`."""
        self._preemption.bind(worker)

    def preempt(self, worker: int) -> None:
        """`EnginePool`'s `preempt`: sliced work on `worker` pauses at its next step."""
        self._preemption.request(worker)

    @staticmethod
    def affinity(model: object) -> None:
        """Any pool worker may run ops on an in-process model (see `EngineProcesses`)."""
        return None

    @staticmethod
    def placement() -> None:
        """A new model may be created by any pool worker (see `EngineProcesses`)."""
        return None

    @staticmethod
    def catalog() -> list[ModelSpec]:
        return list(load_catalog().values())

    def base_weights(self, base_model: str) -> BaseWeights:
        spec = get_spec(base_model)  # raises UnknownBaseModelError first
        with self._lock:
            base = self._bases.get(base_model)
            if base is None:
                base = self._bases[base_model] = init_base_weights(spec, self.config.seed)
            return base

    def create_model(
        self, base_model: str, lora: LoraConfig, lora_seed: int | None, model_key: str
    ) -> TrainingModel:
        """A new model; LoRA seed = the client's, else derived from (server seed, model_key)."""
        seed = lora_seed if lora_seed is not None else derive_seed(self.config.seed, model_key)
        return TrainingModel(self.base_weights(base_model), lora, seed)

    def model_from_checkpoint(self, checkpoint: Checkpoint) -> TrainingModel:
        model = TrainingModel(
            self.base_weights(checkpoint.base_model), checkpoint.lora, checkpoint.lora_seed
        )
        model.load(checkpoint.weights, checkpoint.optimizer)
        return model

    def sample(self, base_model: str, weights: Adapter, spec: SampleSpec) -> SampleResult:
        """Sample from `weights` (a snapshot) or, with an empty dict, from the base model."""
        return sample(self.base_weights(base_model), weights, spec)

    def sample_sliced(
        self,
        base_model: str,
        weights: Adapter,
        spec: SampleSpec,
        slice_seconds: float,
        pause: Callable[[], bool] | None = None,
    ) -> SampleResult | Unfinished[SampleResult]:
        """`sample`, paused (between tokens) as an `Unfinished` when another session waits for
        this worker (`preempt`) or after `slice_seconds`; the same result, bit for bit."""
        steps = sample_steps(self.base_weights(base_model), weights, spec)
        return advance(steps, slice_seconds, pause or self._preemption.taken)
