"""Bounded queues: past `max_pending_ops` new ops get 429 + Retry-After, consume nothing, and
a retry is accepted once there is room; a model's next seq_id is always admitted (refusing it
could stall that model for good); a pipelining client rides the 429s to bit-identical weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import tinker_ref
from mock_server.embedded import serve
from mock_server.engine import AdamConfig, TrainingModel
from tests.reliability.runs import (
    ADAM,
    BASE_MODEL,
    LORA_SEED,
    batch,
    digest_tensors,
    pairwise_loss,
    reference_digest,
)
from tests.support.http_api import TINY, MakeMockApi
from tests.support.training import datum
from tinker_ref.codec import encode_forward_backward_request

TOKENS = [1, 5, 9, 12, 3, 7]


@pytest.mark.spec("SEQ-11")
@pytest.mark.asyncio
async def test_past_the_pending_limit_ops_get_429_with_retry_after_and_consume_nothing(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api(max_pending_ops=3)
    model = await api.model()
    buffered = [  # seq_ids 2-4 wait for seq_id 1: three pending futures
        (await api.forward_backward(model, seq_id, [datum(TOKENS)]))["request_id"]
        for seq_id in (2, 3, 4)
    ]
    response = await api.client.post(
        "/api/v1/forward_backward",
        data=encode_forward_backward_request(model, 5, [datum(TOKENS)], "cross_entropy"),
        headers=api.headers({"Content-Type": "application/x-protobuf"}),
    )
    assert response.status == 429 and response.headers["Retry-After"] == "1"
    assert "limit 3" in (await response.json())["detail"]
    session = model.split(":")[0]
    create = {"session_id": session, "model_seq_id": 1, "base_model": TINY}
    await api.post("create_model", create, status=429)
    # Seq_id 1 unblocks the model, so it is admitted at the limit; then everything runs.
    first = await api.forward_backward(model, 1, [datum(TOKENS)])
    for request_id in [first["request_id"], *buffered]:
        await api.forward_output(request_id)
    # The refused seq_id 5 was not consumed: the same request is accepted now and runs.
    later = await api.forward_backward(model, 5, [datum(TOKENS)])
    await api.forward_output(later["request_id"])
    assert api.service.ctx.sequencer.next_seq(model) == 6
    await api.post("create_model", create)  # room again


@pytest.mark.spec("SEQ-11", "FUT-10")
@pytest.mark.timeout(180)
def test_a_pipelining_client_rides_429s_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [batch(0), batch(1), batch(2)]
    expected = reference_digest(steps, tmp_path)
    # A slow optimizer step keeps the pipelined optim_step pending when the next call's
    # forward arrives, so the limit of one pending op bites whatever the machine's speed.
    # (0.3 s was once not enough on a loaded 2-core machine: the next forward came later.)
    optim_step = TrainingModel.optim_step

    def slow_optim_step(model: TrainingModel, adam: AdamConfig) -> dict[str, float]:
        time.sleep(1.0)
        return optim_step(model, adam)

    monkeypatch.setattr(TrainingModel, "optim_step", slow_optim_step)
    with serve(data_dir=tmp_path / "tight", max_pending_ops=1) as server:
        client = tinker_ref.ServiceClient(base_url=server.url, api_key="tml-pipeline")
        try:
            training = client.create_lora_training_client(
                base_model=BASE_MODEL, rank=4, seed=LORA_SEED
            ).result(timeout=60)
            pending = []  # every op submitted before any result is read
            for data in steps:
                pending.append(training.forward_backward_custom(data, pairwise_loss))
                pending.append(training.optim_step(ADAM))
            for future in pending:
                future.result(timeout=120)
            model = server.service.ctx.registry.models[training.model_id]
            weights = server.call(lambda: model.training.weights())  # type: ignore[union-attr]
        finally:
            client.close()
        refused = [r for r in server.service.records.records() if r.status == 429]
    assert refused  # the limit did bite
    assert digest_tensors(weights) == expected
