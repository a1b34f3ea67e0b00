"""Train with the unmodified official `tinker` SDK against the offline mock server.

    .venv/bin/tinker-mock serve --port 8080 &   # make demo's venv; it is not on PATH
    export TINKER_API_KEY=tml-dev TINKER_BASE_URL=http://127.0.0.1:8080
    sdk-env/bin/python examples/official_sdk_with_mock.py

Runs in an environment with the official SDK (tinker-ref's `.venv` has `tinker_ref`, not
`tinker`). Make one with pinned versions, torch's CPU build first (an unpinned torch pulls a
multi-GB CUDA build):

    python3 -m venv sdk-env
    sdk-env/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    sdk-env/bin/pip install tinker==0.38.0

The mock needs nothing but this repository. The base model `tinker-ref/tiny-bytes` is a tiny
byte-level model (token id = byte value), so text needs no tokenizer. The script fine-tunes on a
few sentences with a custom loss (mean negative log-likelihood, computed client-side by the SDK
and applied exactly by the server), then samples from the trained weights.
"""

from __future__ import annotations

import tinker
import torch
from tinker import types

BASE_MODEL = "tinker-ref/tiny-bytes"
TEXTS = ["the cat sat on the mat", "the dog sat on the log", "the cat ate the rat"]


def datum(text: str) -> types.Datum:
    tokens = list(text.encode())
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def mean_nll(
    data: list[types.Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean negative log-likelihood per target token, over the whole batch."""
    all_logprobs = torch.cat(logprobs)
    return -all_logprobs.mean(), {"tokens": float(all_logprobs.numel())}


def main() -> None:
    service = tinker.ServiceClient()  # reads TINKER_BASE_URL and TINKER_API_KEY
    training = service.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=0).result()
    data = [datum(text) for text in TEXTS]
    for step in range(8):
        # The optimizer step is submitted before the custom-loss result arrives; the server
        # still applies it after that loss's backward pass (seq_id ordering).
        loss_future = training.forward_backward_custom(data, mean_nll)
        optim_future = training.optim_step(types.AdamParams(learning_rate=1e-2))
        metrics = loss_future.result().metrics
        optim_future.result()
        print(f"step {step}: mean NLL {metrics['loss:sum']:.4f} tokens {metrics['tokens']:.0f}")
    sampler = training.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints(list(b"the "))
    params = types.SamplingParams(max_tokens=12, temperature=0.7, seed=1, stop=[])
    sample = sampler.sample(prompt, num_samples=1, sampling_params=params).result()
    print("sample:", repr(b"the " + bytes(sample.sequences[0].tokens)))
    service.close("success").result()


if __name__ == "__main__":
    main()
