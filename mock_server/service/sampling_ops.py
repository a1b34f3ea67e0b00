"""Sampling: sampling sessions (base model, checkpoint, or ephemeral snapshot) and samples.

A sampling session is a frozen copy of adapter weights, so sampling never touches a training
model and needs no ordering: samples run concurrently in the engine pool. A retried `asample`
(same `(sampling_session_id, seq_id)` and body) gets its original request id and sequence ids;
the sample seed is the request's, or derived from the server seed, the sampling session and the
seq_id, so a rerun of the same scenario draws the same tokens.
"""

from __future__ import annotations

import asyncio

import torch

from mock_server.engine import SampleSpec, derive_seed, get_spec, load_checkpoint
from mock_server.engine.errors import CheckpointError
from mock_server.engine.sampling import validate_spec
from mock_server.service import ids
from mock_server.service.auth import Principal
from mock_server.service.checkpoints import parse_address
from mock_server.service.context import ServiceContext
from mock_server.service.convert import sample_response
from mock_server.service.errors import (
    Conflict,
    InvalidArgument,
    MalformedRequest,
    NotFound,
)
from mock_server.service.fingerprint import fingerprint
from mock_server.service.requests import CreateSamplingSession, Sample
from mock_server.service.results import SamplerInfo, SubmittedFuture
from mock_server.service.state import Claim, Sampler, check_claim
from mock_server.service.validation import validating


