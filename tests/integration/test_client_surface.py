"""tinker_ref's SDK 0.38 surface end to end against the mock (spec WIRE-21): LossHandles run
client- or server-side alike, HTTP-only features say so on gRPC, sampler handles, close()."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from mock_server.embedded import EmbeddedServer, serve
from tests.support.training import datum
from tinker_ref import SamplingClient, ServiceClient, errors, types

MODEL = "tinker-ref/tiny-bytes"
ADAM = types.AdamParams(learning_rate=5e-2)
TIMEOUT = 60

pytestmark = pytest.mark.spec("WIRE-21")

DATA = [  # next-token datums whose weights alternate 0.5, 1.0
    datum(text, [1.0 if i % 2 else 0.5 for i in range(len(text) - 1)])
    for text in (b"the cat sat", b"a dog ran far")
]


def weighted_nll(logprobs: torch.Tensor, weights: torch.Tensor) -> Any:
    loss = -(logprobs * weights).sum()
    return loss, {"custom/nll:sum": loss}


def train_with(server_side: bool, use_handle: bool) -> tuple[list[float], dict[str, float]]:
    overrides = {"custom_loss_server_side": server_side}
    with (
        serve(seed=0, client_config_overrides=overrides) as mock,
        ServiceClient(base_url=mock.url, api_key="tml-handles") as service,
    ):
        training = service.create_lora_training_client(MODEL, rank=4, seed=1)
        if use_handle:
            handle = service.create_custom_loss(weighted_nll, {"logprobs": 1, "weights": 1})
            loss_fn: Any = handle.result(TIMEOUT)
            assert (loss_fn.loss_id is not None) == server_side
        else:

            def loss_fn(data: Any, logprobs: list[torch.Tensor]) -> Any:
                total = sum(
                    -(lp * d.loss_fn_inputs["weights"].to_torch()).sum()
                    for d, lp in zip(data, logprobs, strict=True)
                )
                return total, {"custom/nll:sum": float(total.detach())}

        metrics = training.forward_backward_custom(DATA, loss_fn).result(TIMEOUT).metrics
        training.optim_step(ADAM).result(TIMEOUT)
        probe = training.forward(DATA[:1], "cross_entropy").result(TIMEOUT)
        return probe.loss_fn_outputs[0]["logprobs"].tolist(), metrics


def test_a_loss_handle_trains_like_the_callable_client_side_and_server_side() -> None:
    reference, reference_metrics = train_with(server_side=False, use_handle=False)
    client_side, client_metrics = train_with(server_side=False, use_handle=True)
    server_side, server_metrics = train_with(server_side=True, use_handle=True)
    assert client_side == reference  # the traced graph runs the same float ops
    # Per-datum metrics are summed as Python floats (as the SDK's run_loss_handle sums them).
    assert client_metrics["custom/nll:sum"] == pytest.approx(
        reference_metrics["custom/nll:sum"], rel=1e-6
    )
    assert torch.allclose(torch.tensor(server_side), torch.tensor(reference), atol=1e-5)
    assert server_metrics["custom/nll:sum"] == pytest.approx(
        reference_metrics["custom/nll:sum"], rel=1e-6
    )


def test_a_handle_of_another_session_is_refused_and_a_loss_is_created_once() -> None:
    with (
        serve(seed=0) as mock,
        ServiceClient(base_url=mock.url, api_key="tml-a") as first,
        ServiceClient(base_url=mock.url, api_key="tml-a") as second,
    ):
        handle = first.create_custom_loss(weighted_nll, {"logprobs": 1, "weights": 1}).result()
        with pytest.raises(ValueError, match="already created"):
            first.create_custom_loss(weighted_nll, {"logprobs": 1, "weights": 1}).result()
        training = second.create_lora_training_client(MODEL, rank=4, seed=1)
        with pytest.raises(ValueError, match="only be used by clients of that session"):
            training.forward_backward_custom(DATA, handle)


@pytest.fixture(scope="module")
def grpc_mock() -> Iterator[EmbeddedServer]:
    with serve(seed=0, grpc=True) as mock:
        yield mock


def test_http_only_features_name_themselves_on_grpc(grpc_mock: EmbeddedServer) -> None:
    with ServiceClient(
        base_url=grpc_mock.grpc_target, api_key="tml-grpc", transport="grpc"
    ) as service:
        training = service.create_lora_training_client(MODEL, rank=4, seed=1)
        with pytest.raises(errors.ConfigurationError, match="save_weights_external"):
            training.save_weights_external("e")
        with pytest.raises(errors.ConfigurationError, match="DimuonParams"):
            training.optim_step(types.DimuonParams(learning_rate=0.1))
        with pytest.raises(errors.ConfigurationError, match="REST API needs the HTTP"):
            service.create_rest_client()
        sampler = service.create_sampling_client(base_model=MODEL)
        prompt = types.ModelInput.from_ints(list(b"abc"))
        with pytest.raises(errors.ConfigurationError, match="sampling option"):
            sampler.sample(prompt, 1, types.SamplingParams(max_tokens=1), topk_sample_logprobs=1)
        plain = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=2, seed=1))
        assert len(plain.result(TIMEOUT).sequences[0].tokens) == 2


def test_a_sampler_handle_makes_a_client_with_its_own_seq_ids() -> None:
    with (
        serve(seed=0, record_tensors=True) as mock,
        ServiceClient(base_url=mock.url, api_key="tml-handle") as service,
    ):
        sampler = service.create_sampling_client(base_model=MODEL)
        params = types.SamplingParams(max_tokens=3, seed=5)
        prompt = types.ModelInput.from_ints(list(b"the"))
        original = sampler.sample(prompt, 1, params).result(TIMEOUT)
        clone = SamplingClient.from_sampler_handle(
            sampler.get_sampler_handle(), api_key="tml-handle"
        )
        try:
            again = clone.sample(prompt, 1, params).result(TIMEOUT)
            assert again.sequences[0].tokens == original.sequences[0].tokens
            assert clone.get_base_model() == MODEL
        finally:
            clone.service.close()
        seq_ids = [
            r["body"]["seq_id"]
            for r in mock.call(lambda: [x.to_json() for x in mock.service.records.records()])
            if r["endpoint"] == "/api/v1/asample"
        ]
        assert seq_ids == [0, 1_000_000_000]  # joined: no collision with the original's 0


def test_close_reports_the_status_and_detail_to_the_session() -> None:
    with serve(seed=0) as mock:
        service = ServiceClient(base_url=mock.url, api_key="tml-close")
        service.create_lora_training_client(MODEL, rank=4, seed=1)
        session_id = service._session_id
        assert service.close("interrupted", detail="stopped by hand").result() is None
        session = mock.call(lambda: mock.service.ctx.registry.sessions[session_id])
        assert (session.finish_reason, session.finish_detail) == ("interrupted", "stopped by hand")
