"""JSON request bodies -> the service's typed requests, with errors that name the field.

`Fields` reads one JSON object: each accessor checks presence and JSON type and raises
`MalformedRequest` with the dotted path (`lora_config.rank`) and expected vs got. Unknown keys
are ignored — newer SDKs add fields and the mock should keep working — but every key the service
needs is checked. Protobuf bodies are decoded by `tinker_ref.codec` (`forward_backward_proto`
only maps its result and its `CodecError` onto the service's types).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mock_server.service.convert import prompt_token_ids
from mock_server.service.errors import MalformedRequest
from mock_server.service.requests import (
    AdamStep,
    CreateCustomLoss,
    CreateModel,
    CreateSamplingSession,
    CreateSession,
    CustomLossInputSpec,
    ForwardBackward,
    LoadWeights,
    LoraSpec,
    OptimStep,
    Sample,
    SampleParams,
    SaveWeights,
    SaveWeightsExternal,
    SaveWeightsForSampler,
)
from tinker_ref.codec import (
    CodecError,
    datum_from_json,
    decode_forward_backward_request,
    model_input_from_json,
    tensor_data_from_json,
)

_MISSING = object()


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Fields:
    """Typed access to one JSON object; `prefix` is its path inside the body."""

    def __init__(self, body: object, prefix: str = "") -> None:
        if not isinstance(body, Mapping):
            raise MalformedRequest(f"expected a JSON object, got {_kind(body)}", prefix or "body")
        self._body = body
        self._prefix = prefix

    def path(self, name: str) -> str:
        return f"{self._prefix}.{name}" if self._prefix else name

    def _get(self, name: str, required: bool) -> Any:
        value = self._body.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise MalformedRequest("required field is missing", self.path(name))
            return _MISSING
        return value

    def _wrong(self, name: str, expected: str, value: object) -> MalformedRequest:
        return MalformedRequest(
            f"expected {expected}, got {_kind(value)} {value!r}"[:300], self.path(name)
        )

    def text(self, name: str) -> str:
        value = self._get(name, True)
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        return value

    def opt_text(self, name: str) -> str | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        return value

    def integer(self, name: str) -> int:
        value = self._get(name, True)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "an integer", value)
        return value

    def opt_integer(self, name: str) -> int | None:
        return None if self._get(name, False) is _MISSING else self.integer(name)

    def integer_or(self, name: str, default: int) -> int:
        return default if self._get(name, False) is _MISSING else self.integer(name)

    def number(self, name: str, default: float | None = None) -> float:
        value = self._get(name, default is None)
        if value is _MISSING:
            return float(default)  # type: ignore[arg-type]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong(name, "a number", value)
        return float(value)

    def flag(self, name: str, default: bool | None = None) -> bool:
        value = self._get(name, default is None)
        if value is _MISSING:
            return bool(default)
        if not isinstance(value, bool):
            raise self._wrong(name, "true or false", value)
        return value

    def obj(self, name: str, required: bool = True) -> Fields | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, Mapping):
            raise self._wrong(name, "an object", value)
        return Fields(value, self.path(name))

    def raw(self, name: str) -> Any:
        value = self._get(name, False)
        return None if value is _MISSING else value

    def mapping(self, name: str) -> dict[str, Any] | None:
        value = self._get(name, False)
        if value is _MISSING:
            return None
        if not isinstance(value, Mapping):
            raise self._wrong(name, "an object", value)
        return dict(value)

    def has(self, name: str) -> bool:
        return self._body.get(name) is not None


def create_session(body: object) -> CreateSession:
    f = Fields(body)
    tags = f.raw("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise MalformedRequest("expected an array of strings", "tags")
    return CreateSession(
        tags=tuple(tags),
        user_metadata=f.mapping("user_metadata") or {},
        sdk_version=f.opt_text("sdk_version"),
        project_id=f.opt_text("project_id"),
        display_name=f.opt_text("display_name"),
    )


def create_model(body: object) -> CreateModel:
    f = Fields(body)
    lora = f.obj("lora_config", required=False)
    optimizer = f.obj("optimizer_config", required=False)
    return CreateModel(
        session_id=f.text("session_id"),
        model_seq_id=f.integer("model_seq_id"),
        base_model=f.text("base_model"),
        lora=LoraSpec(
            rank=lora.integer_or("rank", 32),
            seed=lora.opt_integer("seed"),
            train_mlp=lora.flag("train_mlp", True),
            train_attn=lora.flag("train_attn", True),
            train_unembed=lora.flag("train_unembed", True),
        )
        if lora is not None
        else LoraSpec(),
        optimizer_type=optimizer.text("type") if optimizer is not None else "adamw",
        user_metadata=f.mapping("user_metadata"),
    )


def optim_step(body: object) -> OptimStep:
    f = Fields(body)
    # `adam_params` is what the SDK sends; `optim_params` is its pydantic validation alias.
    name = "adam_params" if f.has("adam_params") else "optim_params"
    adam = f.obj(name, required=False)
    other = f.obj("optimizer_params", required=False)
    if adam is None and other is None:
        raise MalformedRequest("required field is missing", "adam_params")
    return OptimStep(
        model_id=f.text("model_id"),
        seq_id=f.integer("seq_id"),
        adam=AdamStep(
            learning_rate=adam.number("learning_rate", 1e-4),
            beta1=adam.number("beta1", 0.9),
            beta2=adam.number("beta2", 0.95),
            eps=adam.number("eps", 1e-12),
            weight_decay=adam.number("weight_decay", 0.0),
            grad_clip_norm=adam.number("grad_clip_norm", 0.0),
        )
        if adam is not None
        else None,
        optimizer_type="adamw" if other is None else other.text("type"),
    )


def save_weights(body: object) -> SaveWeights:
    f = Fields(body)
    return SaveWeights(
        model_id=f.text("model_id"),
        seq_id=f.integer("seq_id"),
        name=f.text("path"),
        overwrite=f.flag("overwrite", False),
        ttl_seconds=f.opt_integer("ttl_seconds"),
        user_metadata=f.mapping("user_metadata"),
    )


def save_weights_for_sampler(body: object) -> SaveWeightsForSampler:
    f = Fields(body)
    return SaveWeightsForSampler(
        model_id=f.text("model_id"),
        seq_id=f.integer("seq_id"),
        name=f.opt_text("path"),
        sampling_session_seq_id=f.opt_integer("sampling_session_seq_id"),
        kind=f.opt_text("kind") or "snapshot",
        ttl_seconds=f.opt_integer("ttl_seconds"),
        user_metadata=f.mapping("user_metadata"),
    )


def save_weights_external(body: object) -> SaveWeightsExternal:
    f = Fields(body)
    recipients = f.raw("age_encryption_recipients") or []
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise MalformedRequest("expected an array of strings", "age_encryption_recipients")
    return SaveWeightsExternal(
        model_id=f.text("model_id"),
        seq_id=f.integer("seq_id"),
        name=f.text("path"),
        ttl_seconds=f.opt_integer("ttl_seconds"),
        age_encryption_recipients=tuple(recipients),
    )


def load_weights(body: object) -> LoadWeights:
    f = Fields(body)
    optimizer = f.obj("optimizer_config", required=False)
    return LoadWeights(
        path=f.text("path"),
        optimizer=f.flag("optimizer", False),
        model_id=f.opt_text("model_id"),
        seq_id=f.opt_integer("seq_id"),
        session_id=f.opt_text("session_id"),
        model_seq_id=f.opt_integer("model_seq_id"),
        base_model=f.opt_text("base_model"),
        user_metadata=f.mapping("user_metadata"),
        optimizer_type=optimizer.text("type") if optimizer is not None else None,
        weights_access_token=f.opt_text("weights_access_token"),
    )


def create_sampling_session(body: object) -> CreateSamplingSession:
    f = Fields(body)
    return CreateSamplingSession(
        session_id=f.text("session_id"),
        sampling_session_seq_id=f.integer("sampling_session_seq_id"),
        model_path=f.opt_text("model_path"),
        base_model=f.opt_text("base_model"),
    )


def _stop(value: object) -> str | tuple[str, ...] | tuple[int, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        if all(isinstance(s, str) for s in value):
            return tuple(value)
        if all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            return tuple(value)
    raise MalformedRequest(
        f"expected a string, a list of strings or a list of token ids, got {value!r}"[:300],
        "sampling_params.stop",
    )


def prompt_tokens(value: object, field: str) -> tuple[int, ...]:
    if value is None:
        raise MalformedRequest("required field is missing", field)
    try:
        model_input = model_input_from_json(value, field)
    except CodecError as exc:
        raise MalformedRequest(exc.message, exc.field) from exc
    return prompt_token_ids(model_input.chunks, field)


def sample(body: object, sampling_session_id: str | None = None) -> Sample:
    f = Fields(body)
    params = f.obj("sampling_params", required=False) or Fields({}, "sampling_params")
    target = f.raw("target_prompt_logprobs")
    try:
        target_td = (
            None if target is None else tensor_data_from_json(target, "target_prompt_logprobs")
        )
    except CodecError as exc:
        raise MalformedRequest(exc.message, exc.field) from exc
    return Sample(
        sampling_session_id=sampling_session_id or f.text("sampling_session_id"),
        seq_id=f.integer_or("seq_id", 0),
        prompt=prompt_tokens(f.raw("prompt"), "prompt"),
        num_samples=f.integer_or("num_samples", 1),
        params=SampleParams(
            max_tokens=params.opt_integer("max_tokens"),
            seed=params.opt_integer("seed"),
            stop=_stop(params.raw("stop")),
            temperature=params.number("temperature", 1.0),
            top_k=params.integer_or("top_k", -1),
            top_p=params.number("top_p", 1.0),
        ),
        prompt_logprobs=f.flag("prompt_logprobs", False),
        topk_prompt_logprobs=f.integer_or("topk_prompt_logprobs", 0),
        topk_sample_logprobs=f.integer_or("topk_sample_logprobs", 0),
        target_prompt_logprobs=target_td,
        prompt_alt_tokens_k=f.integer_or("prompt_alt_tokens_k", 0),
        prompt_logprobs_last_n=f.opt_integer("prompt_logprobs_last_n"),
        record_stability_info=f.flag("record_stability_info", False),
    )


def create_custom_loss(body: object) -> CreateCustomLoss:
    f = Fields(body)
    raw_inputs = f.raw("inputs")
    if not isinstance(raw_inputs, list):
        raise MalformedRequest("expected an array of {name, rank}", "inputs")
    inputs = []
    for index, item in enumerate(raw_inputs):
        entry = Fields(item, f"inputs[{index}]")
        inputs.append(CustomLossInputSpec(entry.text("name"), entry.integer("rank")))
    graph = f.mapping("graph")
    if graph is None:
        raise MalformedRequest("required field is missing", "graph")
    return CreateCustomLoss(
        session_id=f.text("session_id"),
        custom_loss_seq_id=f.integer("custom_loss_seq_id"),
        name=f.text("name"),
        inputs=tuple(inputs),
        graph=graph,
    )


def forward_backward_proto(body: bytes) -> ForwardBackward:
    """The protobuf body of `/forward_backward` (SDK >= 0.25)."""
    try:
        decoded = decode_forward_backward_request(body)
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


def forward_backward_json(body: object, forward_only: bool) -> ForwardBackward:
    """The JSON-era body of `/forward_backward` (`forward_backward_input`) or `/forward`
    (`forward_input`), as SDK <= 0.22 sends it. `/forward` carries the caller's full datums
    (SDK 0.15's custom-loss forward), so loss inputs its loss does not read are dropped."""
    f = Fields(body)
    key = "forward_input" if forward_only else "forward_backward_input"
    inner = f.obj(key)
    if inner is None:  # required=True raised already; this keeps the type checker informed
        raise MalformedRequest("required field is missing", key)
    raw_data = inner.raw("data")
    if not isinstance(raw_data, list):
        raise MalformedRequest("expected an array of datums", inner.path("data"))
    config: dict[str, float | str] = {}
    for name, value in (inner.mapping("loss_fn_config") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise MalformedRequest(
                f"expected a number or a string, got {value!r}"[:300],
                inner.path(f"loss_fn_config.{name}"),
            )
        config[name] = float(value) if not isinstance(value, str) else value
    try:
        data = [datum_from_json(item, f"data[{i}]") for i, item in enumerate(raw_data)]
    except CodecError as exc:
        raise MalformedRequest(exc.message, exc.field) from exc
    return ForwardBackward(
        model_id=f.text("model_id"),
        seq_id=f.integer("seq_id"),
        data=tuple(data),
        loss_fn=inner.text("loss_fn"),
        loss_fn_config=config,
        forward_only=forward_only,
        ignore_unused_inputs=forward_only,
    )
