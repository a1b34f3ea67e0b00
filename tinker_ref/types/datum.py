"""`Datum`, one training example: a model input plus its named loss inputs.

Owns the official SDK's conversion rules for `loss_fn_inputs` values (`tinker/types/datum.py`):
TensorData is kept; torch tensors become dense TensorData, except 2-D `target_tokens`/`weights`,
which become sparse CSR when that is smaller; numpy arrays keep their kind (float -> float32,
signed int -> int64, bool/unsigned refused); plain lists take their dtype from the key. Also the
optional provenance spans (StableReinforce) that travel with a datum on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from tinker_ref.types.model_input import ModelInput
from tinker_ref.types.tensor_data import TensorData, TensorDtype

if TYPE_CHECKING:
    import torch

__all__ = [
    "LIST_KEY_DTYPES",
    "Datum",
    "LossFnInputValue",
    "PromptProvenanceSpan",
    "ProvenanceSpan",
    "ProvenanceSpans",
    "SampledProvenanceSpan",
]

# dtype of a plain Python list under each key; a list under any other key is refused because
# its dtype would be a guess.
LIST_KEY_DTYPES: dict[str, TensorDtype] = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
    "sequence_ratio_mask": "float32",
}
_SPARSE_ELIGIBLE_KEYS = frozenset({"target_tokens", "weights"})

LossFnInputValue: TypeAlias = "TensorData | npt.NDArray[Any] | torch.Tensor | Sequence[Any]"


@dataclass(frozen=True, kw_only=True)
class PromptProvenanceSpan:
    """Datum positions that are `[offset, offset + length)` of a sampled sequence's prompt."""

    sequence_id: str
    offset: int = 0
    length: int

    def __post_init__(self) -> None:
        _check_span(self.sequence_id, self.offset, self.length)


@dataclass(frozen=True, kw_only=True)
class SampledProvenanceSpan:
    """Datum positions that are `[offset, offset + length)` of a sequence's sampled tokens."""

    sequence_id: str
    offset: int = 0
    length: int

    def __post_init__(self) -> None:
        _check_span(self.sequence_id, self.offset, self.length)


ProvenanceSpan: TypeAlias = PromptProvenanceSpan | SampledProvenanceSpan
ProvenanceSpans: TypeAlias = list[ProvenanceSpan]  # the SDK's name for a datum's span list


@dataclass(frozen=True, init=False)
class Datum:
    """One example: `model_input` and `loss_fn_inputs` (each first dimension = input length)."""

    model_input: ModelInput
    loss_fn_inputs: dict[str, TensorData]
    model_input_spans: list[ProvenanceSpan] | None
    loss_fn_input_spans: list[ProvenanceSpan] | None

    def __init__(
        self,
        model_input: ModelInput,
        loss_fn_inputs: Mapping[str, LossFnInputValue] | None = None,
        model_input_spans: Sequence[ProvenanceSpan] | None = None,
        loss_fn_input_spans: Sequence[ProvenanceSpan] | None = None,
    ) -> None:
        if not isinstance(model_input, ModelInput):
            raise TypeError(
                f"Datum.model_input must be a ModelInput, got {type(model_input).__name__}"
            )
        converted: dict[str, TensorData] = {}
        for key, value in (loss_fn_inputs or {}).items():
            if not isinstance(key, str):
                raise TypeError(f"loss_fn_inputs keys must be str, got {key!r}")
            converted[key] = convert_loss_fn_input(key, value)
        if (model_input_spans is None) != (loss_fn_input_spans is None):
            raise ValueError("provenance comes as a pair: set both span lists or neither")
        object.__setattr__(self, "model_input", model_input)
        object.__setattr__(self, "loss_fn_inputs", converted)
        object.__setattr__(self, "model_input_spans", _check_spans(model_input_spans))
        object.__setattr__(self, "loss_fn_input_spans", _check_spans(loss_fn_input_spans))

    def with_provenance(
        self, model_input: Sequence[ProvenanceSpan], loss_fn_inputs: Sequence[ProvenanceSpan]
    ) -> Datum:
        """A copy carrying provenance; the runs must tile the input and 1-D `target_tokens`."""
        _check_tiling("model_input", model_input, self.model_input.length)
        target_tokens = self.loss_fn_inputs.get("target_tokens")
        if target_tokens is not None and len(target_tokens.dense_shape) == 1:
            _check_tiling("loss_fn_inputs", loss_fn_inputs, target_tokens.dense_shape[0])
        return Datum(self.model_input, self.loss_fn_inputs, model_input, loss_fn_inputs)


def convert_loss_fn_input(key: str, value: object) -> TensorData:
    """Convert one `loss_fn_inputs` value to TensorData with the official SDK's rules."""
    if isinstance(value, TensorData):
        return value
    if isinstance(value, np.ndarray):
        return TensorData.from_numpy(value)
    if type(value).__module__.startswith("torch") and hasattr(value, "ndim"):
        tensor: torch.Tensor = value  # type: ignore[assignment]
        if key in _SPARSE_ELIGIBLE_KEYS and tensor.ndim == 2:
            return TensorData.from_torch_sparse(tensor)
        return TensorData.from_torch(tensor)
    if isinstance(value, (list, tuple)):
        dtype = LIST_KEY_DTYPES.get(key)
        if dtype is None:
            raise ValueError(
                f"loss_fn_inputs[{key!r}] is a plain list, whose dtype is only known for the keys "
                f"{sorted(LIST_KEY_DTYPES)}; pass a numpy array, torch tensor or TensorData"
            )
        try:
            array = np.asarray(value)
        except ValueError as exc:
            raise ValueError(
                f"loss_fn_inputs[{key!r}] must be a rectangular numeric array; "
                "ragged nested lists are not supported"
            ) from exc
        if array.size and array.dtype.kind not in "fiub":
            raise ValueError(f"loss_fn_inputs[{key!r}] must hold numbers, got {array.dtype}")
        # The SDK casts list values to the key's dtype (so [0.5] under target_tokens truncates
        # to 0, exactly as numpy's astype does there).
        typed = array.astype(np.int64 if dtype == "int64" else np.float32)
        return TensorData(data=typed, dtype=dtype, shape=list(typed.shape))
    raise TypeError(
        f"unsupported loss_fn_inputs value for {key!r}: {type(value).__name__} "
        "(expected TensorData, numpy array, torch tensor or list)"
    )


def _check_span(sequence_id: str, offset: int, length: int) -> None:
    if not isinstance(sequence_id, str) or not sequence_id:
        raise ValueError(
            f"provenance span sequence_id must be a non-empty str, got {sequence_id!r}"
        )
    if offset < 0:
        raise ValueError(f"provenance span offset must be >= 0, got {offset}")
    if length < 0:
        raise ValueError(f"provenance span length must be >= 0, got {length}")


def _check_spans(spans: Sequence[ProvenanceSpan] | None) -> list[ProvenanceSpan] | None:
    if spans is None:
        return None
    checked = list(spans)
    for span in checked:
        if not isinstance(span, (PromptProvenanceSpan, SampledProvenanceSpan)):
            raise TypeError(
                "provenance spans must be PromptProvenanceSpan or SampledProvenanceSpan, "
                f"got {type(span).__name__}"
            )
    return checked


def _check_tiling(what: str, spans: Sequence[ProvenanceSpan], expected: int) -> None:
    total = sum(span.length for span in spans)
    if total != expected:
        raise ValueError(
            f"with_provenance {what} spans cover {total} positions but the field has {expected}"
        )
