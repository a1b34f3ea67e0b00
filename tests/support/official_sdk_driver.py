"""Drive the unmodified official `tinker` SDK (0.38) against mock servers; runs INSIDE its venv.

Usage: `python official_sdk_driver.py PLAIN_URL CHUNKED_URL` where CHUNKED_URL is a server
started with `--client-config '{"fwdbwd_max_chunk_len": 2, "proto_compress_fwdbwd": true,
"custom_loss_server_side": true}'`. Prints one JSON object (the last stdout line) with what the
test asserts on: loss curves, logprobs (as float32-exact Python floats), sampled tokens, metrics.
Everything runs in one process because importing the SDK costs seconds.

This file imports only the SDK, torch, the standard library and its sibling
`sdk_driver_common.py` (not tinker_ref): it is the official client's view of the server.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

import tinker
import torch
from sdk_driver_common import logprobs_of, text_datum, token_datum, train_ce_then_custom
from tinker import types

BASE_MODEL = "tinker-ref/tiny-bytes"
API_KEY = "tml-dev"
TRAIN_TEXTS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "hello world",
    "xyz",
    "tinker trains tiny models",
    "custom losses are exact",
]
EVAL_TEXTS = ["fresh data never seen", "another held-out line"]
ADAM = types.AdamParams(learning_rate=1e-2)
STEPS = 4  # cross-entropy steps, then as many custom-loss steps


def mean_nll(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    """Mean negative log-likelihood over every target token of the batch."""
    total = torch.cat(logprobs)
    loss = -total.sum() / total.numel()
    return loss, {"tokens": float(total.numel())}


def per_datum_nll(logprobs: torch.Tensor, weights: torch.Tensor) -> Any:
    """The server-side (LossHandle) loss: weighted NLL of one datum."""
    loss = -(logprobs * weights).sum()
    return loss, {"custom/nll:sum": loss, "custom/tokens:mean": weights.sum()}


def callable_per_datum_nll(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    """`per_datum_nll` summed over datums, as a client-side callable."""
    losses = [
        -(lp * d.loss_fn_inputs["weights"].to_torch()).sum()
        for d, lp in zip(data, logprobs, strict=True)
    ]
    return torch.stack(losses).sum(), {}


def train(sc: tinker.ServiceClient) -> dict[str, Any]:
    """The acceptance workflow; run identically on the plain and the chunked server."""
    train_data = [text_datum(t) for t in TRAIN_TEXTS]
    eval_data = [text_datum(t) for t in EVAL_TEXTS]
    tc = sc.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=1234).result()
    info = tc.get_info()
    trained = train_ce_then_custom(
        tc, train_data, eval_data, ADAM, STEPS, mean_nll, custom_loss_metric="loss:sum"
    )

    # Checkpoints. The original continues one step from the saved state; a client restored
    # *with* optimizer state must take the bit-identical step, one restored without must not.
    state_path = tc.save_state("state-001").result().path
    tc.forward_backward(train_data, "cross_entropy").result()
    tc.optim_step(ADAM).result()
    continued = tc.forward(eval_data, "cross_entropy").result()
    restored_opt = sc.create_training_client_from_state_with_optimizer(state_path).result()
    restored = sc.create_training_client_from_state(state_path).result()
    restored_forward = restored.forward(eval_data, "cross_entropy").result()
    for client in (restored_opt, restored):
        client.forward_backward(train_data, "cross_entropy").result()
        client.optim_step(ADAM).result()
    step_with_opt = restored_opt.forward(eval_data, "cross_entropy").result()
    step_without_opt = restored.forward(eval_data, "cross_entropy").result()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_state is deprecated (and logs an ERROR line)
        tc.load_state(state_path).result()
    after_load_state = tc.forward(eval_data, "cross_entropy").result()

    # Sampling from a snapshot of the trained weights.
    sampler = tc.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints(list(b"the "))
    params = types.SamplingParams(max_tokens=8, seed=7, temperature=1.0, stop=[])
    first = sampler.sample(prompt, 2, params).result()
    again = sampler.sample(prompt, 2, params).result()
    other = sampler.sample(prompt, 2, types.SamplingParams(max_tokens=8, seed=8, stop=[])).result()
    sequence = list(b"the ") + list(first.sequences[0].tokens)
    prompt_logprobs = sampler.compute_logprobs(types.ModelInput.from_ints(sequence)).result()
    training_view = tc.forward([token_datum(sequence)], "cross_entropy").result()
    return {
        "model_id": info.model_id,
        "model_name": info.model_data.model_name,
        **trained,
        "state_path": state_path,
        "continued": logprobs_of(continued),
        "after_load_state": logprobs_of(after_load_state),
        "restored_forward": logprobs_of(restored_forward),
        "restored_model_id": restored.get_info().model_id,
        "step_without_opt": logprobs_of(step_without_opt),
        "step_with_opt": logprobs_of(step_with_opt),
        "samples": [list(s.tokens) for s in first.sequences],
        "samples_again": [list(s.tokens) for s in again.sequences],
        "samples_other_seed": [list(s.tokens) for s in other.sequences],
        "sample_sequence_ids": [s.sequence_id for s in first.sequences],
        "compute_logprobs": prompt_logprobs,
        "training_view": logprobs_of(training_view)[0],
    }


def identity(sc: tinker.ServiceClient) -> dict[str, Any]:
    """Mean-NLL custom loss vs cross_entropy with weights 1/N: one step each from equal inits."""
    texts = TRAIN_TEXTS[:4]
    n = sum(len(t.encode()) - 1 for t in texts)
    custom_client = sc.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=77).result()
    ce_client = sc.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=77).result()
    custom_out = custom_client.forward_backward_custom([text_datum(t) for t in texts], mean_nll)
    custom_client.optim_step(ADAM).result()
    ce_out = ce_client.forward_backward([text_datum(t, 1.0 / n) for t in texts], "cross_entropy")
    ce_client.optim_step(ADAM).result()
    eval_data = [text_datum(t) for t in EVAL_TEXTS]
    return {
        "custom_loss": custom_out.result().metrics["loss:sum"],
        "ce_loss": ce_out.result().metrics["loss:sum"],
        "custom_eval": logprobs_of(custom_client.forward(eval_data, "cross_entropy").result()),
        "ce_eval": logprobs_of(ce_client.forward(eval_data, "cross_entropy").result()),
    }


def server_side_loss(sc: tinker.ServiceClient) -> dict[str, Any]:
    """An uploaded LossHandle vs the same loss as a client-side callable: one step each."""
    train_data = [text_datum(t) for t in TRAIN_TEXTS]
    handle = sc.create_custom_loss(per_datum_nll, {"logprobs": 1, "weights": 1}).result()
    server_client = sc.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=5).result()
    client_client = sc.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=5).result()
    server_future = server_client.forward_backward_custom(train_data, handle)
    server_client.optim_step(ADAM).result()
    client_future = client_client.forward_backward_custom(train_data, callable_per_datum_nll)
    client_client.optim_step(ADAM).result()
    eval_data = [text_datum(t) for t in EVAL_TEXTS]
    return {
        "loss_id": handle.loss_id,
        "server_metrics": server_future.result().metrics,
        "client_metrics": client_future.result().metrics,
        "server_eval": logprobs_of(server_client.forward(eval_data, "cross_entropy").result()),
        "client_eval": logprobs_of(client_client.forward(eval_data, "cross_entropy").result()),
    }


def main() -> None:
    plain_url, chunked_url = sys.argv[1], sys.argv[2]
    started = time.monotonic()
    plain = tinker.ServiceClient(base_url=plain_url, api_key=API_KEY)
    chunked = tinker.ServiceClient(base_url=chunked_url, api_key=API_KEY)
    result = {
        "sdk_version": tinker.__version__,
        "plain": train(plain),
        "identity": identity(plain),
        "chunked": train(chunked),
        "server_side": server_side_loss(chunked),
    }
    plain.close("success").result()
    chunked.close("success").result()
    result["seconds"] = time.monotonic() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
