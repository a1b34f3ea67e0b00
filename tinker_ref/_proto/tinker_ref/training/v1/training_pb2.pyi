from tinker_ref._proto.tinker_ref.wire.v1 import wire_pb2 as _wire_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetClientConfigRequest(_message.Message):
    __slots__ = ("sdk_version",)
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    sdk_version: str
    def __init__(self, sdk_version: _Optional[str] = ...) -> None: ...

class ClientConfig(_message.Message):
    __slots__ = ("fwdbwd_max_chunk_len", "fwdbwd_max_chunk_bytes_count", "parallel_fwdbwd_chunks", "custom_loss_server_side")
    FWDBWD_MAX_CHUNK_LEN_FIELD_NUMBER: _ClassVar[int]
    FWDBWD_MAX_CHUNK_BYTES_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FWDBWD_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_LOSS_SERVER_SIDE_FIELD_NUMBER: _ClassVar[int]
    fwdbwd_max_chunk_len: int
    fwdbwd_max_chunk_bytes_count: int
    parallel_fwdbwd_chunks: bool
    custom_loss_server_side: bool
    def __init__(self, fwdbwd_max_chunk_len: _Optional[int] = ..., fwdbwd_max_chunk_bytes_count: _Optional[int] = ..., parallel_fwdbwd_chunks: _Optional[bool] = ..., custom_loss_server_side: _Optional[bool] = ...) -> None: ...

class GetServerCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SupportedModel(_message.Message):
    __slots__ = ("model_name", "max_context_length", "trainable", "sampleable")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLEABLE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    max_context_length: int
    trainable: bool
    sampleable: bool
    def __init__(self, model_name: _Optional[str] = ..., max_context_length: _Optional[int] = ..., trainable: _Optional[bool] = ..., sampleable: _Optional[bool] = ...) -> None: ...

