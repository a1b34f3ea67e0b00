"""seq_id ordering and retries over HTTP: out-of-order chunks, deduplicated retries, gaps."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.http_api import TINY, MakeMockApi, MockApi
from tests.support.training import datum

pytestmark = pytest.mark.asyncio

BATCHES = [[1, 5, 9, 12, 3], [7, 7, 2, 30], [4, 8, 15, 16, 23, 42]]


async def run_in_order(api: MockApi, model: str) -> None:
    for seq_id, tokens in enumerate(BATCHES, start=1):
        await api.forward_output(
            (await api.forward_backward(model, seq_id, [datum(tokens)]))["request_id"]
        )
    await api.result((await api.optim_step(model, len(BATCHES) + 1))["request_id"])


@pytest.mark.spec("SEQ-2", "SEQ-3")
async def test_chunks_arriving_first_last_execute_in_seq_order(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api()
    reference, model = await api.model(seed=3), await api.model(seed=3)
    await run_in_order(api, reference)
    # Like the SDK's parallel chunks: later ids first, the first chunk last.
    submitted = {}
    for seq_id in (3, 2, 1):
        body = await api.forward_backward(model, seq_id, [datum(BATCHES[seq_id - 1])])
        submitted[seq_id] = body["request_id"]
    optim = await api.optim_step(model, 4)
    outputs = [await api.forward_output(submitted[s]) for s in (1, 2, 3)]
    await api.result(optim["request_id"])
    assert api.digest(model) == api.digest(reference)  # the same, bit for bit
    assert all("loss:sum" in out.metrics for out in outputs)
    arrivals = [
        r.seq_id
        for r in api.service.records.records()
        if r.endpoint.endswith("forward_backward") and r.body and r.body["model_id"] == model
    ]
    assert arrivals == [3, 2, 1]


@pytest.mark.spec("SEQ-5")
async def test_retried_forward_backward_is_applied_once(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    reference, model = await api.model(seed=4), await api.model(seed=4)
    await run_in_order(api, reference)
    first = await api.forward_backward(
        model, 1, [datum(BATCHES[0])], headers={"X-Idempotency-Key": "stainless-python-retry-a"}
    )
    # The outer SDK retry: same seq_id and body, a new idempotency key.
    retry = await api.forward_backward(
        model, 1, [datum(BATCHES[0])], headers={"X-Idempotency-Key": "stainless-python-retry-b"}
    )
    assert retry["request_id"] == first["request_id"]
    for seq_id in (2, 3):
        await api.forward_backward(model, seq_id, [datum(BATCHES[seq_id - 1])])
    await api.forward_output(first["request_id"])
    late_retry = await api.forward_backward(model, 1, [datum(BATCHES[0])])  # after it ran
    assert late_retry["request_id"] == first["request_id"]
    await api.result((await api.optim_step(model, 4))["request_id"])
    assert api.digest(model) == api.digest(reference)


@pytest.mark.spec("SEQ-3")
async def test_pipelined_optim_step_runs_after_the_backward(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    reference, model = await api.model(seed=6), await api.model(seed=6)
    await api.forward_output(
        (await api.forward_backward(reference, 1, [datum(BATCHES[0])]))["request_id"]
    )
    await api.result((await api.optim_step(reference, 2))["request_id"])
    # optim_step (seq 2) is posted before seq 1: it must wait and then apply seq 1's gradient.
    optim = await api.optim_step(model, 2)
    await asyncio.sleep(0.05)
    fb = await api.forward_backward(model, 1, [datum(BATCHES[0])])
    assert (await api.result(optim["request_id"]))["metrics"]["optimizer_step:sum"] == 1.0
    await api.forward_output(fb["request_id"])
    assert api.digest(model) == api.digest(reference)


@pytest.mark.spec("SEQ-9")
async def test_gap_that_never_fills_fails_the_waiting_ops(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api(seq_gap_timeout_seconds=0.2)
    model = await api.model()
    before = api.digest(model)
    waiting = await api.forward_backward(model, 2, [datum(BATCHES[0])])
    failure = await api.result(waiting["request_id"])
    assert failure["category"] == "user"
    assert "seq_id 1" in failure["error"] and "never arrived" in failure["error"]
    body = await api.forward_backward(model, 1, [datum(BATCHES[0])], status=410)
    assert body["field"] == "seq_id" and "abandoned" in body["detail"]
    assert api.digest(model) == before
    after = await api.forward_backward(model, 3, [datum(BATCHES[0])], forward_only=True)
    await api.forward_output(after["request_id"])


@pytest.mark.spec("SEQ-5", "SEQ-7", "SMP-2")
async def test_retried_create_model_and_sample_are_deduplicated(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api()
    session = await api.session()
    create = {"session_id": session, "model_seq_id": 0, "base_model": TINY}
    first = await api.post("create_model", create)
    assert (await api.post("create_model", create))["request_id"] == first["request_id"]
    conflict = await api.post("create_model", {**create, "lora_config": {"rank": 2}}, status=409)
    assert conflict["field"] == "model_seq_id"
    await api.result(first["request_id"])
    sampler_body = {"session_id": session, "sampling_session_seq_id": 0, "base_model": TINY}
    sampler = (await api.post("create_sampling_session", sampler_body))["sampling_session_id"]
    again = (await api.post("create_sampling_session", sampler_body))["sampling_session_id"]
    assert again == sampler
    sample = {
        "sampling_session_id": sampler,
        "seq_id": 0,
        "num_samples": 2,
        "prompt": {"chunks": [{"tokens": [1, 2], "type": "encoded_text"}]},
        "sampling_params": {"max_tokens": 3},
    }
    one = await api.post("asample", sample)
    two = await api.post("asample", sample)
    assert one == two and len(one["sample_sequence_ids"]) == 2
    await api.post("asample", {**sample, "num_samples": 1}, status=409)
