"""Training operations on an existing model: forward/backward, optim_step, saves and loads.

One class per operation (`operation.py` says what an op is), each a `ModelOp` sequenced on the
model's lane (`admission.py`), plus `RejectMalformedOp`, which consumes the seq_id of a request
that could not be read. A model's creation is in `creation_ops.py`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, NoReturn

from mock_server.engine import (
    LOSSES,
    AdamConfig,
    DatumInput,
    DatumLoss,
    get_loss,
    get_spec,
    load_checkpoint,
    save_checkpoint,
)
from mock_server.engine.losses import ConfigValue, LossSpec
from mock_server.service import checkpoint_meta, ids, inflight, unsupported
from mock_server.service.admission import ModelOp
from mock_server.service.auth import Principal
from mock_server.service.checkpoints import CheckpointAddress, check_name, parse_address
from mock_server.service.context import ServiceContext
from mock_server.service.convert import datum_inputs, forward_backward_output
from mock_server.service.errors import (
    Conflict,
    InvalidArgument,
    MalformedRequest,
    ServiceError,
)
from mock_server.service.fingerprint import fingerprint
from mock_server.service.operation import Operation
from mock_server.service.requests import (
    ForwardBackward,
    LoadWeights,
    MalformedOp,
    OptimStep,
    SaveWeights,
    SaveWeightsForSampler,
)
from mock_server.service.results import (
    LoadWeightsResult,
    OptimStepResult,
    SaveWeightsForSamplerResult,
    SaveWeightsResult,
)
from mock_server.service.state import Claim, Sampler, TrainingEvent, require_training
from mock_server.service.validation import check_seq_id, check_tokens
from tinker_ref.types import ForwardBackwardOutput


class ForwardBackwardOp(ModelOp[ForwardBackward]):
    """Datums through a built-in or uploaded loss; gradients accumulate unless forward_only."""

    name = "training.forward_backward"
    kind = "forward_backward"
    _inputs: list[DatumInput]
    _config: dict[str, ConfigValue]  # a built-in loss's resolved config
    _datum_loss: DatumLoss | None = None  # an uploaded loss, per datum

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req, model = self.request, self.model
        if not req.data:
            raise InvalidArgument("at least one datum is required", "data")
        unsupported.check_loss_fn(req.loss_fn)
        inputs = datum_inputs(req.data)
        if req.ignore_unused_inputs and req.loss_fn in LOSSES:
            inputs = _only_used_inputs(inputs, LOSSES[req.loss_fn])
        vocab = get_spec(model.base_model).vocab_size if model.base_model else None
        if vocab is not None:
            for index, datum in enumerate(inputs):
                check_tokens(f"data[{index}].model_input", datum.tokens, vocab)
        self._inputs = inputs
        if req.loss_fn == "custom":
            self._datum_loss = self._custom_loss(ctx, principal)
            return
        loss = get_loss(req.loss_fn)
        self._config = loss.resolve_config(req.loss_fn_config)
        if vocab is not None:
            for index, datum in enumerate(inputs):
                loss.validate(index, datum.tokens.shape[0], datum.loss_fn_inputs, vocab)

    def _custom_loss(self, ctx: ServiceContext, principal: Principal) -> DatumLoss:
        """The uploaded loss named by `loss_fn_config.loss_id`, checked against every datum."""
        req, model = self.request, self.model
        loss_id = req.loss_fn_config.get("loss_id")
        if not isinstance(loss_id, str):
            raise InvalidArgument(
                "loss_fn 'custom' needs the id from create_custom_loss as text",
                "loss_fn_config.loss_id",
            )
        loss = ctx.registry.loss(principal, loss_id, "loss_fn_config.loss_id")
        if loss.session_id != model.session_id:
            raise InvalidArgument(
                f"custom loss {loss_id!r} belongs to session {loss.session_id!r}, not to this "
                f"model's session {model.session_id!r}",
                "loss_fn_config.loss_id",
            )
        unknown = sorted(set(req.loss_fn_config) - {"loss_id"})
        if unknown:
            raise InvalidArgument(
                "loss_fn 'custom' takes only loss_id", f"loss_fn_config.{unknown[0]}"
            )
        for index, datum in enumerate(self._inputs):
            loss.compiled.check_datum(index, datum.loss_fn_inputs)
        datum_loss: DatumLoss = loss.compiled.as_datum_loss()
        return datum_loss

    def run(self, ctx: ServiceContext) -> ForwardBackwardOutput:
        req, training = self.request, require_training(self.model)
        if self._datum_loss is not None:
            result = training.forward_backward_per_datum(
                self._inputs, self._datum_loss, req.forward_only
            )
        else:
            result = training.forward_backward(
                self._inputs, req.loss_fn, self._config, req.forward_only
            )
        return forward_backward_output(result)

    def finish(self, ctx: ServiceContext, output: ForwardBackwardOutput) -> object:
        op = "forward" if self.request.forward_only else "forward_backward"
        self.model.history.append(TrainingEvent(op, self.request.loss_fn, dict(output.metrics)))
        return output


class OptimStepOp(ModelOp[OptimStep]):
    """One AdamW step on the accumulated gradients, with the request's parameters."""

    name = "training.optim_step"
    kind = "optim_step"
    _adam: AdamConfig

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        if req.adam is None:
            unsupported.check_optimizer(req.optimizer_type, "optimizer_params.type")
            raise InvalidArgument("send adam_params", "adam_params")
        self._adam = AdamConfig(**asdict(req.adam))
        self._adam.validate()

    def run(self, ctx: ServiceContext) -> OptimStepResult:
        return OptimStepResult(require_training(self.model).optim_step(self._adam))

    def finish(self, ctx: ServiceContext, result: OptimStepResult) -> object:
        self.model.history.append(TrainingEvent("optim_step", None, dict(result.metrics)))
        return result


