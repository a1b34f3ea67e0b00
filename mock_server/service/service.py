"""`TinkerService`: the transport-neutral facade that the HTTP (and later gRPC) front ends call.

It owns the server's state for its lifetime (`create` … `close`) and offers one method per API
operation, taking a `Principal` (from `authenticate`) and a typed request, returning a typed
result or a `SubmittedFuture`, raising a `ServiceError` for anything the client got wrong.
Training calls live in `TrainingOps` (`.training`), sampling in `SamplingOps` (`.sampling`),
the REST API's (`tinker.RestClient`) in `RestOps` (`.rest`, rest_ops.py).
Every call that changes state builds an `Operation` and goes through `submit`, the one place
where the journal (with `config.journal`) records it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from mock_server.engine import (
    CheckpointError,
    Engine,
    EngineConfig,
    EngineProcesses,
    ModelSpec,
    load_checkpoint,
)
from mock_server.service.auth import Authenticator, Principal, read_api_keys
from mock_server.service.checkpoints import CheckpointStore
from mock_server.service.config import ServerConfig
from mock_server.service.context import ServiceContext
from mock_server.service.creation_ops import CreateModelOp, LoadNewModelOp
from mock_server.service.errors import Conflict, Gone, NotFound
from mock_server.service.expiry import SessionReaper
from mock_server.service.external_weights import SaveWeightsExternalOp
from mock_server.service.futures import FutureRecord, FutureStore
from mock_server.service.ids import IdMinter
from mock_server.service.journal import Journal, Recovery
from mock_server.service.operation import Operation, Submit
from mock_server.service.pool import EnginePool
from mock_server.service.records import RequestLog
from mock_server.service.requests import (
    CreateCustomLoss,
    CreateModel,
    CreateSamplingSession,
    CreateSession,
    FinishSession,
    ForwardBackward,
    LoadWeights,
    MalformedOp,
    OptimStep,
    Sample,
    SaveWeights,
    SaveWeightsExternal,
    SaveWeightsForSampler,
)
from mock_server.service.rest_ops import RestOps
from mock_server.service.results import (
    ModelInfo,
    SamplerInfo,
    SessionInfo,
    SubmittedFuture,
    WeightsInfo,
)
from mock_server.service.sampling_ops import CreateSamplingSessionOp, SampleOp
from mock_server.service.sequencer import Sequencer
from mock_server.service.session_ops import CreateCustomLossOp, CreateSessionOp, FinishSessionOp
from mock_server.service.state import ModelState, Registry
from mock_server.service.training_ops import (
    ForwardBackwardOp,
    LoadWeightsOp,
    OptimStepOp,
    RejectMalformedOp,
    SaveWeightsForSamplerOp,
    SaveWeightsOp,
    readable_checkpoint,
)
from mock_server.service.validation import validating
from mock_server.tokenizers import tokenizer_id

A = TypeVar("A")


class TrainingOps:
    """`TinkerService.training`: one method per training call, each submitting its op."""

    def __init__(self, ctx: ServiceContext, submit: Submit) -> None:
        self._ctx = ctx
        self._submit = submit

    async def create_model(self, principal: Principal, req: CreateModel) -> SubmittedFuture:
        return await self._submit(principal, CreateModelOp(req))

    async def forward_backward(self, principal: Principal, req: ForwardBackward) -> SubmittedFuture:
        return await self._submit(principal, ForwardBackwardOp(req))

    async def optim_step(self, principal: Principal, req: OptimStep) -> SubmittedFuture:
        return await self._submit(principal, OptimStepOp(req))

    async def save_weights(self, principal: Principal, req: SaveWeights) -> SubmittedFuture:
        return await self._submit(principal, SaveWeightsOp(req))

    async def save_weights_for_sampler(
        self, principal: Principal, req: SaveWeightsForSampler
    ) -> SubmittedFuture:
        return await self._submit(principal, SaveWeightsForSamplerOp(req))

    async def save_weights_external(
        self, principal: Principal, req: SaveWeightsExternal
    ) -> SubmittedFuture:
        """`tinker://<model>/external_weights/<name>` (external_weights.py)."""
        return await self._submit(principal, SaveWeightsExternalOp(req))

    async def load_weights(self, principal: Principal, req: LoadWeights) -> SubmittedFuture:
        """Into the model `model_id` (at `seq_id`), or into a new one (`session_id` +
        `model_seq_id`)."""
        if req.model_id is not None:
            return await self._submit(principal, LoadWeightsOp(req))
        return await self._submit(principal, LoadNewModelOp(req))

    async def create_custom_loss(
        self, principal: Principal, req: CreateCustomLoss
    ) -> SubmittedFuture:
        return await self._submit(principal, CreateCustomLossOp(req))

    async def reject_malformed(self, principal: Principal, req: MalformedOp) -> NoReturn:
        await self._submit(principal, RejectMalformedOp(req))

    async def weights_info(self, principal: Principal, path: str) -> WeightsInfo:
        """The base model and LoRA shape of a checkpoint (`/weights_info`, SDK <= 0.25)."""
        with validating():
            address = readable_checkpoint(self._ctx, principal, path)
        directory = self._ctx.checkpoints.directory(address)
        try:
            checkpoint = await self._ctx.in_thread(
                partial(load_checkpoint, directory, with_optimizer=False)
            )
        except CheckpointError as exc:
            raise NotFound(str(exc), "tinker_path") from exc
        lora = checkpoint.lora
        return WeightsInfo(
            checkpoint.base_model, lora.rank, lora.train_attn, lora.train_mlp, lora.train_unembed
        )


class SamplingOps:
    """`TinkerService.sampling`: the sampling calls (submitting their ops) and reads."""

    def __init__(self, ctx: ServiceContext, submit: Submit) -> None:
        self._ctx = ctx
        self._submit = submit

    async def create_sampling_session(
        self, principal: Principal, req: CreateSamplingSession
    ) -> str:
        return await self._submit(principal, CreateSamplingSessionOp(req))

    async def sample(self, principal: Principal, req: Sample) -> SubmittedFuture:
        return await self._submit(principal, SampleOp(req))

    def sampler_info(self, principal: Principal, sampler_id: str) -> SamplerInfo:
        sampler = self._ctx.registry.sampler(principal, sampler_id, "sampler_id")
        return SamplerInfo(sampler.sampling_session_id, sampler.base_model, sampler.model_path)

    def join(self, principal: Principal, sampler_id: str) -> int:
        """`join_sampling_session`: a fresh client counter for an unpickled sampling client."""
        sampler = self._ctx.registry.sampler(principal, sampler_id)
        sampler.joined_clients += 1
        return sampler.joined_clients


class TinkerService:
    def __init__(
        self,
        config: ServerConfig,
        engine: Engine | EngineProcesses | None = None,
        pool: EnginePool | None = None,
    ) -> None:
        self.config = config
        self._owns_pool = pool is None
        self._owned_processes: EngineProcesses | None = None
        if engine is None:
            engine_config = EngineConfig(seed=config.seed)
            if config.engine_processes:
                engine = self._owned_processes = EngineProcesses(
                    engine_config, config.engine_processes
                )
            else:
                engine = Engine(engine_config)
        # Engine processes: one pool worker feeds each (pool.py, "Affinity").
        workers = config.worker_threads
        if isinstance(engine, EngineProcesses):
            workers = engine.count
        self._temp_dir: Path | None = None
        data_dir = config.data_dir
        if data_dir is None:
            self._temp_dir = data_dir = Path(tempfile.mkdtemp(prefix="tinker-mock-"))
        api_keys = read_api_keys(config.api_keys_file) if config.api_keys_file else None
        auth = Authenticator(api_keys, config.jwt_ttl_seconds)
        self.ctx = ServiceContext(
            config=config,
            engine=engine,
            pool=pool or EnginePool(workers, bind=engine.bind_worker, preempt=engine.preempt),
            ids=IdMinter(config.seed),
            futures=FutureStore(config.result_grace_seconds, config.result_ttl_seconds),
            sequencer=Sequencer(config.seq_gap_timeout_seconds, config.dedupe_window),
            registry=Registry(restricted=auth.restricted),
            checkpoints=CheckpointStore(data_dir),
            auth=auth,
            records=RequestLog(config.max_request_records),
        )
        self.training = TrainingOps(self.ctx, self.submit)
        self.sampling = SamplingOps(self.ctx, self.submit)
        # Training runs, checkpoints, sessions (tinker.RestClient): reads, and changes as ops.
        self.rest = RestOps(self.ctx, self.submit)
        self.reaper = SessionReaper(
            self.ctx.registry,
            self.ctx.sequencer,
            config.session_idle_seconds,
            abandon_seconds=config.session_abandon_seconds,
            pool=self.ctx.pool,
        )
        self._closing = False
        self._journal = Journal(data_dir) if config.journal else None
        self.recovery: Recovery | None = None  # what the journal replay did (recover())

    @property
    def records(self) -> RequestLog:
        return self.ctx.records

    @property
    def engine(self) -> Engine | EngineProcesses:
        return self.ctx.engine

    # ----- credentials and configuration -----

    def authenticate(self, credential: str | None) -> Principal:
        return self.ctx.auth.authenticate(credential)

    def issue_token(self, principal: Principal) -> str:
        return self.ctx.auth.issue_jwt(principal)

    def client_config(self) -> dict[str, Any]:
        return self.config.client_config()

    def dynamic_config(self) -> dict[str, Any]:
        return self.config.dynamic_config()

    def capabilities(self) -> list[ModelSpec]:
        return self.ctx.engine.catalog()

    # ----- operations -----

    async def submit(self, principal: Principal, op: Operation[Any, A]) -> A:
        """Accept `op` (its kind deduplicates, validates, then queues or answers it): the one
        door of every state-changing call, journaled here (with `config.journal`) — so an op
        is journaled because it is submitted, whatever it is."""
        if self._journal is None:
            return await op.accept(self.ctx, principal)
        return await self._journal.record(self.ctx, principal, op)

    # ----- sessions -----

    async def create_session(self, principal: Principal, req: CreateSession) -> SessionInfo:
        self.reaper.sweep()
        return await self.submit(principal, CreateSessionOp(req))

    async def heartbeat(self, principal: Principal, session_id: str) -> None:
        self.reaper.sweep()
        session = self.ctx.registry.session(principal, session_id)
        if session.expired:
            raise Gone(f"session {session_id!r} expired for idleness; its models were freed")
        if session.finished:
            # 410 makes the SDK stop its heartbeat loop (spec WIRE-17).
            raise Gone(f"session {session_id!r} is finished", "session_id")
        session.heartbeats += 1

    async def finish_session(
        self,
        principal: Principal,
        session_id: str,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        await self.submit(principal, FinishSessionOp(FinishSession(session_id, reason, detail)))

    # ----- models -----

    async def get_info(self, principal: Principal, model_id: str) -> ModelInfo:
        model = self.ctx.registry.model(principal, model_id)
        if model.state is ModelState.CREATING:
            try:
                await asyncio.wait_for(model.settled.wait(), self.config.long_poll_seconds)
            except TimeoutError:
                raise Conflict(f"model {model_id!r} is still being created", "model_id") from None
        if model.state is ModelState.FAILED or model.training is None:
            raise NotFound(f"model {model_id!r} failed to be created: {model.failure}", "model_id")
        spec = model.training.base.spec
        return ModelInfo(
            model_id=model.model_id,
            base_model=spec.name,
            arch=spec.arch,
            tokenizer_id=tokenizer_id(spec),
            lora_rank=model.training.lora.rank,
            optimizer_type=model.optimizer_type,
        )

    # ----- futures -----

    async def retrieve(
        self, principal: Principal, request_id: str, timeout: float | None = None
    ) -> FutureRecord:
        """Long-poll a future: its record once finished, or still pending after `timeout`
        (default `long_poll_seconds`; 0 = do not wait)."""
        self.reaper.sweep()
        record = self.ctx.futures.get(request_id)
        if record.owner is not None:
            self.ctx.registry.check_owner(
                principal, record.owner, f"future with request_id {request_id!r}", "request_id"
            )
        self.ctx.registry.touch(record.session_id)  # a client polling its futures is alive
        wait = self.config.long_poll_seconds if timeout is None else timeout
        if self._closing:
            wait = 0
        return await self.ctx.futures.wait(request_id, wait)

    def mark_retrieved(self, record: FutureRecord) -> None:
        self.ctx.futures.mark_retrieved(record)

    async def cancel(self, principal: Principal, request_id: str) -> bool:
        """Cancel a sample that has not started; other futures run to completion (training
        ops hold a seq_id that later ops wait for). True when it was still pending."""
        record = self.ctx.futures.get(request_id)
        if record.owner is not None:
            self.ctx.registry.check_owner(
                principal, record.owner, f"future with request_id {request_id!r}", "request_id"
            )
        if record.kind != "sample":
            return False
        return self.ctx.futures.request_cancel(request_id)

    # ----- lifecycle -----

    async def recover(self) -> Recovery | None:
        """Replay the journal (with `config.journal`); call once, before serving."""
        if self._journal is None:
            return None
        self.recovery = await self._journal.replay(self.ctx)
        return self.recovery

    def begin_shutdown(self) -> None:
        """Release long-polls at once (they answer try_again) so connections can drain."""
        self._closing = True
        self.ctx.futures.close()

    async def close(self) -> None:
        self.begin_shutdown()
        await self.ctx.sequencer.close()
        await self.ctx.cancel_spawned()
        if self._owns_pool:
            await asyncio.get_running_loop().run_in_executor(None, self.ctx.pool.shutdown)
        if self._owned_processes is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._owned_processes.close)
        if self._journal is not None:
            self._journal.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


__all__ = ["TinkerService"]
