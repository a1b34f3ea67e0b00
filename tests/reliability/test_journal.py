"""The journal (service/journal.py) in-process: lossless records, torn tails, and a restart that
brings back every piece of state a client depends on.

The kill -9 runs are in test_crash_recovery.py; these check the parts cheaply and exactly:
a journaled request decodes to a value with the same fingerprint (so a retry after a restart is
recognised as the same op), a torn last line is dropped while a damaged earlier one stops the
start, no class outside the request modules can be named by a journal, and after a restart a
retried POST gets its original request_id, an old future its original result, and the model its
weights, optimizer moments and seq_id position. An op the service has never heard of — defined
here, listed nowhere — is journaled and replayed like any other, because it is submitted. The
REST API's changes (delete, TTL, publish, a session's project, copies) and external weights are
operations too: a restart brings back what they did, dated as they were.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mock_server.service import InvalidArgument, ServerConfig, TinkerService
from mock_server.service.admission import ModelOp
from mock_server.service.auth import Principal
from mock_server.service.context import ServiceContext
from mock_server.service.fingerprint import fingerprint
from mock_server.service.journal import JOURNAL_FILE, JournalError, decode, encode, read_journal
from mock_server.service.requests import (
    AdamStep,
    CreateModel,
    CreateSession,
    ForwardBackward,
    LoraSpec,
    OptimStep,
    Sample,
    SampleParams,
    SaveWeights,
    SaveWeightsExternal,
    SaveWeightsForSampler,
)
from mock_server.service.state import require_training
from tests.support.profiles import examples
from tests.support.strategies import datums, loss_fn_configs
from tests.support.training import datum
from tinker_ref import types

PRINCIPAL = Principal("key-journal-test")


def _round_trip(value: object) -> object:
    # Through text, as on disk; allow_nan=False proves non-finite floats are tagged, not NaN.
    return decode(json.loads(json.dumps(encode(value), allow_nan=False)))


@settings(max_examples=examples(60), deadline=None)
@given(
    data=st.lists(datums(), max_size=3),
    config=loss_fn_configs,
    special=st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-310]),
    seq_id=st.integers(0, 2**31 - 1),
    forward_only=st.booleans(),
)
def test_a_journaled_forward_backward_request_keeps_its_fingerprint(
    data: list[types.Datum],
    config: dict[str, object] | None,
    special: float,
    seq_id: int,
    forward_only: bool,
) -> None:
    request = ForwardBackward(
        "sess-0:train:0",
        seq_id,
        tuple(data),
        "cross_entropy",
        {**(config or {}), "x": special},
        forward_only,
    )
    restored = _round_trip(request)
    assert type(restored) is ForwardBackward
    assert fingerprint(restored) == fingerprint(request)


def test_a_journaled_sample_request_keeps_tuples_tensors_and_its_fingerprint() -> None:
    request = Sample(
        "sess-0:sample:0",
        3,
        (1, 2, 3),
        params=SampleParams(max_tokens=4, stop=("a", "b")),
        target_prompt_logprobs=types.TensorData(data=[1, -1, 2, 5], dtype="int64", shape=[2, 2]),
    )
    restored = _round_trip(request)
    assert isinstance(restored, Sample)
    assert restored.prompt == (1, 2, 3) and restored.params.stop == ("a", "b")
    assert restored.target_prompt_logprobs is not None
    assert np.array_equal(restored.target_prompt_logprobs.to_numpy(), np.array([[1, -1], [2, 5]]))
    assert fingerprint(restored) == fingerprint(request)


@pytest.mark.parametrize(
    "tagged",
    [
        {"$c": "os:system", "f": {}},
        {"$c": "subprocess:Popen", "f": {}},
        {"$e": "builtins:type", "v": 1},
        {"$c": "mock_server.service.journal:Journal", "f": {}},  # trusted module, not a dataclass
    ],
)
def test_a_journal_cannot_name_a_class_outside_the_request_types(tagged: object) -> None:
    with pytest.raises(JournalError):
        decode(tagged)


def test_values_the_journal_cannot_hold_are_refused_before_the_op_is_accepted() -> None:
    with pytest.raises(JournalError):
        encode({1: "not a text key"})
    with pytest.raises(JournalError):
        encode(object())


# ----- a restart in-process -----


def _config(data_dir: Path) -> ServerConfig:
    return ServerConfig(port=0, data_dir=data_dir, journal=True, long_poll_seconds=5.0)


async def _start(data_dir: Path) -> TinkerService:
    """A journaling service on `data_dir`, recovered from what the journal there holds."""
    service = TinkerService(_config(data_dir))
    await service.recover()
    return service


async def _create_model(service: TinkerService) -> tuple[str, str, str]:
    """A new session and a LoRA model in it (seq_id 0): the session id, the model id and the
    create_model request id."""
    session = await service.create_session(PRINCIPAL, CreateSession())
    created = await service.training.create_model(
        PRINCIPAL,
        CreateModel(session.session_id, 0, "tinker-ref/tiny-bytes", LoraSpec(rank=4, seed=3)),
    )
    return session.session_id, created.model_id or "", created.request_id


async def _train(service: TinkerService) -> tuple[str, list[str]]:
    """Session, model, two forward_backward + optim_step rounds and a sampler snapshot; returns
    the model id and every request id the client was given."""
    _, model_id, created = await _create_model(service)
    request_ids = [created]
    seq_id = 1
    for step in range(2):
        tokens = [(step * 5 + i) % 200 for i in range(10)]
        fb = ForwardBackward(model_id, seq_id, (datum(tokens),), "cross_entropy", {}, False)
        request_ids.append((await service.training.forward_backward(PRINCIPAL, fb)).request_id)
        step_req = OptimStep(model_id, seq_id + 1, AdamStep(learning_rate=0.05))
        request_ids.append((await service.training.optim_step(PRINCIPAL, step_req)).request_id)
        seq_id += 2
    snapshot = SaveWeightsForSampler(model_id, seq_id, sampling_session_seq_id=0)
    request_ids.append(
        (await service.training.save_weights_for_sampler(PRINCIPAL, snapshot)).request_id
    )
    for request_id in request_ids:
        await service.retrieve(PRINCIPAL, request_id)
    return model_id, request_ids


def _state(service: TinkerService, model_id: str) -> dict[str, torch.Tensor]:
    training = service.ctx.registry.models[model_id].training
    assert training is not None
    return {**training.weights(), **training.optimizer_state().tensors}


@pytest.mark.spec("DET-5")
@pytest.mark.timeout(120)
def test_a_restart_restores_weights_optimizer_seq_ids_results_and_retries(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        first = await _start(tmp_path)
        model_id, request_ids = await _train(first)
        before = _state(first, model_id)
        results = [(await first.retrieve(PRINCIPAL, rid)).result for rid in request_ids]
        await first.close()

        second = await _start(tmp_path)
        recovery = second.recovery
        assert recovery is not None and recovery.mismatches == 0 and not recovery.torn_tail
        assert recovery.records == len(request_ids) + 1  # + create_session
        after = _state(second, model_id)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[name], after[name]) for name in before)
        assert second.ctx.sequencer.next_seq(model_id) == 6
        assert f"{model_id.split(':')[0]}:sample:0" in second.ctx.registry.samplers
        for request_id, result in zip(request_ids, results, strict=True):
            replayed = await second.retrieve(PRINCIPAL, request_id)
            assert replayed.finished and repr(replayed.result) == repr(result)
        # A POST retried after the restart (same seq_id, same body) is the original op.
        retry = OptimStep(model_id, 2, AdamStep(learning_rate=0.05))
        assert (await second.training.optim_step(PRINCIPAL, retry)).request_id == request_ids[2]
        unchanged = _state(second, model_id)  # the retry ran nothing
        assert all(torch.equal(unchanged[name], after[name]) for name in after)
        await second.close()

    asyncio.run(scenario())


def test_a_torn_last_record_is_dropped_and_a_damaged_earlier_one_stops_the_start(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        service = await _start(tmp_path)
        await service.create_session(PRINCIPAL, CreateSession())
        await service.create_session(PRINCIPAL, CreateSession())
        await service.close()
        path = tmp_path / JOURNAL_FILE
        intact = path.read_bytes()
        path.write_bytes(intact + intact.splitlines(keepends=True)[0][:40])  # killed mid-append
        service = await _start(tmp_path)
        assert service.recovery is not None
        assert (service.recovery.records, service.recovery.torn_tail) == (2, True)
        assert path.read_bytes() == intact  # truncated back to whole records
        await service.close()
        lines = intact.splitlines(keepends=True)
        path.write_bytes(lines[0].replace(b"create_session", b"create_sessioN") + lines[1])
        with pytest.raises(JournalError, match="damaged"):
            await _start(tmp_path)

    asyncio.run(scenario())


# ----- a new op, journaled because it is submitted -----


@dataclass(frozen=True)
class NudgeAdapters:
    """Add `amount` to every adapter weight of a model (an op only this test knows)."""

    model_id: str
    seq_id: int
    amount: float


class NudgeAdaptersOp(ModelOp[NudgeAdapters]):
    name = "test.nudge_adapters"
    kind = "nudge_adapters"

    def validate(self, ctx: ServiceContext, principal: Principal) -> None:
        if not math.isfinite(self.request.amount):
            raise InvalidArgument(f"must be finite, got {self.request.amount}", "amount")

    def run(self, ctx: ServiceContext) -> str:
        training = require_training(self.model)
        with torch.no_grad():
            for weight in training.adapter.values():
                weight.add_(self.request.amount)
        return "nudged"


@pytest.mark.timeout(120)
def test_a_new_state_changing_op_is_journaled_and_replayed_without_any_table_entry(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        first = await _start(tmp_path)
        _, model_id, created = await _create_model(first)
        await first.retrieve(PRINCIPAL, created)
        fresh = _state(first, model_id)
        nudge = NudgeAdapters(model_id, 1, 0.25)
        nudged = await first.submit(PRINCIPAL, NudgeAdaptersOp(nudge))
        assert (await first.retrieve(PRINCIPAL, nudged.request_id)).result == "nudged"
        with pytest.raises(InvalidArgument):  # rejected: it consumes seq_id 2, changes nothing
            await first.submit(PRINCIPAL, NudgeAdaptersOp(NudgeAdapters(model_id, 2, math.nan)))
        after = _state(first, model_id)
        assert not any(torch.equal(fresh[name], after[name]) for name in after)
        await first.close()

        journaled = [r for r in read_journal(tmp_path) if r["op"] == "test.nudge_adapters"]
        assert [r["outcome"] for r in journaled] == [
            {"ok": nudged.request_id},
            {"error": "InvalidArgument"},
        ]

        second = await _start(tmp_path)
        recovery = second.recovery
        assert recovery is not None and (recovery.records, recovery.mismatches) == (4, 0)
        replayed = _state(second, model_id)
        assert all(torch.equal(after[name], replayed[name]) for name in after)
        assert second.ctx.sequencer.next_seq(model_id) == 3  # the rejection's seq_id stays used
        assert (await second.retrieve(PRINCIPAL, nudged.request_id)).result == "nudged"
        # A retry after the restart is the original op, not a second nudge.
        retry = await second.submit(PRINCIPAL, NudgeAdaptersOp(nudge))
        assert retry.request_id == nudged.request_id
        assert all(torch.equal(after[name], v) for name, v in _state(second, model_id).items())
        await second.close()

    asyncio.run(scenario())


# ----- the REST API's changes are operations too -----


@pytest.mark.spec("DET-5", "WIRE-19")
@pytest.mark.timeout(120)
def test_rest_changes_and_external_weights_are_journaled_and_replayed_as_they_were(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        first = await _start(tmp_path)
        session_id, model_id, _ = await _create_model(first)
        saves = [
            await first.training.save_weights(PRINCIPAL, SaveWeights(model_id, 1, "a")),
            await first.training.save_weights(PRINCIPAL, SaveWeights(model_id, 2, "b")),
            await first.training.save_weights_external(
                PRINCIPAL, SaveWeightsExternal(model_id, 3, "export")
            ),
        ]
        for submitted in saves:
            assert (await first.retrieve(PRINCIPAL, submitted.request_id)).failure is None
        rest = first.rest
        await rest.set_checkpoint_ttl(PRINCIPAL, model_id, "weights/b", 7200)
        await rest.set_checkpoint_public(PRINCIPAL, model_id, "weights/b", True)
        await rest.delete_checkpoint(PRINCIPAL, model_id, "weights/a")
        await rest.assign_session_project(PRINCIPAL, session_id, "proj-journal")
        copy = await rest.copy_weights(PRINCIPAL, f"tinker://{model_id}/weights/b", None, 3600)
        # A save under a deleted name is a new checkpoint, on replay too (not "already exists").
        again = await first.training.save_weights(PRINCIPAL, SaveWeights(model_id, 4, "a"))
        assert (await first.retrieve(PRINCIPAL, again.request_id)).failure is None

        def listed(service: TinkerService) -> dict[str, tuple[float | None, bool]]:
            return {
                view.checkpoint_id: (view.meta.expires_at, view.meta.public)
                for view in service.rest.checkpoints(PRINCIPAL, model_id)
            }

        copy_run, _, copy_name = copy.removeprefix("tinker://").partition("/")
        before = listed(first)
        copy_before = first.rest.find_checkpoint(PRINCIPAL, copy_run, copy_name)[1].meta
        await first.close()

        ops = [r["op"] for r in read_journal(tmp_path)]
        assert {
            "training.save_weights_external",
            "rest.set_checkpoint_ttl",
            "rest.set_checkpoint_public",
            "rest.delete_checkpoint",
            "rest.assign_session_project",
            "rest.copy_weights",
        } <= set(ops)

        second = await _start(tmp_path)
        recovery = second.recovery
        assert recovery is not None and (recovery.records, recovery.mismatches) == (len(ops), 0)
        assert set(before) == {"weights/a", "weights/b", "external_weights/export"}
        assert listed(second) == before  # the same TTL (to the second it was set), public flag
        assert second.ctx.registry.sessions[session_id].project_id == "proj-journal"
        copy_after = second.rest.find_checkpoint(PRINCIPAL, copy_run, copy_name)[1].meta
        assert (copy_after.created_at, copy_after.expires_at) == (
            copy_before.created_at,
            copy_before.expires_at,
        )
        await second.close()

    asyncio.run(scenario())
