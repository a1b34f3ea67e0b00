"""The async API (SDK 0.38's `*_async` twins) from inside a running event loop: no blocking,
same seq_id order and the same results as the sync calls."""

from __future__ import annotations

import asyncio
from typing import Any

from mock_server.embedded import serve
from tests.support.training import token_mean_nll
from tinker_ref import ServiceClient, TrainingClient, types

MODEL = "tinker-ref/tiny-bytes"
DATA = [
    types.Datum(
        model_input=types.ModelInput.from_ints(list(b"async tinker")),
        loss_fn_inputs={"target_tokens": list(b"sync tinker!"), "weights": [1.0] * 12},
    )
]


async def async_run(service: ServiceClient) -> dict[str, Any]:
    training = await service.create_lora_training_client_async(MODEL, rank=4, seed=3)
    # Submitted back to back from one coroutine: the optim_step is queued before the loss is in.
    fb_future = await training.forward_backward_custom_async(DATA, token_mean_nll)
    step_future = await training.optim_step_async(types.AdamParams(learning_rate=1e-2))
    fb, _ = await fb_future, await step_future
    saved = await (await training.save_state_async("async")).result_async()
    resumed = await service.create_training_client_from_state_with_optimizer_async(saved.path)
    forward = await (await resumed.forward_async(DATA, "cross_entropy"))
    sampler = await training.save_weights_and_get_sampling_client_async()
    params = types.SamplingParams(max_tokens=4, seed=5)
    sample = await sampler.sample_async(types.ModelInput.from_ints([1, 2]), 1, params)
    logprobs = await sampler.compute_logprobs_async(types.ModelInput.from_ints(list(b"abc")))
    return {
        "loss": fb.metrics["loss:sum"],
        "forward": forward.loss_fn_outputs[0]["logprobs"].tolist(),
        "tokens": sample.sequences[0].tokens,
        "logprobs": logprobs,
        "info": (await resumed.get_info_async()).model_data.model_name,
    }


def sync_run(service: ServiceClient) -> dict[str, Any]:
    training: TrainingClient = service.create_lora_training_client(MODEL, rank=4, seed=3)
    fb = training.forward_backward_custom(DATA, token_mean_nll)
    training.optim_step(types.AdamParams(learning_rate=1e-2))
    saved = training.save_state("sync").result()
    resumed = service.create_training_client_from_state_with_optimizer(saved.path)
    forward = resumed.forward(DATA, "cross_entropy").result()
    sampler = training.save_weights_and_get_sampling_client()
    params = types.SamplingParams(max_tokens=4, seed=5)
    sample = sampler.sample(types.ModelInput.from_ints([1, 2]), 1, params).result()
    return {
        "loss": fb.result().metrics["loss:sum"],
        "forward": forward.loss_fn_outputs[0]["logprobs"].tolist(),
        "tokens": sample.sequences[0].tokens,
        "logprobs": sampler.compute_logprobs(types.ModelInput.from_ints(list(b"abc"))).result(),
        "info": resumed.get_info().model_data.model_name,
    }


def test_async_twins_give_the_sync_results_from_inside_an_event_loop() -> None:
    with serve(seed=0) as mock:
        with ServiceClient(base_url=mock.url, api_key="tml-async") as service:
            from_async = asyncio.run(async_run(service))
        with ServiceClient(base_url=mock.url, api_key="tml-sync") as service:
            from_sync = sync_run(service)
    assert from_async == from_sync
    assert from_async["info"] == MODEL and from_async["logprobs"][0] is None