class SamplingOps:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._tasks: set[asyncio.Task[None]] = set()

    async def create_sampling_session(
        self, principal: Principal, req: CreateSamplingSession
    ) -> str:
        ctx = self._ctx
        session = ctx.registry.session(principal, req.session_id)
        if (req.model_path is None) == (req.base_model is None):
            raise MalformedRequest(
                "exactly one of model_path and base_model is required", "model_path"
            )
        if req.sampling_session_seq_id < 0:
            raise MalformedRequest(
                f"must be >= 0, got {req.sampling_session_seq_id}", "sampling_session_seq_id"
            )
        fp = fingerprint(("create_sampling_session", req))
        earlier = check_claim(
            session.sampling_claims, req.sampling_session_seq_id, fp, "sampling_session_seq_id"
        )
        if earlier is not None:
            return earlier
        sampler_id = ids.sampling_session_id(session.session_id, req.sampling_session_seq_id)
        if req.base_model is not None:
            with validating():
                base_model = get_spec(req.base_model).name
            weights: dict[str, torch.Tensor] = {}
        else:
            with validating():
                address = parse_address(req.model_path or "", "model_path")
            ctx.registry.check_checkpoint(
                principal, address.model_id, f"checkpoint {req.model_path!r}", "model_path"
            )
            directory = ctx.checkpoints.directory(address)
            try:
                checkpoint = await ctx.in_thread(
                    lambda: load_checkpoint(directory, with_optimizer=False)
                )
            except CheckpointError as exc:
                raise NotFound(str(exc), "model_path") from exc
            base_model, weights = checkpoint.base_model, checkpoint.weights
        # Re-check: another request may have claimed the number while the checkpoint loaded.
        if (
            check_claim(
                session.sampling_claims, req.sampling_session_seq_id, fp, "sampling_session_seq_id"
            )
            is not None
        ):
            return sampler_id
        session.sampling_claims[req.sampling_session_seq_id] = Claim(fp, sampler_id)
        ctx.registry.samplers[sampler_id] = Sampler(
            sampler_id,
            session.session_id,
            principal.identity,
            base_model,
            req.model_path,
            weights,
        )
        return sampler_id

    def sampler_info(self, principal: Principal, sampler_id: str) -> SamplerInfo:
        sampler = self._ctx.registry.sampler(principal, sampler_id, "sampler_id")
        return SamplerInfo(sampler.sampling_session_id, sampler.base_model, sampler.model_path)

    def join(self, principal: Principal, sampler_id: str) -> int:
        """`join_sampling_session`: a fresh client counter for an unpickled sampling client."""
        sampler = self._ctx.registry.sampler(principal, sampler_id)
        sampler.joined_clients += 1
        return sampler.joined_clients

    async def sample(self, principal: Principal, req: Sample) -> SubmittedFuture:
        ctx = self._ctx
        sampler = ctx.registry.sampler(principal, req.sampling_session_id)
        fp = fingerprint(("sample", req))
        earlier = sampler.requests.get(req.seq_id)
        if earlier is not None:
            if earlier[0] != fp:
                raise Conflict(
                    f"seq_id {req.seq_id} of sampling session {sampler.sampling_session_id!r} "
                    "was already used by a different request",
                    "seq_id",
                )
            return SubmittedFuture(earlier[1], sample_sequence_ids=earlier[2])
        spec = self._spec(sampler, req)
        ctx.admit()
        request_id = ctx.new_future("sample", principal)
        sequence_ids = tuple(
            ids.sample_sequence_ids(sampler.sampling_session_id, req.seq_id, req.num_samples)
        )
        sampler.requests[req.seq_id] = (fp, request_id, sequence_ids)
        engine, weights, base_model = ctx.engine, sampler.weights, sampler.base_model

        async def run() -> None:
            record = ctx.futures.get(request_id)
            if record.cancel_requested:
                ctx.futures.fail(request_id, "cancelled by the client", "user")
                return
            await ctx.run_op(
                request_id,
                lambda: sample_response(
                    engine.sample(base_model, weights, spec),
                    req.target_prompt_logprobs,
                    req.prompt_logprobs_last_n,
                ),
            )

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return SubmittedFuture(request_id, sample_sequence_ids=sequence_ids)

    def _spec(self, sampler: Sampler, req: Sample) -> SampleSpec:
        if req.seq_id < 0:
            raise MalformedRequest(f"must be >= 0, got {req.seq_id}", "seq_id")
        params = req.params
        stop_ids: tuple[int, ...] | None = None
        stop_strings: tuple[str, ...] = ()
        if isinstance(params.stop, str):
            stop_strings = (params.stop,)
        elif params.stop is not None and len(params.stop) == 0:
            stop_ids = ()  # an explicit empty list disables EOS
        elif params.stop is not None and isinstance(params.stop[0], str):
            stop_strings = tuple(str(s) for s in params.stop)
        elif params.stop is not None:
            stop_ids = tuple(int(s) for s in params.stop)
        targets = None
        if req.target_prompt_logprobs is not None:
            # Missing cells of a sparse target matrix mean "no target" (-1), as in the cookbook.
            pad = -1 if req.target_prompt_logprobs.is_sparse else 0
            targets = req.target_prompt_logprobs.to_torch(pad_value=pad).to(torch.int64)
        seed = params.seed
        if seed is not None and not 0 <= seed < 2**64:
            raise InvalidArgument(f"must be in [0, 2**64), got {seed}", "sampling_params.seed")
        if seed is None:
            seed = derive_seed(self._ctx.config.seed, sampler.sampling_session_id, req.seq_id)
        spec = SampleSpec(
            prompt=torch.tensor(req.prompt, dtype=torch.int64),
            seed=seed,
            num_samples=req.num_samples,
            max_tokens=params.max_tokens if params.max_tokens is not None else 16,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            stop_token_ids=stop_ids,
            stop_strings=stop_strings,
            prompt_logprobs=req.prompt_logprobs,
            topk_prompt_logprobs=req.topk_prompt_logprobs,
            target_prompt_logprobs=targets,
            topk_sample_logprobs=req.topk_sample_logprobs,
            prompt_alt_tokens_k=req.prompt_alt_tokens_k,
        )
        model_spec = get_spec(sampler.base_model)
        with validating():
            validate_spec(spec, model_spec.vocab_size, model_spec.max_context_length)
        return spec

    async def drain(self) -> None:
        """Wait until every sample in flight has its outcome (journal replay)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
