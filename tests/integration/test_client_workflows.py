"""tinker_ref end to end against the mock: the training surface, checkpoints, sampling, chunked
custom losses and the error classes user code sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from mock_server.embedded import EmbeddedServer, serve
from mock_server.testing import MockServer
from tests.support.training import datum, token_mean_nll
from tinker_ref import ServiceClient, TrainingClient, errors, types

MODEL = "tinker-ref/tiny-bytes"
ADAM = types.AdamParams(learning_rate=2e-2)
TEXTS = [b"the cat sat", b"on the mat", b"a dog ran", b"to the log", b"fast and far"]

# One mock for the module (the shipped `tinker_mock_module` fixture), recording tensor values.
pytestmark = pytest.mark.tinker_mock(seed=0, record_tensors=True)


DATA = [datum(t) for t in TEXTS]
PROBE = [datum(b"the rat sat on a log")]


def probe(training: TrainingClient) -> list[list[float]]:
    out = training.forward(PROBE, "cross_entropy").result(timeout=60)
    return [o["logprobs"].tolist() for o in out.loss_fn_outputs]


@pytest.fixture(scope="module")
def service(tinker_mock_module: MockServer) -> Iterator[ServiceClient]:
    with ServiceClient(base_url=tinker_mock_module.url, api_key="tml-workflows") as client:
        yield client


@pytest.mark.spec("WIRE-4")
def test_capabilities_and_info(service: ServiceClient) -> None:
    names = [m.model_name for m in service.get_server_capabilities().supported_models]
    assert MODEL in names and "Qwen/Qwen3-8B" in names
    training = service.create_lora_training_client(MODEL, rank=4, seed=0)
    info = training.get_info()
    assert info.model_data.model_name == MODEL
    assert ":train:" in training.model_id


@pytest.mark.spec("LOSS-2", "SMP-3", "SMP-7")
def test_forward_shapes_training_and_sampling(service: ServiceClient) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
    forward = training.forward(DATA, "cross_entropy").result(timeout=60)
    assert [o["logprobs"].shape for o in forward.loss_fn_outputs] == [
        d.loss_fn_inputs["target_tokens"].shape for d in DATA
    ]
    losses = []
    for _ in range(4):
        fb = training.forward_backward_custom(DATA, token_mean_nll)
        step = training.optim_step(ADAM)
        losses.append(fb.result(timeout=60).metrics["loss:sum"])
        assert step.result(timeout=60).metrics is not None
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] - 0.5

    sampler = training.save_weights_and_get_sampling_client()
    prompt = types.ModelInput.from_ints(list(b"the "))
    params = types.SamplingParams(max_tokens=8, temperature=1.0, seed=3)
    first = sampler.sample(prompt, 2, params).result(timeout=60)
    again = sampler.sample(prompt, 2, params).result(timeout=60)
    assert [s.tokens for s in first.sequences] == [s.tokens for s in again.sequences]
    assert all(len(s.tokens) == 8 for s in first.sequences)
    # compute_logprobs of the snapshot == the training forward at snapshot time
    text = list(b"the rat sat on a log")
    logprobs = sampler.compute_logprobs(types.ModelInput.from_ints(text)).result(timeout=60)
    assert logprobs[0] is None
    assert logprobs[1:] == pytest.approx(probe(training)[0], abs=1e-6)


@pytest.mark.spec("CKPT-1", "CKPT-2", "CKPT-3", "CKPT-8")
def test_checkpoint_with_optimizer_continues_bit_exactly(service: ServiceClient) -> None:
    uninterrupted = service.create_lora_training_client(MODEL, rank=4, seed=5)
    uninterrupted.forward_backward(DATA, "cross_entropy")
    uninterrupted.optim_step(ADAM)
    saved = uninterrupted.save_state("after-one-step").result(timeout=60)
    assert saved.path.startswith("tinker://") and saved.path.endswith("/weights/after-one-step")
    uninterrupted.forward_backward(DATA, "cross_entropy")
    uninterrupted.optim_step(ADAM).result(timeout=60)

    warm = service.create_training_client_from_state_with_optimizer(saved.path).result()
    warm.forward_backward(DATA, "cross_entropy")
    warm.optim_step(ADAM).result(timeout=60)
    assert probe(warm) == probe(uninterrupted)

    # Without the optimizer state Adam restarts cold: same weights after load, a different step.
    cold = service.create_training_client_from_state(saved.path)
    loaded = service.create_lora_training_client(MODEL, rank=4, seed=5)
    loaded.load_state(saved.path).result(timeout=60)
    assert probe(cold) == probe(loaded)
    cold.forward_backward(DATA, "cross_entropy")
    cold.optim_step(ADAM).result(timeout=60)
    assert probe(cold) != probe(uninterrupted)
    loaded.load_state_with_optimizer(saved.path)
    loaded.forward_backward(DATA, "cross_entropy")
    loaded.optim_step(ADAM).result(timeout=60)
    assert probe(loaded) == probe(uninterrupted)


@pytest.mark.spec("CKPT-5", "SMP-1")
def test_named_sampler_weights_open_in_a_sampling_client(service: ServiceClient) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=2)
    saved = training.save_weights_for_sampler("snap").result(timeout=60)
    assert saved.path is not None and saved.path.endswith("/sampler_weights/snap")
    sampler = service.create_sampling_client(model_path=saved.path).result()
    text = types.ModelInput.from_ints(list(b"the rat sat on a log"))
    assert sampler.compute_logprobs(text).result(timeout=60)[1:] == pytest.approx(
        probe(training)[0], abs=1e-6
    )
    base = service.create_sampling_client(base_model=MODEL)
    assert base.sample(text, 1, types.SamplingParams(max_tokens=3, seed=1)).result(timeout=60)


def request_records(server: EmbeddedServer) -> list[Any]:
    """The server's request record, read on its loop (white-box: the record objects)."""
    return list(server.call(lambda: server.service.records.records()))


