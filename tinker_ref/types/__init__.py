"""Public value types of tinker-ref, named and shaped like the official `tinker.types`.

A script can switch `from tinker import types` to `from tinker_ref import types`: the same names,
fields, defaults and conversion rules, as plain frozen dataclasses over numpy (no pydantic).
Wire forms live in `tinker_ref.codec`, not here.
"""

from tinker_ref.types.datum import (
    LIST_KEY_DTYPES,
    Datum,
    LossFnInputValue,
    PromptProvenanceSpan,
    ProvenanceSpan,
    SampledProvenanceSpan,
)
from tinker_ref.types.model_input import (
    EncodedTextChunk,
    ImageChunk,
    ImageFormat,
    ModelInput,
    ModelInputChunk,
)
from tinker_ref.types.sampling import (
    MASK_LOGPROB,
    PromptAltTokens,
    SampledSequence,
    SampleResponse,
    SamplingParams,
    StopReason,
    TopkLogprobs,
)
from tinker_ref.types.tensor_data import TensorData, TensorDtype
from tinker_ref.types.training import AdamParams, ForwardBackwardOutput, LoraConfig

__all__ = [
    "LIST_KEY_DTYPES",
    "MASK_LOGPROB",
    "AdamParams",
    "Datum",
    "EncodedTextChunk",
    "ForwardBackwardOutput",
    "ImageChunk",
    "ImageFormat",
    "LoraConfig",
    "LossFnInputValue",
    "ModelInput",
    "ModelInputChunk",
    "PromptAltTokens",
    "PromptProvenanceSpan",
    "ProvenanceSpan",
    "SampleResponse",
    "SampledProvenanceSpan",
    "SampledSequence",
    "SamplingParams",
    "StopReason",
    "TensorData",
    "TensorDtype",
    "TopkLogprobs",
]