class GetServerCapabilitiesResponse(_message.Message):
    __slots__ = ("supported_models",)
    SUPPORTED_MODELS_FIELD_NUMBER: _ClassVar[int]
    supported_models: _containers.RepeatedCompositeFieldContainer[SupportedModel]
    def __init__(self, supported_models: _Optional[_Iterable[_Union[SupportedModel, _Mapping]]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("tags", "user_metadata", "project_id", "sdk_version")
    class UserMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TAGS_FIELD_NUMBER: _ClassVar[int]
    USER_METADATA_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    user_metadata: _containers.ScalarMap[str, str]
    project_id: str
    sdk_version: str
    def __init__(self, tags: _Optional[_Iterable[str]] = ..., user_metadata: _Optional[_Mapping[str, str]] = ..., project_id: _Optional[str] = ..., sdk_version: _Optional[str] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SessionHeartbeatRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SessionHeartbeatResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FinishSessionRequest(_message.Message):
    __slots__ = ("session_id", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FinishSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("rank", "seed", "train_mlp", "train_attn", "train_unembed")
    RANK_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_MLP_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ATTN_FIELD_NUMBER: _ClassVar[int]
    TRAIN_UNEMBED_FIELD_NUMBER: _ClassVar[int]
    rank: int
    seed: int
    train_mlp: bool
    train_attn: bool
    train_unembed: bool
    def __init__(self, rank: _Optional[int] = ..., seed: _Optional[int] = ..., train_mlp: _Optional[bool] = ..., train_attn: _Optional[bool] = ..., train_unembed: _Optional[bool] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("session_id", "model_seq_id", "base_model", "lora_config", "user_metadata")
    class UserMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LORA_CONFIG_FIELD_NUMBER: _ClassVar[int]
    USER_METADATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_seq_id: int
    base_model: str
    lora_config: LoraConfig
    user_metadata: _containers.ScalarMap[str, str]
    def __init__(self, session_id: _Optional[str] = ..., model_seq_id: _Optional[int] = ..., base_model: _Optional[str] = ..., lora_config: _Optional[_Union[LoraConfig, _Mapping]] = ..., user_metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FutureHandle(_message.Message):
    __slots__ = ("request_id", "sample_sequence_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SEQUENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sample_sequence_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., sample_sequence_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("model_id", "arch", "model_name", "tokenizer_id", "is_lora", "lora_rank")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_ID_FIELD_NUMBER: _ClassVar[int]
    IS_LORA_FIELD_NUMBER: _ClassVar[int]
    LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    arch: str
    model_name: str
    tokenizer_id: str
    is_lora: bool
    lora_rank: int
    def __init__(self, model_id: _Optional[str] = ..., arch: _Optional[str] = ..., model_name: _Optional[str] = ..., tokenizer_id: _Optional[str] = ..., is_lora: _Optional[bool] = ..., lora_rank: _Optional[int] = ...) -> None: ...

class AdamParams(_message.Message):
    __slots__ = ("learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    GRAD_CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    grad_clip_norm: float
    def __init__(self, learning_rate: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., eps: _Optional[float] = ..., weight_decay: _Optional[float] = ..., grad_clip_norm: _Optional[float] = ...) -> None: ...

class OptimStepRequest(_message.Message):
    __slots__ = ("model_id", "seq_id", "adam_params")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    ADAM_PARAMS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    seq_id: int
    adam_params: AdamParams
    def __init__(self, model_id: _Optional[str] = ..., seq_id: _Optional[int] = ..., adam_params: _Optional[_Union[AdamParams, _Mapping]] = ...) -> None: ...

class SaveWeightsRequest(_message.Message):
    __slots__ = ("model_id", "seq_id", "path", "ttl_seconds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    seq_id: int
    path: str
    ttl_seconds: int
    def __init__(self, model_id: _Optional[str] = ..., seq_id: _Optional[int] = ..., path: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class SaveWeightsForSamplerRequest(_message.Message):
    __slots__ = ("model_id", "seq_id", "path", "sampling_session_seq_id", "ttl_seconds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_SESSION_SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    seq_id: int
    path: str
    sampling_session_seq_id: int
    ttl_seconds: int
    def __init__(self, model_id: _Optional[str] = ..., seq_id: _Optional[int] = ..., path: _Optional[str] = ..., sampling_session_seq_id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class LoadWeightsRequest(_message.Message):
    __slots__ = ("existing_model", "new_model", "path", "optimizer")
    EXISTING_MODEL_FIELD_NUMBER: _ClassVar[int]
    NEW_MODEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    existing_model: ExistingModel
    new_model: NewModel
    path: str
    optimizer: bool
    def __init__(self, existing_model: _Optional[_Union[ExistingModel, _Mapping]] = ..., new_model: _Optional[_Union[NewModel, _Mapping]] = ..., path: _Optional[str] = ..., optimizer: _Optional[bool] = ...) -> None: ...

class ExistingModel(_message.Message):
    __slots__ = ("model_id", "seq_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    seq_id: int
    def __init__(self, model_id: _Optional[str] = ..., seq_id: _Optional[int] = ...) -> None: ...

class NewModel(_message.Message):
    __slots__ = ("session_id", "model_seq_id", "user_metadata")
    class UserMetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    USER_METADATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_seq_id: int
    user_metadata: _containers.ScalarMap[str, str]
    def __init__(self, session_id: _Optional[str] = ..., model_seq_id: _Optional[int] = ..., user_metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateSamplingSessionRequest(_message.Message):
    __slots__ = ("session_id", "sampling_session_seq_id", "model_path", "base_model")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_SESSION_SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sampling_session_seq_id: int
    model_path: str
    base_model: str
    def __init__(self, session_id: _Optional[str] = ..., sampling_session_seq_id: _Optional[int] = ..., model_path: _Optional[str] = ..., base_model: _Optional[str] = ...) -> None: ...

class CreateSamplingSessionResponse(_message.Message):
    __slots__ = ("sampling_session_id",)
    SAMPLING_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    sampling_session_id: str
    def __init__(self, sampling_session_id: _Optional[str] = ...) -> None: ...

class GetSamplerRequest(_message.Message):
    __slots__ = ("sampling_session_id",)
    SAMPLING_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    sampling_session_id: str
    def __init__(self, sampling_session_id: _Optional[str] = ...) -> None: ...

class GetSamplerResponse(_message.Message):
    __slots__ = ("sampler_id", "base_model", "model_path")
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_PATH_FIELD_NUMBER: _ClassVar[int]
    sampler_id: str
    base_model: str
    model_path: str
    def __init__(self, sampler_id: _Optional[str] = ..., base_model: _Optional[str] = ..., model_path: _Optional[str] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("sampling_session_id", "seq_id", "prompt", "num_samples", "sampling_params", "prompt_logprobs", "topk_prompt_logprobs")
    SAMPLING_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_PARAMS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOPK_PROMPT_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    sampling_session_id: str
    seq_id: int
    prompt: _containers.RepeatedCompositeFieldContainer[_wire_pb2.Chunk]
    num_samples: int
    sampling_params: SamplingParams
    prompt_logprobs: bool
    topk_prompt_logprobs: int
    def __init__(self, sampling_session_id: _Optional[str] = ..., seq_id: _Optional[int] = ..., prompt: _Optional[_Iterable[_Union[_wire_pb2.Chunk, _Mapping]]] = ..., num_samples: _Optional[int] = ..., sampling_params: _Optional[_Union[SamplingParams, _Mapping]] = ..., prompt_logprobs: _Optional[bool] = ..., topk_prompt_logprobs: _Optional[int] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "seed", "temperature", "top_k", "top_p", "stop_strs", "stop_tokens")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_STRS_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    seed: int
    temperature: float
    top_k: int
    top_p: float
    stop_strs: _wire_pb2.StopStrings
    stop_tokens: _wire_pb2.StopTokens
    def __init__(self, max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., stop_strs: _Optional[_Union[_wire_pb2.StopStrings, _Mapping]] = ..., stop_tokens: _Optional[_Union[_wire_pb2.StopTokens, _Mapping]] = ...) -> None: ...

class RetrieveFutureRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class RequestFailed(_message.Message):
    __slots__ = ("error", "category")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    error: str
    category: str
    def __init__(self, error: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class TryAgain(_message.Message):
    __slots__ = ("queue_state",)
    QUEUE_STATE_FIELD_NUMBER: _ClassVar[int]
    queue_state: str
    def __init__(self, queue_state: _Optional[str] = ...) -> None: ...

class RetrieveFutureResponse(_message.Message):
    __slots__ = ("try_again", "failed", "forward_backward", "sample", "create_model", "optim_step", "save_weights", "save_weights_for_sampler", "load_weights")
    TRY_AGAIN_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FORWARD_BACKWARD_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    CREATE_MODEL_FIELD_NUMBER: _ClassVar[int]
    OPTIM_STEP_FIELD_NUMBER: _ClassVar[int]
    SAVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SAVE_WEIGHTS_FOR_SAMPLER_FIELD_NUMBER: _ClassVar[int]
    LOAD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    try_again: TryAgain
    failed: RequestFailed
    forward_backward: _wire_pb2.ForwardBackwardOutput
    sample: _wire_pb2.SampleResponse
    create_model: CreateModelResult
    optim_step: OptimStepResult
    save_weights: PathResult
    save_weights_for_sampler: SaveWeightsForSamplerResult
    load_weights: PathResult
    def __init__(self, try_again: _Optional[_Union[TryAgain, _Mapping]] = ..., failed: _Optional[_Union[RequestFailed, _Mapping]] = ..., forward_backward: _Optional[_Union[_wire_pb2.ForwardBackwardOutput, _Mapping]] = ..., sample: _Optional[_Union[_wire_pb2.SampleResponse, _Mapping]] = ..., create_model: _Optional[_Union[CreateModelResult, _Mapping]] = ..., optim_step: _Optional[_Union[OptimStepResult, _Mapping]] = ..., save_weights: _Optional[_Union[PathResult, _Mapping]] = ..., save_weights_for_sampler: _Optional[_Union[SaveWeightsForSamplerResult, _Mapping]] = ..., load_weights: _Optional[_Union[PathResult, _Mapping]] = ...) -> None: ...

class RunUpdate(_message.Message):
    __slots__ = ("accepted", "outcome")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    accepted: FutureHandle
    outcome: RetrieveFutureResponse
    def __init__(self, accepted: _Optional[_Union[FutureHandle, _Mapping]] = ..., outcome: _Optional[_Union[RetrieveFutureResponse, _Mapping]] = ...) -> None: ...

class CreateModelResult(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class OptimStepResult(_message.Message):
    __slots__ = ("metrics",)
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PathResult(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class SaveWeightsForSamplerResult(_message.Message):
    __slots__ = ("path", "sampling_session_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    sampling_session_id: str
    def __init__(self, path: _Optional[str] = ..., sampling_session_id: _Optional[str] = ...) -> None: ...