def forward_backward_records(mock: EmbeddedServer, model_id: str) -> list[dict[str, Any]]:
    return [
        r.body
        for r in request_records(mock)
        if r.endpoint == "/api/v1/forward_backward" and r.body["model_id"] == model_id
    ]


@pytest.mark.spec("CL-9", "CL-10", "CL-11", "CL-12", "SEQ-1")
def test_chunked_custom_loss_with_pipelined_optim_step_equals_the_unchunked_run(
    tinker_mock_module: MockServer, service: ServiceClient
) -> None:
    unchunked = service.create_lora_training_client(MODEL, rank=4, seed=9)
    with (
        serve(
            seed=0, record_tensors=True, client_config_overrides={"fwdbwd_max_chunk_len": 2}
        ) as chunked_mock,
        ServiceClient(base_url=chunked_mock.url, api_key="tml-chunked") as chunked_service,
    ):
        chunked = chunked_service.create_lora_training_client(MODEL, rank=4, seed=9)
        runs = []
        for client in (unchunked, chunked):
            fb = client.forward_backward_custom(DATA, token_mean_nll)
            step = client.optim_step(ADAM)  # submitted before the custom loss resolves
            runs.append((fb.result(timeout=60).metrics, step.result(timeout=60), probe(client)))
        records = forward_backward_records(chunked_mock, chunked.model_id)
    (metrics, _, logprobs), (chunked_metrics, _, chunked_logprobs) = runs
    # 5 datums in chunks of 2: 3 forward chunks (seq 1-3), 3 backward chunks (seq 4-6),
    # optim_step seq 7, the probe forward seq 8; within each phase the first chunk goes last.
    seqs = [(r["seq_id"], r["forward_only"], r["num_datums"]) for r in records]
    assert sorted(seqs[:3]) == [(1, True, 2), (2, True, 2), (3, True, 1)]
    assert seqs[2][0] == 1
    assert sorted(seqs[3:6]) == [(4, False, 2), (5, False, 2), (6, False, 1)]
    assert seqs[5][0] == 4
    assert chunked_metrics.keys() == metrics.keys()
    for key, value in metrics.items():
        assert chunked_metrics[key] == pytest.approx(value, rel=1e-6), key
    assert chunked_metrics["tokens"] == sum(len(t) - 1 for t in TEXTS)
    for a, b in zip(chunked_logprobs, logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.spec("CL-5", "CL-16", "CL-17", "WIRE-14")
def test_errors_user_code_sees(service: ServiceClient) -> None:
    with pytest.raises(errors.APIStatusError) as unknown_model:
        service.create_lora_training_client("no/such-model", rank=4)
    assert unknown_model.value.status_code in (400, 404, 422)
    assert "no/such-model" in str(unknown_model.value)

    training = service.create_lora_training_client(MODEL, rank=4, seed=0)
    out_of_vocab = [
        types.Datum(
            model_input=types.ModelInput.from_ints([1, 2]),
            loss_fn_inputs={"target_tokens": [2, 100_000], "weights": [1.0, 1.0]},
        )
    ]
    with pytest.raises(errors.APIError) as invalid:
        training.forward_backward(out_of_vocab, "cross_entropy").result(timeout=60)
    assert "target_tokens" in str(invalid.value)
    before = probe(training)
    training.optim_step(ADAM).result(timeout=60)
    assert probe(training) == before  # the rejected op accumulated nothing

    def not_scalar(
        data: list[types.Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.cat(logprobs), {}

    with pytest.raises(errors.CustomLossError, match="scalar"):
        training.forward_backward_custom(DATA, not_scalar).result(timeout=60)
    # Its backward seq_ids were reserved but never sent, so the model's sequence has a hole:
    # the client refuses further ops instead of letting the server wait on the gap.
    with pytest.raises(errors.ClientPoisonedError):
        training.optim_step(ADAM).result(timeout=60)
    fresh = service.create_lora_training_client(MODEL, rank=4, seed=0)
    assert probe(fresh) == before


@pytest.mark.spec("CL-16", "CL-3")
def test_ops_behind_a_failed_custom_loss_fail_as_poisoned_and_are_never_sent(
    tinker_mock_module: MockServer, service: ServiceClient
) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=0)
    with pytest.raises(errors.CustomLossError, match="target_tokens"):  # before any id is taken
        training.forward_backward_custom([types.Datum(PROBE[0].model_input, {})], token_mean_nll)

    def raises(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
        raise RuntimeError("the user's loss broke")

    custom = training.forward_backward_custom(DATA, raises)
    waiting = training.optim_step(ADAM)  # submitted before the failure is known
    with pytest.raises(RuntimeError, match="the user's loss broke"):
        custom.result(timeout=60)
    for future in (waiting, training.forward(PROBE, "cross_entropy")):
        with pytest.raises(errors.ClientPoisonedError, match="the user's loss broke"):
            future.result(timeout=60)
    sent = [
        (r.endpoint, r.seq_id)
        for r in request_records(tinker_mock_module.embedded)
        if r.seq_id is not None and r.body and r.body.get("model_id") == training.model_id
    ]
    assert sent == [("/api/v1/forward_backward", 1)]  # the forward phase only, at seq 1


@pytest.mark.spec("FUT-9")
def test_a_result_announced_with_complete_metadata_is_fetched_on_the_next_poll() -> None:
    with (
        serve(seed=0, metadata_threshold_bytes=64) as small_results,
        ServiceClient(base_url=small_results.url, api_key="tml-metadata") as client,
    ):
        training = client.create_lora_training_client(MODEL, rank=4, seed=0)
        out = training.forward(DATA, "cross_entropy").result(timeout=60)
        polls = [
            r.body["allow_metadata_only"]
            for r in request_records(small_results)
            if r.endpoint == "/api/v1/retrieve_future" and r.request_id is not None
        ]
    assert [o["logprobs"].shape for o in out.loss_fn_outputs] == [
        d.loss_fn_inputs["target_tokens"].shape for d in DATA
    ]
    assert polls[-2:] == [True, False]  # announced once, then fetched without the option


@pytest.mark.spec("FUT-10", "SEQ-7")
def test_a_conflict_marked_do_not_retry_is_raised_after_one_attempt(
    tinker_mock_module: MockServer, service: ServiceClient
) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=0)
    training.forward(DATA[:1], "cross_entropy").result(timeout=60)  # seq 1
    reuse = service.transport.forward_backward(
        training.model_id, 1, DATA[1:2], "cross_entropy", None, False
    )
    with pytest.raises(errors.ConflictError):
        service.loop.run(reuse, timeout=60)
    attempts = [
        r
        for r in request_records(tinker_mock_module.embedded)
        if r.body and r.body.get("model_id") == training.model_id and r.seq_id == 1
    ]
    assert [r.status for r in attempts] == [200, 409]
