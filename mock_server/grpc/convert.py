"""gRPC messages <-> the service's typed requests and results.

Inbound, every message becomes the same `mock_server.service.requests` value the HTTP front end
builds from JSON, with the HTTP API's defaults for absent `optional` fields (so an op
fingerprints — and deduplicates — identically on both transports). Outbound, results become
`tinker_ref.training.v1` messages; forward/backward and sample results are the HTTP API's
protobuf bytes (the shared codec's, cached on the future record under the same key the HTTP
front end uses), embedded as the response's sub-message.
"""

from __future__ import annotations

from mock_server.engine import ModelSpec
from mock_server.service.convert import prompt_token_ids
from mock_server.service.errors import MalformedRequest
from mock_server.service.futures import FutureRecord
from mock_server.service.requests import (
    AdamStep,
    CreateModel,
    CreateSamplingSession,
    CreateSession,
    ForwardBackward,
    LoadWeights,
    LoraSpec,
    OptimStep,
    Sample,
    SampleParams,
    SaveWeights,
    SaveWeightsForSampler,
)
from mock_server.service.results import (
    CreateModelResult,
    LoadWeightsResult,
    ModelInfo,
    OptimStepResult,
    SamplerInfo,
    SaveWeightsForSamplerResult,
    SaveWeightsResult,
    SubmittedFuture,
)
from tinker_ref._proto.tinker_ref.training.v1 import training_pb2 as pb
from tinker_ref.codec import (
    CodecError,
    decode_forward_backward_request,
    encode_forward_backward_output,
    encode_sample_response,
)
from tinker_ref.codec.proto_tensor import chunk_from_proto
from tinker_ref.types import ForwardBackwardOutput, SampleResponse

# The HTTP front end caches protobuf results under their media type; the bytes are the same.
PROTOBUF_CACHE_KEY = "application/x-protobuf"

# ----- requests ----------------------------------------------------------------------------------


def _metadata(values: object) -> dict[str, str] | None:
    # proto3 maps cannot say "absent"; empty is what the HTTP API's missing field means.
    return dict(values) or None  # type: ignore[call-overload]


def create_session(message: pb.CreateSessionRequest) -> CreateSession:
    return CreateSession(
        tags=tuple(message.tags),
        user_metadata=dict(message.user_metadata),
        sdk_version=message.sdk_version or None,
        project_id=message.project_id if message.HasField("project_id") else None,
    )


def create_model(message: pb.CreateModelRequest) -> CreateModel:
    lora = LoraSpec()
    if message.HasField("lora_config"):
        config = message.lora_config
        lora = LoraSpec(
            rank=config.rank if config.HasField("rank") else lora.rank,
            seed=config.seed if config.HasField("seed") else None,
            train_mlp=config.train_mlp if config.HasField("train_mlp") else True,
            train_attn=config.train_attn if config.HasField("train_attn") else True,
            train_unembed=config.train_unembed if config.HasField("train_unembed") else True,
        )
    return CreateModel(
        session_id=message.session_id,
        model_seq_id=message.model_seq_id,
        base_model=message.base_model,
        lora=lora,
        user_metadata=_metadata(message.user_metadata),
    )


def forward_backward(payload: bytes) -> ForwardBackward:
    """ForwardBackward arrives as the HTTP API's protobuf bytes; the shared codec decodes it, so
    the same input fails with the same message and field on both transports."""
    try:
        decoded = decode_forward_backward_request(payload)
    except CodecError as exc:
        raise MalformedRequest(exc.message, exc.field) from exc
    return ForwardBackward(
        model_id=decoded.model_id,
        seq_id=decoded.seq_id,
        data=tuple(decoded.data),
        loss_fn=decoded.loss_fn,
        loss_fn_config=decoded.loss_fn_config,
        forward_only=decoded.forward_only,
    )


def optim_step(message: pb.OptimStepRequest) -> OptimStep:
    if not message.HasField("adam_params"):
        raise MalformedRequest("required field is missing", "adam_params")
    adam, default = message.adam_params, AdamStep()
    values = {
        name: getattr(adam, name) if adam.HasField(name) else getattr(default, name)
        for name in (
            "learning_rate",
            "beta1",
            "beta2",
            "eps",
            "weight_decay",
            "grad_clip_norm",
        )
    }
    return OptimStep(model_id=message.model_id, seq_id=message.seq_id, adam=AdamStep(**values))


def save_weights(message: pb.SaveWeightsRequest) -> SaveWeights:
    return SaveWeights(
        model_id=message.model_id,
        seq_id=message.seq_id,
        name=message.path,
        ttl_seconds=message.ttl_seconds if message.HasField("ttl_seconds") else None,
    )


def save_weights_for_sampler(message: pb.SaveWeightsForSamplerRequest) -> SaveWeightsForSampler:
    return SaveWeightsForSampler(
        model_id=message.model_id,
        seq_id=message.seq_id,
        name=message.path if message.HasField("path") else None,
        sampling_session_seq_id=(
            message.sampling_session_seq_id if message.HasField("sampling_session_seq_id") else None
        ),
        ttl_seconds=message.ttl_seconds if message.HasField("ttl_seconds") else None,
    )


def load_weights(message: pb.LoadWeightsRequest) -> LoadWeights:
    target = message.WhichOneof("target")
    if target == "existing_model":
        existing = message.existing_model
        return LoadWeights(
            path=message.path,
            optimizer=message.optimizer,
            model_id=existing.model_id,
            seq_id=existing.seq_id,
        )
    if target == "new_model":
        new = message.new_model
        return LoadWeights(
            path=message.path,
            optimizer=message.optimizer,
            session_id=new.session_id,
            model_seq_id=new.model_seq_id,
            user_metadata=_metadata(new.user_metadata),
        )
    raise MalformedRequest("one of existing_model and new_model is required", "target")


