"""Drive an older official `tinker` SDK (0.15.0, 0.24.1, 0.25.0) against the mock; runs INSIDE
that SDK's venv.

Usage: `python legacy_sdk_driver.py URL`. The JSON era (0.15: JSON bodies and results, the
`/forward` endpoint, no client/config; 0.24.1: JSON bodies, either result format) and the first
protobuf release (0.25.0) each run the acceptance workflow: LoRA client, forward,
forward_backward, forward_backward_custom, optim_step until the loss falls, save_state /
load_state / create_training_client_from_state, a seeded sample twice, compute_logprobs. Prints
one JSON object (the last stdout line) for the test to assert on. Standard library, torch,
the SDK and its sibling `sdk_driver_common.py` only; calls are resolved the same way whether a
version returns clients or futures.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import tinker
import torch
from sdk_driver_common import (
    logprobs_of,
    resolve,
    text_datum,
    token_datum,
    train_ce_then_custom,
)
from tinker import types

BASE_MODEL = "tinker-ref/tiny-bytes"
TRAIN_TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world", "xyz"]
EVAL_TEXTS = ["fresh data never seen"]
ADAM = types.AdamParams(learning_rate=1e-2)


def mean_nll(data: list[types.Datum], logprobs: list[torch.Tensor]) -> Any:
    total = torch.cat([lp.flatten() for lp in logprobs])
    loss = -total.sum() / total.numel()
    return loss, {"custom/mean_nll:sum": float(loss)}


def main() -> None:
    warnings.simplefilter("ignore")
    service = tinker.ServiceClient(base_url=sys.argv[1], api_key="tml-dev")
    train_data = [text_datum(t) for t in TRAIN_TEXTS]
    eval_data = [text_datum(t) for t in EVAL_TEXTS]
    tc = resolve(service.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=1234))
    trained = train_ce_then_custom(
        tc, train_data, eval_data, ADAM, 3, mean_nll, custom_loss_metric="custom/mean_nll:sum"
    )

    state_path = tc.save_state("state-001").result().path
    restored = resolve(service.create_training_client_from_state(state_path))
    restored_forward = restored.forward(eval_data, "cross_entropy").result()
    tc.forward_backward(train_data, "cross_entropy").result()
    tc.optim_step(ADAM).result()
    tc.load_state(state_path).result()
    after_load_state = tc.forward(eval_data, "cross_entropy").result()

    sampler = resolve(tc.save_weights_and_get_sampling_client())
    prompt = types.ModelInput.from_ints(list(b"the "))
    params = types.SamplingParams(max_tokens=6, seed=11, temperature=1.0, stop=[])
    first = sampler.sample(prompt=prompt, num_samples=2, sampling_params=params).result()
    again = sampler.sample(prompt=prompt, num_samples=2, sampling_params=params).result()
    sequence = list(b"the ") + list(first.sequences[0].tokens)
    prompt_logprobs = sampler.compute_logprobs(types.ModelInput.from_ints(sequence)).result()
    training_view = tc.forward([token_datum(sequence)], "cross_entropy").result()
    print(
        json.dumps(
            {
                "sdk_version": tinker.__version__,
                **trained,
                "state_path": state_path,
                "restored_forward": logprobs_of(restored_forward),
                "after_load_state": logprobs_of(after_load_state),
                "samples": [list(s.tokens) for s in first.sequences],
                "samples_again": [list(s.tokens) for s in again.sequences],
                "compute_logprobs": prompt_logprobs,
                "training_view": logprobs_of(training_view)[0],
            }
        )
    )


if __name__ == "__main__":
    main()
