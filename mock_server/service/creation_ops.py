"""A model's creation: `create_model`, and `load_weights` addressed by session.

Both are `NewModelOp`s (`admission.py`): the model's seq 0, its `model_seq_id` a claim in the
session. The model exists (CREATING) from acceptance, so ops sequenced after it queue behind it;
the run builds its `TrainingModel` in the engine pool and `finish` settles it READY.
"""

from __future__ import annotations

from mock_server.engine import (
    LoraConfig,
    RemoteModel,
    TrainingModel,
    get_spec,
    load_checkpoint,
)
from mock_server.service import unsupported
from mock_server.service.admission import NewModelOp
from mock_server.service.auth import Principal
from mock_server.service.checkpoints import CheckpointAddress
from mock_server.service.context import ServiceContext
from mock_server.service.errors import InvalidArgument
from mock_server.service.requests import CreateModel, LoadWeights
from mock_server.service.results import CreateModelResult, LoadWeightsResult
from mock_server.service.training_ops import readable_checkpoint


class CreateModelOp(NewModelOp[CreateModel]):
    """A new model: frozen base weights and fresh LoRA adapters of the requested shape."""

    name = "training.create_model"
    kind = "create_model"
    _lora: LoraConfig

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        get_spec(req.base_model)
        unsupported.check_optimizer(req.optimizer_type, "optimizer_config.type")
        if req.lora.rank < 1:
            raise InvalidArgument(f"must be >= 1, got {req.lora.rank}", "lora_config.rank")
        if not (req.lora.train_attn or req.lora.train_mlp or req.lora.train_unembed):
            raise InvalidArgument(
                "at least one of train_attn, train_mlp, train_unembed must be true",
                "lora_config",
            )
        self.base_model = req.base_model
        self.lora = self._lora = LoraConfig(
            rank=req.lora.rank,
            train_attn=req.lora.train_attn,
            train_mlp=req.lora.train_mlp,
            train_unembed=req.lora.train_unembed,
        )

    def run(self, ctx: ServiceContext) -> TrainingModel | RemoteModel:
        req = self.request
        return ctx.engine.create_model(
            req.base_model, self._lora, req.lora.seed, model_key=self.model_id
        )

    def finish(self, ctx: ServiceContext, training: TrainingModel | RemoteModel) -> object:
        self.model.settle(training)
        return CreateModelResult(self.model_id)


class LoadNewModelOp(NewModelOp[LoadWeights]):
    """A new model from a checkpoint (`create_training_client_from_state`): its base model,
    LoRA shape, weights and, with `optimizer`, its Adam state."""

    name = "training.load_weights_into_new_model"
    kind = "load_weights"
    _address: CheckpointAddress

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        self._address = readable_checkpoint(ctx, principal, self.request.path)
        if self.request.base_model is not None:
            get_spec(self.request.base_model)
        if self.request.optimizer_type is not None:
            unsupported.check_optimizer(self.request.optimizer_type, "optimizer_config.type")

    def run(self, ctx: ServiceContext) -> TrainingModel | RemoteModel:
        req = self.request
        directory = ctx.checkpoints.directory(self._address)
        checkpoint = load_checkpoint(directory, with_optimizer=req.optimizer)
        if req.base_model is not None and req.base_model != checkpoint.base_model:
            raise InvalidArgument(
                f"checkpoint is for base model {checkpoint.base_model!r}, the request names "
                f"{req.base_model!r}",
                "base_model",
            )
        return ctx.engine.model_from_checkpoint(checkpoint)

    def finish(self, ctx: ServiceContext, training: TrainingModel | RemoteModel) -> object:
        self.model.settle(training)
        return LoadWeightsResult(self._address.uri, self.model_id)
