"""`TinkerStateMachine`: random but valid (and some invalid) training sequences against a backend,
every response checked against a plain model of what must be true.

    from tinker_ref.testing import BackendConfig, run_state_machine

    run_state_machine(BackendConfig(base_url="http://127.0.0.1:8080", api_key="tml-dev"))

Rules: create models (two sessions), forward / forward_backward with every built-in loss,
forward_backward_custom with the catalogue losses (optionally with an optim_step pipelined
behind the still-running custom-loss future), optim_step, save / load state with and without
Adam state (into a model or as a new model, then training on), a checkpoint round trip
(train, save, train, load, retrain), sampler snapshots + compute_logprobs, invalid requests,
and ordering faults injected at the transport (held, duplicated and conflicting
seq_ids, see `faults.py`). After every step the last model touched is probed with a forward.

What is checked depends on `BackendConfig.architecture`:
- with one (the mock server, whose network the suite knows), a `ReferenceModel` predicts every
  logprob, `loss:sum`, `surrogate_loss:sum`, user metric and optimizer metric, compared
  **bitwise** (`tolerance=0`);
- without (any other backend), the machine checks self-consistency within `tolerance`: the
  same weights give the same logprobs (across forwards, forward_backward outputs, probes,
  checkpoints reloaded into any model, and sampler snapshots), `loss:sum` equals the spec's
  formula on the returned logprobs, custom-loss metrics follow the SDK 0.38 rewrite, and
  invalid requests fail with the documented error class and change nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tinker_ref import ServiceClient, TrainingClient, errors
from tinker_ref.chunking import chunk_data
from tinker_ref.custom_loss import forward_phase_data
from tinker_ref.sampling_client import SamplingClient
from tinker_ref.testing.data import (
    OUT_OF_VOCAB,
    DatumSpec,
    adam_params_st,
    builtin_batch,
    custom_batch,
    datum_spec,
    tokens_st,
)
from tinker_ref.testing.faults import FaultInjectingTransport
from tinker_ref.testing.losses import BUILTIN_LOSSES, CUSTOM_LOSSES, expected_user_metrics
from tinker_ref.testing.reference import Prediction, ReferenceArchitecture, ReferenceModel, Snapshot
from tinker_ref.transport.base import Transport
from tinker_ref.types import AdamParams, ForwardBackwardOutput, ModelInput

# training right after a load: (a cross-entropy batch, the step's Adam params)
resume_st = st.tuples(st.lists(datum_spec("cross_entropy"), min_size=1, max_size=2), adam_params_st)
TIMEOUT = 120.0  # seconds per backend call; a hang is a failure, not a stuck CI job
MAX_MODELS = 4
PROBE = DatumSpec((1, 2, 3, 4), {"target_tokens": np.array([2, 3, 4, 5], dtype=np.int64)})


@dataclass(frozen=True)
class BackendConfig:
    base_url: str
    api_key: str
    transport: str = "http"
    tolerance: float = 0.0  # 0: bitwise; else rtol = atol = tolerance
    # The backend's network, when known (the mock): enables exact predictions.
    architecture: ReferenceArchitecture | None = None
    base_models: tuple[str, ...] = ("tinker-ref/tiny-64", "tinker-ref/tiny-512")
    ranks: tuple[int, ...] = (1, 2, 4)
    sampling: bool = True  # the backend serves sampler snapshots
    # A second key whose sessions must not reach the first key's models (restricted backends).
    other_api_key: str | None = None


@dataclass(eq=False)
class TrackedModel:
    label: str
    client: TrainingClient
    base_model: str
    rank: int
    reference: ReferenceModel | None
    version: str  # identity of the current weights; observations are keyed by it

    def __repr__(self) -> str:
        return f"{self.label}({self.base_model}, rank={self.rank})"


@dataclass(frozen=True)
class Checkpoint:
    label: str
    path: str
    base_model: str
    rank: int
    version: str
    snapshot: Snapshot | None

    def __repr__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Sampler:
    label: str
    client: SamplingClient
    version: str
    prompt: tuple[int, ...]
    logprobs: np.ndarray  # what it answered at snapshot time

    def __repr__(self) -> str:
        return self.label


@dataclass(frozen=True)
class _Sessions:
    main: list[ServiceClient]  # two sessions of the main key
    faults: list[FaultInjectingTransport]  # their transports
    other: ServiceClient | None  # a session of the other key, if one was given

    @classmethod
    def open(cls, config: BackendConfig) -> _Sessions:
        main, faults = [], []
        for _ in range(2):
            service = ServiceClient(
                base_url=config.base_url, api_key=config.api_key, transport=config.transport
            )
            wrapper = FaultInjectingTransport(service.transport)
            service.transport = cast(Transport, wrapper)  # a Transport by delegation
            main.append(service)
            faults.append(wrapper)
        other = None
        if config.other_api_key is not None:
            other = ServiceClient(
                base_url=config.base_url, api_key=config.other_api_key, transport=config.transport
            )
        return cls(main, faults, other)

    def close(self) -> None:
        for service in [*self.main, *([self.other] if self.other else [])]:
            service.close()


def _specs_output(out: ForwardBackwardOutput, key: str) -> list[np.ndarray]:
    return [np.asarray(o[key].to_numpy()) for o in out.loss_fn_outputs]


class TinkerStateMachine(RuleBasedStateMachine):
    config: ClassVar[BackendConfig]
    steps_run: ClassVar[int] = 0  # rules executed, over every example of a run

    models = Bundle("models")
    checkpoints = Bundle("checkpoints")
    samplers = Bundle("samplers")

    # Sessions are shared by all examples of a run (opening them per example would make
    # shrinking, which replays examples hundreds of times, needlessly slow); models are not.
    _shared: ClassVar[_Sessions | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.strict = self.config.architecture is not None and self.config.tolerance == 0
        sessions = self._sessions()
        self.services, self.faults, self.intruder = sessions.main, sessions.faults, sessions.other
        for wrapper in self.faults:
            wrapper.reset()
        self.all_models: list[TrackedModel] = []
        self.observed: dict[tuple[str, bytes], np.ndarray] = {}
        self.touched: TrackedModel | None = None
        self._labels = itertools.count()
        self._versions = itertools.count()

    @classmethod
    def _sessions(cls) -> _Sessions:
        if cls._shared is None:
            cls._shared = _Sessions.open(cls.config)
        return cls._shared

    @classmethod
    def close_sessions(cls) -> None:
        if cls._shared is not None:
            cls._shared.close()
            cls._shared = None

    # ----- checking helpers -----

    def _step(self, text: str) -> None:
        type(self).steps_run += 1
        note(text)

    def _same(self, got: Any, expected: Any, what: str) -> None:
        got_a, expected_a = np.asarray(got), np.asarray(expected)
        assert got_a.shape == expected_a.shape, f"{what}: shape {got_a.shape} != {expected_a.shape}"
        tol = self.config.tolerance
        ok = (
            np.array_equal(got_a, expected_a)
            if tol == 0
            else np.allclose(got_a, expected_a, rtol=tol, atol=tol)
        )
        assert ok, f"{what}: backend {got_a.tolist()} != expected {expected_a.tolist()}"

    def _new_version(self, model: TrackedModel) -> str:
        return f"{model.label}@{next(self._versions)}"

    def _observe(self, model: TrackedModel, spec: DatumSpec, got: np.ndarray, what: str) -> None:
        """Same weights, same datum => same logprobs, whichever call produced them."""
        key = (model.version, repr((spec.tokens, spec.targets.tolist())).encode())
        seen = self.observed.setdefault(key, got)
        self._same(got, seen, f"{what} vs an earlier answer for the same weights")

    def _check_outputs(
        self,
        model: TrackedModel,
        specs: Sequence[DatumSpec],
        out: ForwardBackwardOutput,
        predicted: Prediction | None,
        what: str,
    ) -> list[np.ndarray]:
        assert len(out.loss_fn_outputs) == len(specs), f"{what}: one output per datum"
        got = _specs_output(out, "logprobs")
        for i, (spec, lp) in enumerate(zip(specs, got, strict=True)):
            assert lp.shape == spec.targets.shape, f"{what}: logprobs[{i}] shaped like targets"
            assert lp.dtype == np.float32, f"{what}: logprobs[{i}] dtype {lp.dtype}"
            self._observe(model, spec, lp, f"{what} logprobs[{i}]")
            if predicted is not None:
                self._same(lp, predicted.logprobs[i], f"{what} logprobs[{i}]")
        # other backends may not return per-token losses; the mock does
        has_elementwise = all("elementwise_loss" in o for o in out.loss_fn_outputs)
        if predicted is not None and predicted.elementwise is not None and has_elementwise:
            for i, value in enumerate(_specs_output(out, "elementwise_loss")):
                self._same(value, predicted.elementwise[i], f"{what} elementwise_loss[{i}]")
        return got

    def _chunks(self, model: TrackedModel, specs: Sequence[DatumSpec]) -> list[list[DatumSpec]]:
        """The request boundaries the client will use (they fix the summation order)."""
        config = model.client.service.client_config
        datums = forward_phase_data([s.to_datum() for s in specs])
        sizes = [
            len(c)
            for c in chunk_data(
                datums, config.fwdbwd_max_chunk_len, config.fwdbwd_max_chunk_bytes_count
            )
        ]
        bounds = np.cumsum([0, *sizes])
        return [list(specs[a:b]) for a, b in itertools.pairwise(bounds)]

    def _builtin(
        self,
        model: TrackedModel,
        loss: str,
        batch: list[DatumSpec],
        config: dict[str, float],
        forward_only: bool,
        out: ForwardBackwardOutput,
    ) -> None:
        what = f"{model.label}.{'forward' if forward_only else 'forward_backward'}({loss})"
        predicted = None
        if model.reference is not None:
            predicted = model.reference.forward_backward(
                self._chunks(model, batch), loss, config, forward_only
            )
        got = self._check_outputs(model, batch, out, predicted, what)
        assert "loss:sum" in out.metrics, f"{what}: no loss:sum in {out.metrics}"
        if predicted is not None:
            self._same(out.metrics["loss:sum"], predicted.metrics["loss:sum"], f"{what} loss:sum")
        else:  # the spec's formula on the backend's own logprobs: a per-token sum, no scaling
            expected = 0.0
            for spec, lp in zip(batch, got, strict=True):
                inputs = spec.tensors()[1]
                expected += float(BUILTIN_LOSSES[loss](torch.from_numpy(lp), inputs, config).sum())
            self._same(out.metrics["loss:sum"], expected, f"{what} loss:sum")

    def _forward_probe(self, model: TrackedModel, spec: DatumSpec, what: str) -> np.ndarray:
        weights = np.zeros(spec.targets.shape, dtype=np.float32)
        probe = DatumSpec(spec.tokens, {"target_tokens": spec.targets, "weights": weights})
        out = model.client.forward([probe.to_datum()], "cross_entropy").result(TIMEOUT)
        predicted = None
        if model.reference is not None:
            predicted = model.reference.forward_backward([[probe]], "cross_entropy", {}, True)
        return self._check_outputs(model, [probe], out, predicted, what)[0]

    def _optim_result(
        self, model: TrackedModel, adam: AdamParams, metrics: dict[str, float]
    ) -> None:
        what = f"{model.label}.optim_step"
        if model.reference is not None:
            expected = model.reference.optim_step(adam)
            for key, value in expected.items():
                if key in metrics:
                    self._same(metrics[key], value, f"{what} {key}")
            if expected["optimizer_step:sum"]:
                model.version = self._new_version(model)
        else:
            model.version = self._new_version(model)

    # ----- rules: models -----

    def _create(self, session: int, base_model: str, rank: int, seed: int) -> TrackedModel:
        client = self.services[session].create_lora_training_client(
            base_model, rank=rank, seed=seed
        )
        label = f"m{next(self._labels)}"
        reference = None
        if self.config.architecture is not None:
            reference = ReferenceModel(self.config.architecture, base_model, rank, seed)
        model = TrackedModel(label, client, base_model, rank, reference, "")
        model.version = self._new_version(model)
        self.all_models.append(model)
        self.touched = model
        self._step(
            f"{label} = session{session}.create_lora_training_client({base_model}, "
            f"rank={rank}, seed={seed}) -> {client.model_id}"
        )
        return model

    @initialize(
        target=models,
        session=st.integers(0, 1),
        base=st.integers(0, 1),
        rank=st.integers(0, 2),
        seed=st.integers(0, 3),
    )
    def first_model(self, session: int, base: int, rank: int, seed: int) -> TrackedModel:
        return self._create(session, self._base(base), self._rank(rank), seed)

    @precondition(lambda self: len(self.all_models) < MAX_MODELS)
    @rule(
        target=models,
        session=st.integers(0, 1),
        base=st.integers(0, 1),
        rank=st.integers(0, 2),
        seed=st.integers(0, 3),
    )
    def create_model(self, session: int, base: int, rank: int, seed: int) -> TrackedModel:
        return self._create(session, self._base(base), self._rank(rank), seed)

    def _base(self, index: int) -> str:
        return self.config.base_models[index % len(self.config.base_models)]

    def _rank(self, index: int) -> int:
        return self.config.ranks[index % len(self.config.ranks)]

    # ----- rules: forward / backward -----

    @rule(model=models, data=st.data(), loss=st.sampled_from(sorted(BUILTIN_LOSSES)))
    def forward(self, model: TrackedModel, data: st.DataObject, loss: str) -> None:
        batch, config = data.draw(builtin_batch(loss), label="batch, loss_fn_config")
        self._step(f"{model.label}.forward({loss}, {config}, {batch})")
        out = model.client.forward([s.to_datum() for s in batch], loss, config).result(TIMEOUT)
        self._builtin(model, loss, batch, config, True, out)
        self.touched = model

    @rule(model=models, data=st.data(), loss=st.sampled_from(sorted(BUILTIN_LOSSES)))
    def forward_backward(self, model: TrackedModel, data: st.DataObject, loss: str) -> None:
        batch, config = data.draw(builtin_batch(loss), label="batch, loss_fn_config")
        self._step(f"{model.label}.forward_backward({loss}, {config}, {batch})")
        future = model.client.forward_backward([s.to_datum() for s in batch], loss, config)
        self._builtin(model, loss, batch, config, False, future.result(TIMEOUT))
        self.touched = model

    @rule(
        model=models,
        data=st.data(),
        name=st.sampled_from(sorted(CUSTOM_LOSSES)),
        then_step=st.none() | adam_params_st,
    )
    def forward_backward_custom(
        self, model: TrackedModel, data: st.DataObject, name: str, then_step: AdamParams | None
    ) -> None:
        entry = CUSTOM_LOSSES[name]
        batch = data.draw(custom_batch(name), label="batch")
        pipelined = f", then optim_step({then_step}) before it resolves" if then_step else ""
        self._step(f"{model.label}.forward_backward_custom({name}, {batch}){pipelined}")
        future = model.client.forward_backward_custom([s.to_datum() for s in batch], entry.loss)
        # submitted while the custom loss's forward/backward is in flight: it must run after it
        step = model.client.optim_step(then_step) if then_step is not None else None
        out = future.result(TIMEOUT)
        what = f"{model.label}.forward_backward_custom({name})"
        predicted, raw_metrics = (None, None)
        if model.reference is not None:
            predicted, raw_metrics = model.reference.forward_backward_custom(
                self._chunks(model, batch), entry.loss
            )
        got = self._check_outputs(model, batch, out, predicted, what)
        # the loss evaluated on the backend's logprobs: what the client must have reported
        leaves = [torch.from_numpy(lp.copy()).requires_grad_(True) for lp in got]
        loss_value, user = entry.loss([s.to_datum() for s in batch], leaves)
        loss_value.backward()  # type: ignore[no-untyped-call]
        expected_metrics = expected_user_metrics(user)
        expected_metrics["loss:sum"] = float(loss_value.detach().item())
        surrogate = 0.0
        for lp, leaf in zip(got, leaves, strict=True):
            assert leaf.grad is not None
            surrogate += float(np.sum(lp.astype(np.float64) * leaf.grad.numpy()))
        for key, value in expected_metrics.items():
            assert key in out.metrics, f"{what}: metric {key!r} missing from {out.metrics}"
            self._same(out.metrics[key], value, f"{what} {key}")
        if predicted is not None:
            assert raw_metrics is not None
            for key, value in predicted.metrics.items():
                self._same(out.metrics[key], value, f"{what} {key}")
        else:  # the server's CE sum of weights -g: float32 sums, so a relative tolerance
            tol = max(self.config.tolerance, 1e-5)
            got_surrogate = out.metrics["surrogate_loss:sum"]
            assert abs(got_surrogate - surrogate) <= tol * (1 + abs(surrogate)), (
                f"{what} surrogate_loss:sum {got_surrogate} != sum(lp * dC/dlp) = {surrogate}"
            )
        if step is not None and then_step is not None:
            self._optim_result(model, then_step, step.result(TIMEOUT).metrics)
        self.touched = model

    @rule(model=models, adam=adam_params_st)
    def optim_step(self, model: TrackedModel, adam: AdamParams) -> None:
        self._step(f"{model.label}.optim_step({adam})")
        result = model.client.optim_step(adam).result(TIMEOUT)
        self._optim_result(model, adam, result.metrics)
        self.touched = model

    # ----- rules: checkpoints -----

    def _save(self, model: TrackedModel) -> Checkpoint:
        label = f"c{next(self._labels)}"
        note(f"  {label} = {model.label}.save_state()")
        path = model.client.save_state(label).result(TIMEOUT).path
        snapshot = model.reference.snapshot() if model.reference is not None else None
        self.touched = model
        return Checkpoint(label, path, model.base_model, model.rank, model.version, snapshot)

    @rule(target=checkpoints, model=models)
    def save_state(self, model: TrackedModel) -> Checkpoint:
        self._step(f"{model.label}.save_state()")
        return self._save(model)

    @rule(
        target=checkpoints, model=models, optimizer=st.booleans(), first=resume_st, then=resume_st
    )
    def checkpoint_round_trip(
        self,
        model: TrackedModel,
        optimizer: bool,
        first: tuple[list[DatumSpec], AdamParams],
        then: tuple[list[DatumSpec], AdamParams],
    ) -> Checkpoint:
        """Resume from a checkpoint: train a step (so Adam has state), save, train step `then`,
        load the checkpoint back and train step `then` again. With the Adam state restored the
        second run of `then` must land on exactly the weights of the first, on any backend."""
        call = "load_state_with_optimizer" if optimizer else "load_state"
        self._step(f"{model.label}: train, save, train, {call}, train the same step again")
        self._resume(model, first)
        checkpoint = self._save(model)
        self._resume(model, then)
        after_first = self._forward_probe(model, PROBE, f"probe of {model.label}")
        load = model.client.load_state_with_optimizer if optimizer else model.client.load_state
        note(f"  {model.label}.{call}({checkpoint.label})")
        load(checkpoint.path).result(TIMEOUT)
        self._loaded(model, checkpoint, optimizer)
        self._resume(model, then)
        after_second = self._forward_probe(model, PROBE, f"probe of {model.label}")
        if optimizer:
            self._same(after_second, after_first, "the same step from the restored Adam state")
        return checkpoint

    def _fits(self, model: TrackedModel, checkpoint: Checkpoint) -> bool:
        return (model.base_model, model.rank) == (checkpoint.base_model, checkpoint.rank)

    def _loaded(self, model: TrackedModel, checkpoint: Checkpoint, optimizer: bool) -> None:
        if model.reference is not None:
            assert checkpoint.snapshot is not None
            model.reference.load(checkpoint.snapshot, optimizer)
        # the checkpoint's weights: logprobs seen for them before must come back
        model.version = checkpoint.version

    def _resume(self, model: TrackedModel, resume: tuple[list[DatumSpec], AdamParams]) -> None:
        """Train on right after a load: where a cold or lost Adam state shows."""
        batch, adam = resume
        note(f"  then {model.label}.forward_backward(cross_entropy, {batch}); optim_step({adam})")
        out = model.client.forward_backward([s.to_datum() for s in batch], "cross_entropy")
        self._builtin(model, "cross_entropy", batch, {}, False, out.result(TIMEOUT))
        self._optim_result(model, adam, model.client.optim_step(adam).result(TIMEOUT).metrics)

    @rule(
        checkpoint=checkpoints,
        optimizer=st.booleans(),
        pick=st.integers(0, MAX_MODELS - 1),
        resume=st.none() | resume_st,
    )
    def load_state(
        self,
        checkpoint: Checkpoint,
        optimizer: bool,
        pick: int,
        resume: tuple[list[DatumSpec], AdamParams] | None,
    ) -> None:
        # into a model the checkpoint fits (its own model always does)
        fitting = [m for m in self.all_models if self._fits(m, checkpoint)]
        model = fitting[pick % len(fitting)]
        call = "load_state_with_optimizer" if optimizer else "load_state"
        self._step(f"{model.label}.{call}({checkpoint.label})")
        load = model.client.load_state_with_optimizer if optimizer else model.client.load_state
        load(checkpoint.path).result(TIMEOUT)
        self._loaded(model, checkpoint, optimizer)
        if resume is not None:
            self._resume(model, resume)
        self.touched = model

    @rule(checkpoint=checkpoints, optimizer=st.booleans(), pick=st.integers(0, MAX_MODELS - 1))
    def load_mismatched_state(self, checkpoint: Checkpoint, optimizer: bool, pick: int) -> None:
        """Adapters of another shape or base model: refused, and nothing changes."""
        unfit = [m for m in self.all_models if not self._fits(m, checkpoint)]
        if not unfit:
            note(f"no model of another shape than {checkpoint.label} yet")
            return
        model = unfit[pick % len(unfit)]
        call = "load_state_with_optimizer" if optimizer else "load_state"
        self._step(f"{model.label}.{call}({checkpoint.label}) of another shape")
        load = model.client.load_state_with_optimizer if optimizer else model.client.load_state
        try:
            load(checkpoint.path).result(TIMEOUT)
        except (errors.RequestFailedError, errors.UnprocessableEntityError) as exc:
            note(f"  refused: {type(exc).__name__}: {str(exc)[:160]}")
        else:
            raise AssertionError(f"loading {checkpoint} into {model!r} was accepted")
        self.touched = model

    @precondition(lambda self: len(self.all_models) < MAX_MODELS)
    @rule(
        target=models,
        checkpoint=checkpoints,
        optimizer=st.booleans(),
        session=st.integers(0, 1),
        resume=st.none() | resume_st,
    )
    def model_from_state(
        self,
        checkpoint: Checkpoint,
        optimizer: bool,
        session: int,
        resume: tuple[list[DatumSpec], AdamParams] | None,
    ) -> TrackedModel:
        service = self.services[session]
        create = (
            service.create_training_client_from_state_with_optimizer
            if optimizer
            else service.create_training_client_from_state
        )
        client = create(checkpoint.path)
        label = f"m{next(self._labels)}"
        reference = None
        if self.config.architecture is not None:
            # any initial weights: loading the snapshot replaces every adapter tensor
            reference = ReferenceModel(
                self.config.architecture, checkpoint.base_model, checkpoint.rank, 0
            )
        model = TrackedModel(label, client, checkpoint.base_model, checkpoint.rank, reference, "")
        self._loaded(model, checkpoint, optimizer)
        self.all_models.append(model)
        self.touched = model
        with_optimizer = "_with_optimizer" if optimizer else ""
        self._step(
            f"{label} = session{session}.create_training_client_from_state{with_optimizer}"
            f"({checkpoint.label}) -> {client.model_id}"
        )
        if resume is not None:
            self._resume(model, resume)
        return model

    # ----- rules: samplers -----

    @precondition(lambda self: self.config.sampling)
    @rule(
        target=samplers,
        model=models,
        prompt=st.lists(tokens_st, min_size=2, max_size=6).map(tuple),
    )
    def sampler_snapshot(self, model: TrackedModel, prompt: tuple[int, ...]) -> Sampler:
        label = f"s{next(self._labels)}"
        self._step(
            f"{label} = {model.label}.save_weights_and_get_sampling_client(); "
            f"{label}.compute_logprobs({list(prompt)})"
        )
        client = model.client.save_weights_and_get_sampling_client()
        answer = client.compute_logprobs(ModelInput.from_ints(list(prompt))).result(TIMEOUT)
        assert len(answer) == len(prompt) and answer[0] is None, f"{label}: {answer}"
        got = np.asarray(answer[1:], dtype=np.float32)
        spec = DatumSpec(prompt[:-1], {"target_tokens": np.asarray(prompt[1:], dtype=np.int64)})
        # the snapshot's prompt logprobs are the training forward's at snapshot time
        self._observe(model, spec, got, f"{label} prompt logprobs")
        training = self._forward_probe(model, spec, f"{model.label} forward at snapshot time")
        self._same(got, training, f"{label} prompt logprobs vs the training forward")
        self.touched = model
        return Sampler(label, client, model.version, prompt, got)

    @rule(sampler=samplers)
    def sampler_recheck(self, sampler: Sampler) -> None:
        self._step(f"{sampler.label}.compute_logprobs({list(sampler.prompt)}) again")
        prompt = ModelInput.from_ints(list(sampler.prompt))
        answer = sampler.client.compute_logprobs(prompt).result(TIMEOUT)
        # a snapshot is frozen: later training of its model must not leak into it
        self._same(np.asarray(answer[1:], dtype=np.float32), sampler.logprobs, sampler.label)

    # ----- rules: invalid requests -----

    @rule(
        model=models,
        kind=st.sampled_from(
            [
                "target_length",
                "out_of_vocab",
                "missing_weights",
                "unknown_loss",
                "bad_adam",
                "unknown_model",
                "other_key",
            ]
        ),
        spec=datum_spec("cross_entropy"),
    )
    def invalid_request(self, model: TrackedModel, kind: str, spec: DatumSpec) -> None:
        """Refused with the documented error class; the invariant probe then shows that
        nothing changed (and the next optim_step that nothing was accumulated)."""
        self._step(f"{model.label}: invalid request {kind} based on {spec}")
        client: TrainingClient = model.client
        expected: tuple[type[BaseException], ...] = (errors.UnprocessableEntityError,)
        targets, weights = spec.targets, spec.inputs["weights"]
        loss, data = "cross_entropy", [spec.to_datum()]
        optim: AdamParams | None = None
        if kind == "target_length":
            longer = np.concatenate([targets, targets[:1]])
            data = [
                DatumSpec(
                    spec.tokens,
                    {"target_tokens": longer, "weights": np.zeros(longer.shape, np.float32)},
                ).to_datum()
            ]
        elif kind == "out_of_vocab":
            bad = targets.copy()
            bad[-1] = OUT_OF_VOCAB
            data = [DatumSpec(spec.tokens, {"target_tokens": bad, "weights": weights}).to_datum()]
        elif kind == "missing_weights":
            data = [DatumSpec(spec.tokens, {"target_tokens": targets}).to_datum()]
        elif kind == "unknown_loss":
            loss = "no_such_loss"
        elif kind == "bad_adam":
            optim = AdamParams(beta1=1.5)
        elif kind == "unknown_model":
            client = TrainingClient(client.service, "no-such-model", client.get_info())
            expected = (errors.NotFoundError,)
        elif kind == "other_key":
            if self.intruder is None:
                return  # the backend was given one key only
            self.intruder.get_server_capabilities()  # starts the intruder's session config
            client = TrainingClient(self.intruder, client.model_id, client.get_info())
            expected = (errors.PermissionDeniedError, errors.NotFoundError)
        if not self.strict:  # other backends: any 4xx answer or a future failed as "user"
            expected = (errors.APIStatusError, errors.RequestFailedError)
        try:
            if optim is not None:
                client.optim_step(optim).result(TIMEOUT)
            else:
                client.forward_backward(data, loss).result(TIMEOUT)
        except expected as exc:
            if isinstance(exc, errors.APIStatusError):
                assert 400 <= exc.status_code < 500, f"{kind}: status {exc.status_code}"
            if isinstance(exc, errors.RequestFailedError):
                assert exc.category == "user", f"{kind}: failed as {exc.category}: {exc}"
            note(f"  refused: {type(exc).__name__}: {str(exc)[:160]}")
        else:
            raise AssertionError(f"invalid request {kind} was accepted")
        self.touched = model

    # ----- rules: ordering faults at the transport -----

    @rule(
        model=models,
        plan=st.sampled_from(["hold", "duplicate", "conflict"]),
        batch=st.lists(datum_spec("cross_entropy"), min_size=1, max_size=2),
        adam=adam_params_st,
    )
    def injected_fault(
        self, model: TrackedModel, plan: str, batch: list[DatumSpec], adam: AdamParams
    ) -> None:
        """forward_backward then optim_step, with the forward_backward's seq_id held back
        (the step arrives first), resent (a retry) or reused by a different request."""
        wrapper = model.client.service.transport
        assert isinstance(wrapper, FaultInjectingTransport)
        self._step(
            f"{model.label}: [{plan}] forward_backward(cross_entropy, {batch}); optim_step({adam})"
        )
        wrapper.arm(plan)
        fb = model.client.forward_backward([s.to_datum() for s in batch], "cross_entropy")
        step = model.client.optim_step(adam)
        out = fb.result(TIMEOUT)
        metrics = step.result(TIMEOUT).metrics
        note(f"  transport: {wrapper.events[-1]}")
        self._builtin(model, "cross_entropy", batch, {}, False, out)
        self._optim_result(model, adam, metrics)
        if plan == "duplicate":
            original, retry = wrapper.duplicates[-1]
            assert original == retry, f"a retried seq_id got request {retry}, not {original}"
        if plan == "conflict":
            outcome = wrapper.conflicts[-1]
            assert isinstance(outcome, errors.ConflictError if self.strict else errors.APIError), (
                f"a different request under a used seq_id was answered with {outcome!r}"
            )
        self.touched = model

    # ----- after every step -----

    @invariant()
    def last_model_answers_as_predicted(self) -> None:
        if self.touched is not None:
            self._forward_probe(self.touched, PROBE, f"probe of {self.touched.label}")


def with_capabilities(config: BackendConfig) -> BackendConfig:
    """Restrict a config to what the backend advertises (`get_server_capabilities`): base
    models it trains (the config's own if listed, else its first two) and sampling."""
    service = ServiceClient(
        base_url=config.base_url, api_key=config.api_key, transport=config.transport
    )
    try:
        models = service.get_server_capabilities().supported_models
    finally:
        service.close()
    trainable = [m.model_name for m in models if m.model_name and m.trainable is not False]
    chosen = tuple(m for m in config.base_models if m in trainable) or tuple(trainable[:2])
    if not chosen:
        raise ValueError(f"the backend at {config.base_url} advertises no trainable base model")
    # sampling is on when any chosen model is advertised as sampleable (None: not said)
    sampling = config.sampling and any(
        m.sampleable is not False for m in models if m.model_name in chosen
    )
    return dataclasses.replace(config, base_models=chosen, sampling=sampling)


def machine_for(config: BackendConfig) -> type[TinkerStateMachine]:
    """A TinkerStateMachine bound to one backend (hypothesis instantiates it per example)."""
    return type("TinkerStateMachineFor", (TinkerStateMachine,), {"config": config})


def run_state_machine(config: BackendConfig, run_settings: settings | None = None) -> int:
    """Run the machine as a test against `config`'s backend; returns the steps executed."""
    machine = machine_for(config)
    try:
        run_state_machine_as_test(machine, settings=run_settings)
    finally:
        machine.close_sessions()
    return machine.steps_run
