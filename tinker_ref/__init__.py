"""tinker-ref: a reference client for custom-loss training on the Tinker API.

    from tinker_ref import ServiceClient, types

    service = ServiceClient(base_url="http://127.0.0.1:8080", api_key="tml-dev")
    training = service.create_lora_training_client("Qwen/Qwen3-8B", rank=8)
    result = training.forward_backward_custom(data, loss_fn).result()
    training.optim_step(types.AdamParams(learning_rate=1e-4)).result()

This package holds the client and everything client and server share: the public types
(`tinker_ref.types`), the wire codecs (`tinker_ref.codec`) and the error tree
(`tinker_ref.errors`). The client never imports `mock_server`; the one exception is the
opt-in convenience module `tinker_ref.mock`, which loads the mock server only when its
`serve()` is called (it is not imported here).
"""

__version__ = "0.1.0"  # before the imports below: the transports read it

__title__ = "tinker_ref"

from tinker_ref import auth, errors, types
from tinker_ref.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    ConflictError,
    ExperimentalWarning,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestFailedError,
    TinkerError,
    UnprocessableEntityError,
)
from tinker_ref.futures import APIFuture
from tinker_ref.logs import setup_logging
from tinker_ref.loss_handle import LossHandle, PerDatumLossFn
from tinker_ref.rest_client import AdminClient, RestClient
from tinker_ref.sampling_client import SamplingClient
from tinker_ref.service_client import ServiceClient
from tinker_ref.training_client import TrainingClient
from tinker_ref.types import (
    AdamOptimizerConfig,
    AdamParams,
    Checkpoint,
    CheckpointType,
    Datum,
    DimuonOptimizerConfig,
    DimuonParams,
    DmelChunk,
    EncodedTextChunk,
    ForwardBackwardOutput,
    LoraConfig,
    ModelID,
    ModelInput,
    ModelInputChunk,
    OptimParams,
    OptimStepRequest,
    OptimStepResponse,
    ParsedCheckpointTinkerPath,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
    SampledSequence,
    SampleRequest,
    SampleResponse,
    SamplingParams,
    StopReason,
    TensorData,
    TensorDtype,
    TrainingRun,
)

# tinker_ref's clients are their own resolved futures (futures.ResolvedClientFuture), so the
# SDK's "future of a client" classes are the clients themselves here.
BackcompatTrainingClientFuture = TrainingClient
BackcompatSamplingClientFuture = SamplingClient

setup_logging()  # `TINKER_LOG=debug|info`, as the official SDK reads it at import

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIFuture",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AdamOptimizerConfig",
    "AdamParams",
    "AdminClient",
    "AuthenticationError",
    "BackcompatSamplingClientFuture",
    "BackcompatTrainingClientFuture",
    "BadRequestError",
    "BillingError",
    "Checkpoint",
    "CheckpointType",
    "ConflictError",
    "Datum",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "DmelChunk",
    "EncodedTextChunk",
    "ExperimentalWarning",
    "ForwardBackwardOutput",
    "InternalServerError",
    "LoraConfig",
    "LossHandle",
    "ModelID",
    "ModelInput",
    "ModelInputChunk",
    "NotFoundError",
    "OptimParams",
    "OptimStepRequest",
    "OptimStepResponse",
    "ParsedCheckpointTinkerPath",
    "PerDatumLossFn",
    "PermissionDeniedError",
    "PromptProvenanceSpan",
    "RateLimitError",
    "RequestFailedError",
    "RestClient",
    "SampleRequest",
    "SampleResponse",
    "SampledProvenanceSpan",
    "SampledSequence",
    "SamplingClient",
    "SamplingParams",
    "ServiceClient",
    "StopReason",
    "TensorData",
    "TensorDtype",
    "TinkerError",
    "TrainingClient",
    "TrainingRun",
    "UnprocessableEntityError",
    "__title__",
    "__version__",
    "auth",
    "errors",
    "types",
]
