"""Hypothesis strategies for the state machine's requests, as plain numpy values.

A `DatumSpec` is one training example in the form both sides can use: `to_datum()` builds the
`tinker_ref.types.Datum` the backend receives, `tensors()` the torch tensors the reference model
computes with. Both come from the same float32 / int64 arrays, so the two sides see identical
bits. Token ids stay below `TOKEN_LIMIT`, inside the vocabulary of every real and mock model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from hypothesis import strategies as st
from torch import Tensor

from tinker_ref.types import AdamParams, Datum, ModelInput

TOKEN_LIMIT = 64  # ids in [0, 64): valid for the smallest mock model and for every real model
OUT_OF_VOCAB = 2**40  # larger than any vocabulary; int64 target ids carry it on every wire
RL_LOSSES = ("importance_sampling", "ppo", "cispo", "dro", "gspo")


@dataclass(frozen=True)
class DatumSpec:
    tokens: tuple[int, ...]  # model input (N,)
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)  # target_tokens (N,)|(N, K)

    def to_datum(self) -> Datum:
        return Datum(ModelInput.from_ints(list(self.tokens)), dict(self.inputs))

    def tensors(self) -> tuple[Tensor, dict[str, Tensor]]:
        tokens = torch.tensor(self.tokens, dtype=torch.int64)
        return tokens, {k: torch.from_numpy(v.copy()) for k, v in self.inputs.items()}

    @property
    def targets(self) -> np.ndarray:
        return self.inputs["target_tokens"]

    def __repr__(self) -> str:
        # compact, so that note() lines of a shrunk example stay readable
        parts = [f"tokens={list(self.tokens)}"]
        parts += [f"{k}={np.asarray(v).tolist()}" for k, v in self.inputs.items()]
        return f"DatumSpec({', '.join(parts)})"


def _f32(values: list[float] | list[list[float]]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _i64(values: list[int] | list[list[int]]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


tokens_st = st.integers(0, TOKEN_LIMIT - 1)
# small values first so shrinking ends on readable weights; floats cover everything else
weight_st = st.one_of(
    st.sampled_from([1.0, 0.0, -1.0, 0.5, 2.0]),
    st.floats(-2.0, 2.0, width=32, allow_subnormal=False),
)
sampler_logprob_st = st.floats(-6.0, 0.0, width=32, allow_subnormal=False)
advantage_st = st.one_of(
    st.sampled_from([1.0, -1.0, 0.0]), st.floats(-2.0, 2.0, width=32, allow_subnormal=False)
)


@st.composite
def datum_spec(draw: st.DrawFn, loss: str, k: int = 0, max_len: int = 5) -> DatumSpec:
    """One datum for built-in loss `loss`; `k > 0` gives [N, K] targets (cross_entropy)."""
    n = draw(st.integers(1, max_len))
    tokens = tuple(draw(st.lists(tokens_st, min_size=n, max_size=n)))
    shape = (n, k) if k else (n,)
    size = n * max(k, 1)
    targets = _i64(draw(st.lists(tokens_st, min_size=size, max_size=size))).reshape(shape)
    inputs: dict[str, np.ndarray] = {"target_tokens": targets}
    if loss == "cross_entropy":
        inputs["weights"] = _f32(draw(st.lists(weight_st, min_size=size, max_size=size)))
        inputs["weights"] = inputs["weights"].reshape(shape)
    else:
        inputs["logprobs"] = _f32(draw(st.lists(sampler_logprob_st, min_size=n, max_size=n)))
        inputs["advantages"] = _f32(draw(st.lists(advantage_st, min_size=n, max_size=n)))
        if loss == "gspo":
            mask = draw(st.lists(st.sampled_from([1.0, 0.0]), min_size=n, max_size=n))
            inputs["sequence_ratio_mask"] = _f32(mask)
    return DatumSpec(tokens, inputs)


@st.composite
def builtin_batch(draw: st.DrawFn, loss: str) -> tuple[list[DatumSpec], dict[str, float]]:
    """A batch (1-4 datums) and loss_fn_config for a built-in loss."""
    k = draw(st.sampled_from([0, 2, 3])) if loss == "cross_entropy" else 0
    batch = draw(st.lists(datum_spec(loss, k), min_size=1, max_size=4))
    config: dict[str, float] = {}
    if loss in ("ppo", "cispo", "gspo") and draw(st.booleans()):
        config = {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}
    if loss == "dro":
        config = {"beta": draw(st.sampled_from([0.05, 0.5]))}
    return batch, config


@st.composite
def custom_batch(draw: st.DrawFn, name: str) -> list[DatumSpec]:
    """A batch for catalogue loss `name` (see tinker_ref.testing.losses.CUSTOM_LOSSES)."""
    if name == "distribution_brier":
        batch = []
        for _ in range(draw(st.integers(1, 3))):
            n = draw(st.integers(1, 4))
            k = draw(st.integers(2, 3))
            tokens = tuple(draw(st.lists(tokens_st, min_size=n, max_size=n)))
            candidates = draw(st.lists(tokens_st, min_size=k, max_size=k, unique=True))
            targets = np.zeros((n, k), dtype=np.int64)
            targets[-1] = candidates  # only the answer position scores the K labels
            target = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=k, max_size=k))
            weights = np.zeros((n, k), dtype=np.float32)
            weights[-1] = target
            batch.append(DatumSpec(tokens, {"target_tokens": targets, "weights": weights}))
        return batch
    pairs = name == "dpo_pairwise"
    count = 2 * draw(st.integers(1, 2)) if pairs else draw(st.integers(1, 4))
    batch = draw(st.lists(datum_spec("cross_entropy"), min_size=count, max_size=count))
    if pairs:
        refs = [
            _f32(draw(st.lists(sampler_logprob_st, min_size=len(d.tokens), max_size=len(d.tokens))))
            for d in batch
        ]
        pairs_with_refs = zip(batch, refs, strict=True)
        batch = [DatumSpec(d.tokens, {**d.inputs, "ref_logprobs": r}) for d, r in pairs_with_refs]
    return batch


adam_params_st = st.builds(
    AdamParams,
    learning_rate=st.sampled_from([1e-2, 1e-3, 0.1]),
    beta1=st.sampled_from([0.9, 0.0]),
    beta2=st.sampled_from([0.95, 0.999]),
    eps=st.sampled_from([1e-8, 1e-12]),
    weight_decay=st.sampled_from([0.0, 0.01]),
    grad_clip_norm=st.sampled_from([0.0, 0.5]),
)