class SaveWeightsOp(ModelOp[SaveWeights]):
    """`save_state`: weights and optimizer state under `tinker://<model>/weights/<name>`."""

    name = "training.save_weights"
    kind = "save_weights"
    _address: CheckpointAddress

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        name = check_name(self.request.name, "path")
        self._address = CheckpointAddress(self.model.model_id, "weights", name)

    def run(self, ctx: ServiceContext) -> SaveWeightsResult:
        training = require_training(self.model)
        directory = ctx.checkpoints.directory(self._address)
        if ctx.checkpoints.exists(directory) and not self.request.overwrite:
            raise Conflict(
                f"checkpoint {self._address.uri} already exists; save with overwrite=True to "
                "replace it",
                "path",
            )
        save_checkpoint(training, directory, include_optimizer=True)
        ctx.checkpoints.saved(directory)
        checkpoint_meta.record_save(directory, self.request.ttl_seconds, self.request.user_metadata)
        return SaveWeightsResult(self._address.uri)


class SaveWeightsForSamplerOp(ModelOp[SaveWeightsForSampler]):
    """Weights for sampling: a named checkpoint (`tinker://<model>/sampler_weights/<name>`), or
    an ephemeral sampling session holding a snapshot (`sampling_session_seq_id`)."""

    name = "training.save_weights_for_sampler"
    kind = "save_weights_for_sampler"
    _named: CheckpointAddress  # a named save
    _sampler_id: str | None = None  # an ephemeral one: its sampling session
    _owner: str

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req, model = self.request, self.model
        if req.kind not in inflight.KINDS:
            raise InvalidArgument(
                f"must be one of {', '.join(inflight.KINDS)}, got {req.kind!r}", "kind"
            )
        if req.name is not None:
            name = check_name(req.name, "path")
            self._named = CheckpointAddress(model.model_id, "sampler_weights", name)
            return
        number = req.sampling_session_seq_id
        if number is None:
            raise MalformedRequest(
                "either path (a named save) or sampling_session_seq_id (an ephemeral sampler) "
                "is required",
                "path",
            )
        session = ctx.registry.sessions[model.session_id]
        sampler_id = ids.sampling_session_id(session.session_id, number)
        if number < 0:
            raise MalformedRequest(f"must be >= 0, got {number}", "sampling_session_seq_id")
        if number in session.sampling_claims:
            raise Conflict(
                f"sampling_session_seq_id {number} of session {session.session_id!r} is "
                "already taken",
                "sampling_session_seq_id",
            )
        session.sampling_claims[number] = Claim(fingerprint(("ephemeral", req)), sampler_id)
        self._sampler_id, self._owner = sampler_id, principal.identity

    def run(self, ctx: ServiceContext) -> Any:
        training = require_training(self.model)
        if self._sampler_id is not None:
            return training.weights()
        directory = ctx.checkpoints.directory(self._named)
        save_checkpoint(training, directory, include_optimizer=False)
        checkpoint_meta.record_save(directory, self.request.ttl_seconds, self.request.user_metadata)
        return None

    def finish(self, ctx: ServiceContext, weights: Any) -> object:
        sampler_id, model = self._sampler_id, self.model
        if sampler_id is None:
            return SaveWeightsForSamplerResult(path=self._named.uri)
        base_model = require_training(model).base.spec.name
        sampler = ctx.registry.samplers[sampler_id] = Sampler(
            sampler_id, model.session_id, self._owner, base_model, None, weights
        )
        if self.request.kind == "inflight":
            inflight.publish(ctx.registry, sampler, model.model_id)
        return SaveWeightsForSamplerResult(sampling_session_id=sampler_id)


