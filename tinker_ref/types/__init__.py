"""Public value types of tinker-ref, named and shaped like the official `tinker.types`.

A script can switch `from tinker import types` to `from tinker_ref import types`: the same names,
fields, defaults and conversion rules, as plain frozen dataclasses over numpy (no pydantic).
Wire forms of the tensors and training data live in `tinker_ref.codec`, not here. The SDK's
plain JSON records (requests, REST answers, sessions, billing, telemetry) are generated from
its models into `sdk_records.py` and read / written through `Record` (`from_json`, `to_json`).
"""

from tinker_ref.types import sdk_records as _sdk_records
from tinker_ref.types.checkpoints import CheckpointType, ParsedCheckpointTinkerPath
from tinker_ref.types.custom_loss import (
    CustomLossGraph,
    CustomLossInput,
    CustomLossInputRank,
    CustomLossNode,
)
from tinker_ref.types.datum import (
    LIST_KEY_DTYPES,
    Datum,
    LossFnInputValue,
    PromptProvenanceSpan,
    ProvenanceSpan,
    ProvenanceSpans,
    SampledProvenanceSpan,
)
from tinker_ref.types.model_input import (
    EncodedTextChunk,
    ImageChunk,
    ImageFormat,
    ModelInput,
    ModelInputChunk,
)
from tinker_ref.types.optimizer import (
    AdamOptimizerConfig,
    DimuonOptimizerConfig,
    DimuonParams,
    OptimizerConfig,
    OptimParams,
)
from tinker_ref.types.responses import (
    GetInfoResponse,
    GetServerCapabilitiesResponse,
    LoadWeightsResponse,
    ModelData,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    SupportedModel,
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
from tinker_ref.types.sdk_records import *  # noqa: F403  (the generated records; see __all__)
from tinker_ref.types.tensor_data import TensorData, TensorDtype
from tinker_ref.types.training import AdamParams, ForwardBackwardOutput, LoraConfig
from tinker_ref.types.wire_names import (
    LossFnInputs,
    LossFnOutput,
    LossFnType,
    ModelID,
    RequestErrorCategory,
    RequestID,
    SamplingClientKind,
)

__all__ = [
    *_sdk_records.__all__,
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
    "AdamOptimizerConfig",
    "CheckpointType",
    "CustomLossGraph",
    "CustomLossInput",
    "CustomLossInputRank",
    "CustomLossNode",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "GetInfoResponse",
    "GetServerCapabilitiesResponse",
    "LoadWeightsResponse",
    "LossFnInputs",
    "LossFnOutput",
    "LossFnType",
    "ModelData",
    "ModelID",
    "OptimParams",
    "OptimStepResponse",
    "OptimizerConfig",
    "ParsedCheckpointTinkerPath",
    "ProvenanceSpans",
    "RequestErrorCategory",
    "RequestID",
    "SamplingClientKind",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsResponse",
    "SupportedModel",
]
