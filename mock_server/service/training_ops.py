"""Training operations: model creation, forward/backward, optim_step, save and load.

Every op on an existing model is *sequenced* (`Sequencer`): deduplicated by `(model_id,
seq_id)` first, then validated in full — a rejected op consumes its seq_id and answers 4xx,
changing nothing — then queued to run in seq_id order in the engine pool. Model creation
(`create_model`, or `load_weights` addressed by session) is the model's seq 0; its number in the
session (`model_seq_id`) is a claim, deduplicated the same way. Validation here covers what the
engine would reject, so a client hears about bad input from the POST, not from a failed future.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, NoReturn

from mock_server.engine import (
    LOSSES,
    AdamConfig,
    CheckpointError,
    DatumInput,
    DatumLoss,
    LoraConfig,
    TrainingModel,
    get_loss,
    get_spec,
    load_checkpoint,
    save_checkpoint,
)
from mock_server.engine.custom_loss import compile_custom_loss
from mock_server.engine.losses import LossSpec
from mock_server.service import ids
from mock_server.service.auth import Principal
from mock_server.service.checkpoints import CheckpointAddress, check_name, parse_address
from mock_server.service.context import ServiceContext
from mock_server.service.convert import datum_inputs, forward_backward_output
from mock_server.service.errors import (
    Conflict,
    InvalidArgument,
    MalformedRequest,
    NotFound,
    ServiceError,
)
from mock_server.service.fingerprint import fingerprint
from mock_server.service.futures import FutureState
from mock_server.service.requests import (
    CreateCustomLoss,
    CreateModel,
    ForwardBackward,
    LoadWeights,
    MalformedOp,
    OptimStep,
    SaveWeights,
    SaveWeightsForSampler,
)
from mock_server.service.results import (
    CreateCustomLossResult,
    CreateModelResult,
    LoadWeightsResult,
    OptimStepResult,
    SaveWeightsForSamplerResult,
    SaveWeightsResult,
    SubmittedFuture,
    WeightsInfo,
)
from mock_server.service.state import (
    Claim,
    CustomLoss,
    Model,
    Sampler,
    TrainingEvent,
    check_claim,
    require_training,
)
from mock_server.service.validation import check_seq_id, check_tokens, validating
from tinker_ref.types import ForwardBackwardOutput

Work = Callable[[], Any]  # runs in the engine pool
Finish = Callable[[Any], object] | None  # runs on the loop with the work's return value


class TrainingOps:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    # ----- creation (seq 0) -----

    async def create_model(self, principal: Principal, req: CreateModel) -> SubmittedFuture:
        session = self._ctx.registry.session(principal, req.session_id)
        if session.finished:
            raise Conflict(f"session {req.session_id!r} is finished", "session_id")
        if req.model_seq_id < 0:
            raise MalformedRequest(f"must be >= 0, got {req.model_seq_id}", "model_seq_id")
        model_id = ids.model_id(session.session_id, req.model_seq_id)
        fp = fingerprint(("create_model", req))
        earlier = check_claim(session.model_claims, req.model_seq_id, fp, "model_seq_id")
        if earlier is not None:
            return SubmittedFuture(earlier, model_id)
        with validating():
            get_spec(req.base_model)
            if req.optimizer_type != "adamw":
                raise InvalidArgument(
                    f"optimizer {req.optimizer_type!r} is not supported; the mock trains with "
                    "AdamW only",
                    "optimizer_config.type",
                )
            if req.lora.rank < 1:
                raise InvalidArgument(f"must be >= 1, got {req.lora.rank}", "lora_config.rank")
            if not (req.lora.train_attn or req.lora.train_mlp or req.lora.train_unembed):
                raise InvalidArgument(
                    "at least one of train_attn, train_mlp, train_unembed must be true",
                    "lora_config",
                )
        lora = LoraConfig(
            rank=req.lora.rank,
            train_attn=req.lora.train_attn,
            train_mlp=req.lora.train_mlp,
            train_unembed=req.lora.train_unembed,
        )
        engine = self._ctx.engine

        def work() -> TrainingModel:
            return engine.create_model(req.base_model, lora, req.lora.seed, model_key=model_id)

        return self._create(
            principal,
            session.session_id,
            req.model_seq_id,
            fp,
            model_id,
            "create_model",
            req.base_model,
            lora,
            work,
        )

    def _create(
        self,
        principal: Principal,
        session_id: str,
        model_seq_id: int,
        fp: str,
        model_id: str,
        kind: str,
        base_model: str | None,
        lora: LoraConfig | None,
        work: Callable[[], TrainingModel],
        result: Callable[[str], object] = CreateModelResult,
    ) -> SubmittedFuture:
        ctx = self._ctx
        ctx.admit()
        request_id = ctx.new_future(kind, principal)
        ctx.registry.sessions[session_id].model_claims[model_seq_id] = Claim(fp, request_id)
        model = Model(model_id, session_id, principal.identity, base_model, lora)
        ctx.registry.models[model_id] = model
        ctx.sequencer.open_lane(model_id, first_seq=0)

        def finish(training: TrainingModel) -> object:
            model.settle(training)
            return result(model_id)

        async def run() -> None:
            await ctx.run_op(request_id, work, finish)
            record = ctx.futures.get(request_id)
            if record.state is FutureState.FAILED and record.failure is not None:
                model.settle(None, record.failure.message)

        def fail(error: ServiceError) -> None:
            ctx.fail_future(request_id, error)
            model.settle(None, error.message)

        ctx.sequencer.enqueue(model_id, 0, fp, request_id, run, fail)
        return SubmittedFuture(request_id, model_id)

    # ----- sequenced ops -----

    def _sequenced(
        self,
        principal: Principal,
        model: Model,
        seq_id: int,
        kind: str,
        request: object,
        plan: Callable[[], tuple[Work, Finish]],
    ) -> SubmittedFuture:
        """Dedupe, validate (`plan`), then queue; a rejected op consumes its seq_id."""
        ctx = self._ctx
        check_seq_id(seq_id)
        fp = fingerprint((kind, request))
        earlier = ctx.sequencer.check(model.model_id, seq_id, fp)
        if earlier is not None:
            return SubmittedFuture(earlier, model.model_id)
        ctx.admit(unblocks=seq_id == ctx.sequencer.next_seq(model.model_id))
        try:
            with validating():
                work, finish = plan()
        except ServiceError as error:
            ctx.sequencer.reject(model.model_id, seq_id, fp, error)
            raise
        request_id = ctx.new_future(kind, principal)

        async def run() -> None:
            await ctx.run_op(request_id, work, finish)

        def fail(error: ServiceError) -> None:
            ctx.fail_future(request_id, error)

        ctx.sequencer.enqueue(model.model_id, seq_id, fp, request_id, run, fail)
        return SubmittedFuture(request_id, model.model_id)

    async def reject_malformed(self, principal: Principal, req: MalformedOp) -> NoReturn:
        """Consume the seq_id of a request that could not be read (when its model is this
        principal's and the seq_id is still open), then raise its MalformedRequest. Retries of
        the same bytes get the same answer; a different op under that seq_id is a Conflict."""
        error = MalformedRequest(req.message, req.field)
        ctx = self._ctx
        try:
            model = ctx.registry.model(principal, req.model_id)
            check_seq_id(req.seq_id)
            fp = fingerprint(("malformed", req.endpoint, req.body_digest))
            if ctx.sequencer.check(model.model_id, req.seq_id, fp) is None:
                ctx.sequencer.reject(model.model_id, req.seq_id, fp, error)
        except ServiceError:
            pass  # no such model, a bad seq_id or one already used: nothing to consume
        raise error

    async def forward_backward(self, principal: Principal, req: ForwardBackward) -> SubmittedFuture:
        model = self._ctx.registry.model(principal, req.model_id)

        def record(output: ForwardBackwardOutput) -> object:
            op = "forward" if req.forward_only else "forward_backward"
            model.history.append(TrainingEvent(op, req.loss_fn, dict(output.metrics)))
            return output

        def plan() -> tuple[Work, Finish]:
            if not req.data:
                raise InvalidArgument("at least one datum is required", "data")
            inputs = datum_inputs(req.data)
            if req.ignore_unused_inputs and req.loss_fn in LOSSES:
                inputs = _only_used_inputs(inputs, LOSSES[req.loss_fn])
            vocab = get_spec(model.base_model).vocab_size if model.base_model else None
            if vocab is not None:
                for index, datum in enumerate(inputs):
                    check_tokens(f"data[{index}].model_input", datum.tokens, vocab)
            if req.loss_fn == "custom":
                datum_loss = self._custom_loss(principal, model, req, inputs)

                def custom_work() -> object:
                    training = require_training(model)
                    result = training.forward_backward_per_datum(
                        inputs, datum_loss, req.forward_only
                    )
                    return forward_backward_output(result)

                return custom_work, record
            loss = get_loss(req.loss_fn)
            config = loss.resolve_config(req.loss_fn_config)
            if vocab is not None:
                for index, datum in enumerate(inputs):
                    loss.validate(index, datum.tokens.shape[0], datum.loss_fn_inputs, vocab)

            def work() -> object:
                training = require_training(model)
                result = training.forward_backward(inputs, req.loss_fn, config, req.forward_only)
                return forward_backward_output(result)

            return work, record

        return self._sequenced(principal, model, req.seq_id, "forward_backward", req, plan)

    def _custom_loss(
        self,
        principal: Principal,
        model: Model,
        req: ForwardBackward,
        inputs: list[DatumInput],
    ) -> DatumLoss:
        """The uploaded loss named by `loss_fn_config.loss_id`, checked against every datum."""
        loss_id = req.loss_fn_config.get("loss_id")
        if not isinstance(loss_id, str):
            raise InvalidArgument(
                "loss_fn 'custom' needs the id from create_custom_loss as text",
                "loss_fn_config.loss_id",
            )
        loss = self._ctx.registry.loss(principal, loss_id, "loss_fn_config.loss_id")
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
        for index, datum in enumerate(inputs):
            loss.compiled.check_datum(index, datum.loss_fn_inputs)
        datum_loss: DatumLoss = loss.compiled.as_datum_loss()
        return datum_loss

    async def create_custom_loss(
        self, principal: Principal, req: CreateCustomLoss
    ) -> SubmittedFuture:
        """Compile an uploaded `torch.fx` graph (allow-list only) and store it for the session;
        the future resolves at once with its `loss_id`."""
        ctx = self._ctx
        session = ctx.registry.session(principal, req.session_id)
        if req.custom_loss_seq_id < 0:
            raise MalformedRequest(
                f"must be >= 0, got {req.custom_loss_seq_id}", "custom_loss_seq_id"
            )
        fp = fingerprint(("create_custom_loss", req))
        earlier = check_claim(session.loss_claims, req.custom_loss_seq_id, fp, "custom_loss_seq_id")
        if earlier is not None:
            return SubmittedFuture(earlier)
        with validating():
            compiled = compile_custom_loss(
                req.name,
                [{"name": spec.name, "rank": spec.rank} for spec in req.inputs],
                req.graph,
            )
        new_id = ids.loss_id(session.session_id, req.custom_loss_seq_id)
        ctx.admit()
        request_id = ctx.new_future("create_custom_loss", principal)
        session.loss_claims[req.custom_loss_seq_id] = Claim(fp, request_id)
        ctx.registry.losses[new_id] = CustomLoss(
            new_id, session.session_id, principal.identity, req.name, compiled
        )
        ctx.futures.complete(request_id, CreateCustomLossResult(new_id))
        return SubmittedFuture(request_id)

    async def optim_step(self, principal: Principal, req: OptimStep) -> SubmittedFuture:
        model = self._ctx.registry.model(principal, req.model_id)

        def plan() -> tuple[Work, Finish]:
            if req.adam is None:
                raise InvalidArgument(
                    f"optimizer {req.optimizer_type!r} is not supported; send adam_params",
                    "optimizer_params.type",
                )
            adam = AdamConfig(**asdict(req.adam))
            adam.validate()

            def record(result: OptimStepResult) -> object:
                model.history.append(TrainingEvent("optim_step", None, dict(result.metrics)))
                return result

            return (lambda: OptimStepResult(require_training(model).optim_step(adam))), record

        return self._sequenced(principal, model, req.seq_id, "optim_step", req, plan)

    async def save_weights(self, principal: Principal, req: SaveWeights) -> SubmittedFuture:
        model = self._ctx.registry.model(principal, req.model_id)
        checkpoints = self._ctx.checkpoints

        def plan() -> tuple[Work, Finish]:
            address = CheckpointAddress(model.model_id, "weights", check_name(req.name, "path"))
            directory = checkpoints.directory(address)

            def work() -> object:
                training = require_training(model)
                if checkpoints.exists(directory) and not req.overwrite:
                    raise Conflict(
                        f"checkpoint {address.uri} already exists; save with overwrite=True "
                        "to replace it",
                        "path",
                    )
                save_checkpoint(training, directory, include_optimizer=True)
                checkpoints.saved(directory)
                return SaveWeightsResult(address.uri)

            return work, None

        return self._sequenced(principal, model, req.seq_id, "save_weights", req, plan)

    async def save_weights_for_sampler(
        self, principal: Principal, req: SaveWeightsForSampler
    ) -> SubmittedFuture:
        ctx = self._ctx
        model = ctx.registry.model(principal, req.model_id)

        def plan() -> tuple[Work, Finish]:
            if req.name is not None:
                return self._plan_named_sampler_save(model, req.name)
            if req.sampling_session_seq_id is None:
                raise MalformedRequest(
                    "either path (a named save) or sampling_session_seq_id (an ephemeral "
                    "sampler) is required",
                    "path",
                )
            return self._plan_ephemeral_sampler(principal, model, req, req.sampling_session_seq_id)

        return self._sequenced(principal, model, req.seq_id, "save_weights_for_sampler", req, plan)

    def _plan_named_sampler_save(self, model: Model, name: str) -> tuple[Work, Finish]:
        address = CheckpointAddress(model.model_id, "sampler_weights", check_name(name, "path"))
        directory = self._ctx.checkpoints.directory(address)

        def work() -> object:
            save_checkpoint(require_training(model), directory, include_optimizer=False)
            return SaveWeightsForSamplerResult(path=address.uri)

        return work, None

    def _plan_ephemeral_sampler(
        self, principal: Principal, model: Model, req: SaveWeightsForSampler, number: int
    ) -> tuple[Work, Finish]:
        registry = self._ctx.registry
        session = registry.sessions[model.session_id]
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

        def work() -> object:
            return require_training(model).weights()

        def finish(weights: Any) -> object:
            registry.samplers[sampler_id] = Sampler(
                sampler_id,
                session.session_id,
                principal.identity,
                require_training(model).base.spec.name,
                None,
                weights,
            )
            return SaveWeightsForSamplerResult(sampling_session_id=sampler_id)

        return work, finish

    async def weights_info(self, principal: Principal, path: str) -> WeightsInfo:
        """The base model and LoRA shape of a checkpoint (`/weights_info`, SDK <= 0.25)."""
        with validating():
            address = self._checkpoint(principal, path)
        directory = self._ctx.checkpoints.directory(address)
        try:
            checkpoint = await self._ctx.in_thread(
                lambda: load_checkpoint(directory, with_optimizer=False)
            )
        except CheckpointError as exc:
            raise NotFound(str(exc), "tinker_path") from exc
        lora = checkpoint.lora
        return WeightsInfo(
            checkpoint.base_model, lora.rank, lora.train_attn, lora.train_mlp, lora.train_unembed
        )

    async def load_weights(self, principal: Principal, req: LoadWeights) -> SubmittedFuture:
        if req.model_id is not None:
            return await self._load_into(principal, req)
        if req.session_id is None or req.model_seq_id is None:
            raise MalformedRequest(
                "address a model with model_id + seq_id, or create one with session_id + "
                "model_seq_id",
                "model_id",
            )
        return await self._create_from_checkpoint(principal, req, req.session_id, req.model_seq_id)

    def _checkpoint(self, principal: Principal, path: str) -> CheckpointAddress:
        address = parse_address(path, "path")
        self._ctx.registry.check_checkpoint(
            principal, address.model_id, f"checkpoint {path!r}", "path"
        )
        return address

    async def _load_into(self, principal: Principal, req: LoadWeights) -> SubmittedFuture:
        model = self._ctx.registry.model(principal, req.model_id or "")
        checkpoints = self._ctx.checkpoints
        if req.seq_id is None:
            raise MalformedRequest("required when loading into model_id", "seq_id")

        def plan() -> tuple[Work, Finish]:
            address = self._checkpoint(principal, req.path)
            directory = checkpoints.directory(address)

            def work() -> object:
                training = require_training(model)
                checkpoint = load_checkpoint(directory, with_optimizer=req.optimizer)
                if checkpoint.base_model != training.base.spec.name:
                    raise InvalidArgument(
                        f"checkpoint is for base model {checkpoint.base_model!r}, this model "
                        f"is {training.base.spec.name!r}",
                        "path",
                    )
                training.load(checkpoint.weights, checkpoint.optimizer)
                return LoadWeightsResult(address.uri, model.model_id)

            return work, None

        return self._sequenced(principal, model, req.seq_id, "load_weights", req, plan)

    async def _create_from_checkpoint(
        self, principal: Principal, req: LoadWeights, session_id: str, model_seq_id: int
    ) -> SubmittedFuture:
        session = self._ctx.registry.session(principal, session_id)
        if session.finished:
            raise Conflict(f"session {session_id!r} is finished", "session_id")
        if model_seq_id < 0:
            raise MalformedRequest(f"must be >= 0, got {model_seq_id}", "model_seq_id")
        model_id = ids.model_id(session_id, model_seq_id)
        fp = fingerprint(("load_weights", req))
        earlier = check_claim(session.model_claims, model_seq_id, fp, "model_seq_id")
        if earlier is not None:
            return SubmittedFuture(earlier, model_id)
        with validating():
            address = self._checkpoint(principal, req.path)
            if req.base_model is not None:
                get_spec(req.base_model)
        directory = self._ctx.checkpoints.directory(address)
        engine = self._ctx.engine

        def work() -> TrainingModel:
            checkpoint = load_checkpoint(directory, with_optimizer=req.optimizer)
            if req.base_model is not None and req.base_model != checkpoint.base_model:
                raise InvalidArgument(
                    f"checkpoint is for base model {checkpoint.base_model!r}, the request "
                    f"names {req.base_model!r}",
                    "base_model",
                )
            return engine.model_from_checkpoint(checkpoint)

        return self._create(
            principal,
            session_id,
            model_seq_id,
            fp,
            model_id,
            "load_weights",
            None,
            None,
            work,
            result=lambda created: LoadWeightsResult(address.uri, created),
        )


def _only_used_inputs(inputs: list[DatumInput], loss: LossSpec) -> list[DatumInput]:
    used = {"target_tokens", *loss.required_inputs, *loss.optional_inputs}
    return [
        DatumInput(d.tokens, {k: v for k, v in d.loss_fn_inputs.items() if k in used})
        for d in inputs
    ]