class LoadWeightsOp(ModelOp[LoadWeights]):
    """A checkpoint's weights (and, with `optimizer`, its Adam state) into this model."""

    name = "training.load_weights"
    kind = "load_weights"
    _address: CheckpointAddress

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        self._address = readable_checkpoint(ctx, principal, self.request.path)

    def run(self, ctx: ServiceContext) -> LoadWeightsResult:
        training = require_training(self.model)
        directory = ctx.checkpoints.directory(self._address)
        checkpoint = load_checkpoint(directory, with_optimizer=self.request.optimizer)
        if checkpoint.base_model != training.base.spec.name:
            raise InvalidArgument(
                f"checkpoint is for base model {checkpoint.base_model!r}, this model is "
                f"{training.base.spec.name!r}",
                "path",
            )
        training.load(checkpoint.weights, checkpoint.optimizer)
        return LoadWeightsResult(self._address.uri, self.model.model_id)


class RejectMalformedOp(Operation[MalformedOp, NoReturn]):
    """A request to a sequenced endpoint that could not be read, though its `model_id` and
    `seq_id` could: it consumes that seq_id (when the model is this principal's and the seq_id
    still open), then answers its `MalformedRequest`. Retries of the same bytes get the same
    answer; a different op under that seq_id is a Conflict."""

    name = "training.reject_malformed"

    async def accept(self, ctx: ServiceContext, principal: Principal) -> NoReturn:
        req = self.request
        error = MalformedRequest(req.message, req.field)
        try:
            model = ctx.registry.model(principal, req.model_id)
            check_seq_id(req.seq_id)
            fp = fingerprint(("malformed", req.endpoint, req.body_digest))
            if ctx.sequencer.check(model.model_id, req.seq_id, fp) is None:
                ctx.sequencer.reject(model.model_id, req.seq_id, fp, error)
        except ServiceError:
            pass  # no such model, a bad seq_id or one already used: nothing to consume
        raise error


def readable_checkpoint(ctx: ServiceContext, principal: Principal, path: str) -> CheckpointAddress:
    """The address of checkpoint `path`, which `principal` may read."""
    address = parse_address(path, "path")
    ctx.registry.check_checkpoint(principal, address.model_id, f"checkpoint {path!r}", "path")
    return address


def _only_used_inputs(inputs: list[DatumInput], loss: LossSpec) -> list[DatumInput]:
    used = {"target_tokens", *loss.required_inputs, *loss.optional_inputs}
    return [
        DatumInput(d.tokens, {k: v for k, v in d.loss_fn_inputs.items() if k in used})
        for d in inputs
    ]