def create_sampling_session(message: pb.CreateSamplingSessionRequest) -> CreateSamplingSession:
    source = message.WhichOneof("source")
    return CreateSamplingSession(
        session_id=message.session_id,
        sampling_session_seq_id=message.sampling_session_seq_id,
        model_path=message.model_path if source == "model_path" else None,
        base_model=message.base_model if source == "base_model" else None,
    )


def _stop(params: pb.SamplingParams) -> str | tuple[str, ...] | tuple[int, ...] | None:
    kind = params.WhichOneof("stop")
    if kind == "stop_strs":
        return tuple(params.stop_strs.values)
    if kind == "stop_tokens":
        return tuple(params.stop_tokens.values)
    return None


def sample(message: pb.SampleRequest) -> Sample:
    try:
        chunks = [
            chunk_from_proto(chunk, f"prompt.chunks[{index}]")
            for index, chunk in enumerate(message.prompt)
        ]
    except CodecError as exc:
        raise MalformedRequest(exc.message, exc.field) from exc
    params, default = message.sampling_params, SampleParams()
    return Sample(
        sampling_session_id=message.sampling_session_id,
        seq_id=message.seq_id,
        prompt=prompt_token_ids(chunks, "prompt"),
        num_samples=message.num_samples if message.HasField("num_samples") else 1,
        params=SampleParams(
            max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
            seed=params.seed if params.HasField("seed") else None,
            stop=_stop(params),
            temperature=(
                params.temperature if params.HasField("temperature") else default.temperature
            ),
            top_k=params.top_k if params.HasField("top_k") else default.top_k,
            top_p=params.top_p if params.HasField("top_p") else default.top_p,
        ),
        prompt_logprobs=message.prompt_logprobs,
        topk_prompt_logprobs=message.topk_prompt_logprobs,
    )


# ----- answers -----------------------------------------------------------------------------------


def client_config(config: dict[str, object]) -> pb.ClientConfig:
    return pb.ClientConfig(
        fwdbwd_max_chunk_len=int(config["fwdbwd_max_chunk_len"]),  # type: ignore[call-overload]
        fwdbwd_max_chunk_bytes_count=int(config["fwdbwd_max_chunk_bytes_count"]),  # type: ignore[call-overload]
        parallel_fwdbwd_chunks=bool(config["parallel_fwdbwd_chunks"]),
        custom_loss_server_side=bool(config["custom_loss_server_side"]),
    )


def capabilities(specs: list[ModelSpec]) -> pb.GetServerCapabilitiesResponse:
    return pb.GetServerCapabilitiesResponse(
        supported_models=[
            pb.SupportedModel(
                model_name=spec.name,
                max_context_length=spec.max_context_length,
                trainable=True,
                sampleable=True,
            )
            for spec in specs
        ]
    )


def model_info(info: ModelInfo) -> pb.GetInfoResponse:
    return pb.GetInfoResponse(
        model_id=info.model_id,
        arch=info.arch,
        model_name=info.base_model,
        tokenizer_id=info.tokenizer_id,
        is_lora=True,
        lora_rank=info.lora_rank,
    )


def sampler(info: SamplerInfo) -> pb.GetSamplerResponse:
    response = pb.GetSamplerResponse(sampler_id=info.sampler_id, base_model=info.base_model)
    if info.model_path is not None:
        response.model_path = info.model_path
    return response


def handle(submitted: SubmittedFuture) -> pb.FutureHandle:
    return pb.FutureHandle(
        request_id=submitted.request_id,
        sample_sequence_ids=list(submitted.sample_sequence_ids or ()),
    )


def finished(record: FutureRecord) -> pb.RetrieveFutureResponse:
    """The outcome of a finished future."""
    response = pb.RetrieveFutureResponse()
    if record.failure is not None:
        response.failed.error = record.failure.message
        response.failed.category = record.failure.category
        return response
    result = record.result
    if isinstance(result, (ForwardBackwardOutput, SampleResponse)):
        payload = record.wire_cache.get(PROTOBUF_CACHE_KEY)
        if payload is None:
            payload = record.wire_cache[PROTOBUF_CACHE_KEY] = (
                encode_forward_backward_output(result)
                if isinstance(result, ForwardBackwardOutput)
                else encode_sample_response(result)
            )
        target = (
            response.forward_backward
            if isinstance(result, ForwardBackwardOutput)
            else response.sample
        )
        target.SetInParent()  # an empty payload is still this outcome
        target.ParseFromString(payload)
    elif isinstance(result, CreateModelResult):
        response.create_model.model_id = result.model_id
    elif isinstance(result, OptimStepResult):
        response.optim_step.SetInParent()  # no metrics is still this outcome
        response.optim_step.metrics.update(result.metrics)
    elif isinstance(result, SaveWeightsResult):
        response.save_weights.path = result.path
    elif isinstance(result, SaveWeightsForSamplerResult):
        response.save_weights_for_sampler.SetInParent()
        if result.path is not None:
            response.save_weights_for_sampler.path = result.path
        if result.sampling_session_id is not None:
            response.save_weights_for_sampler.sampling_session_id = result.sampling_session_id
    elif isinstance(result, LoadWeightsResult):
        response.load_weights.path = result.path
    else:
        raise TypeError(f"no gRPC form for a {type(result).__name__} result (a server bug)")
    return response
