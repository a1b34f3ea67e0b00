"""Sampling: sampling sessions (base model, checkpoint, or ephemeral snapshot) and samples.

A sampling session is a frozen copy of adapter weights, so sampling never touches a training
model and needs no ordering: samples run concurrently in the engine pool, each a task of its own
(`ServiceContext.spawn`). A retried `asample` (same `(sampling_session_id, seq_id)` and body)
gets its original request id and sequence ids; the sample seed is the request's, or derived from
the server seed, the sampling session and the seq_id, so a rerun of the same scenario draws the
same tokens. `SamplingOps` is the service's sampling facade (`TinkerService.sampling`).
"""

from __future__ import annotations

from typing import Any

import torch

from mock_server.engine import SampleSpec, derive_seed, get_spec, load_checkpoint
from mock_server.engine.errors import CheckpointError
from mock_server.engine.model import Adapter
from mock_server.engine.sampling import validate_spec
from mock_server.engine.slices import Unfinished, then
from mock_server.service import ids
from mock_server.service.admission import DirectOp
from mock_server.service.auth import Principal
from mock_server.service.checkpoints import CheckpointAddress, parse_address
from mock_server.service.context import ServiceContext
from mock_server.service.convert import sample_response
from mock_server.service.errors import (
    Conflict,
    InvalidArgument,
    MalformedRequest,
    NotFound,
)
from mock_server.service.fingerprint import fingerprint
from mock_server.service.operation import Job, Operation
from mock_server.service.requests import CreateSamplingSession, Sample
from mock_server.service.results import SubmittedFuture
from mock_server.service.state import Claim, Sampler, Session, check_claim
from mock_server.service.validation import validating
from tinker_ref.types import SampleResponse


class CreateSamplingSessionOp(DirectOp[CreateSamplingSession, str]):
    """A sampling session on a base model or a checkpoint's adapter weights (read in the pool);
    answers its id."""

    name = "sampling.create_sampling_session"
    _session: Session
    _fingerprint: str
    _sampler_id: str
    _base_model: str  # with `base_model`
    _address: CheckpointAddress  # with `model_path`
    _owner: str

    def earlier(self, ctx: ServiceContext, principal: Principal) -> str | None:
        req = self.request
        self._session = ctx.registry.session(principal, req.session_id)
        if (req.model_path is None) == (req.base_model is None):
            raise MalformedRequest(
                "exactly one of model_path and base_model is required", "model_path"
            )
        if req.sampling_session_seq_id < 0:
            raise MalformedRequest(
                f"must be >= 0, got {req.sampling_session_seq_id}", "sampling_session_seq_id"
            )
        self._fingerprint = fingerprint(("create_sampling_session", req))
        return self._claimed()

    def _claimed(self) -> str | None:
        return check_claim(
            self._session.sampling_claims,
            self.request.sampling_session_seq_id,
            self._fingerprint,
            "sampling_session_seq_id",
        )

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        req = self.request
        self._owner = principal.identity
        self._sampler_id = ids.sampling_session_id(
            self._session.session_id, req.sampling_session_seq_id
        )
        if req.base_model is not None:
            self._base_model = get_spec(req.base_model).name
            return
        self._address = parse_address(req.model_path or "", "model_path")
        ctx.registry.check_checkpoint(
            principal, self._address.model_id, f"checkpoint {req.model_path!r}", "model_path"
        )

    @property
    def has_engine_work(self) -> bool:
        return self.request.model_path is not None  # a checkpoint to read

    @property
    def session_id(self) -> str | None:
        return self._session.session_id

    def run(self, ctx: ServiceContext) -> tuple[str, dict[str, torch.Tensor]]:
        directory = ctx.checkpoints.directory(self._address)
        try:
            checkpoint = load_checkpoint(directory, with_optimizer=False)
        except CheckpointError as exc:
            raise NotFound(str(exc), "model_path") from exc
        return checkpoint.base_model, checkpoint.weights

    def finish(self, ctx: ServiceContext, loaded: Any) -> str:
        req = self.request
        base_model, weights = (self._base_model, {}) if loaded is None else loaded
        # Claimed meanwhile (while the checkpoint loaded) by a retry of this call: its answer.
        if self._claimed() is not None:
            return self._sampler_id
        self._session.sampling_claims[req.sampling_session_seq_id] = Claim(
            self._fingerprint, self._sampler_id
        )
        ctx.registry.samplers[self._sampler_id] = Sampler(
            self._sampler_id,
            self._session.session_id,
            self._owner,
            base_model,
            req.model_path,
            weights,
        )
        return self._sampler_id


class SampleOp(Operation[Sample, SubmittedFuture]):
    """Samples from a sampling session. Not sequenced: deduplicated by `(sampling_session_id,
    seq_id)`, validated, then run at once as a task of its own (`ServiceContext.spawn`); a
    sample cancelled before it starts fails without running."""

    name = "sampling.sample"
    _sampler: Sampler
    _spec: SampleSpec
    # The sampler's weights when the sample was accepted: an inflight save after that
    # (inflight.py) changes what later samples see, never one already submitted.
    _weights: Adapter

    async def accept(self, ctx: ServiceContext, principal: Principal) -> SubmittedFuture:
        req = self.request
        self._sampler = sampler = ctx.registry.sampler(principal, req.sampling_session_id)
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
        with validating():
            self.validate(ctx, principal)
        ctx.admit()
        request_id = ctx.new_future("sample", principal, sampler.session_id)
        sequence_ids = tuple(
            ids.sample_sequence_ids(sampler.sampling_session_id, req.seq_id, req.num_samples)
        )
        sampler.requests[req.seq_id] = (fp, request_id, sequence_ids)
        ctx.spawn(Job(ctx, request_id, self).run())
        return SubmittedFuture(request_id, sample_sequence_ids=sequence_ids)

    @property
    def session_id(self) -> str | None:
        return self._sampler.session_id

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        self._spec = _sample_spec(ctx, self._sampler, self.request)
        self._weights = self._sampler.weights

    def run(self, ctx: ServiceContext) -> SampleResponse | Unfinished[SampleResponse]:
        req, sampler = self.request, self._sampler
        # In slices: between two, other sessions' ops take their turns (pool.py, "Slices").
        result = ctx.engine.sample_sliced(
            sampler.base_model, self._weights, self._spec, ctx.config.sample_slice_seconds
        )
        return then(
            result,
            lambda done: sample_response(
                done, req.target_prompt_logprobs, req.prompt_logprobs_last_n
            ),
        )


def _sample_spec(ctx: ServiceContext, sampler: Sampler, req: Sample) -> SampleSpec:
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
        seed = derive_seed(ctx.config.seed, sampler.sampling_session_id, req.seq_id)
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
    validate_spec(spec, model_spec.vocab_size, model_spec.max_context_length)
    return spec
