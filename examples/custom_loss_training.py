"""Custom-loss training with `tinker_ref` against an embedded mock server (`make demo`).

    python examples/custom_loss_training.py [--transport http|grpc] [--steps 8]

Starts the mock Tinker server inside this process on a free loopback port, then trains the
tiny byte-level test model (`tinker-ref/tiny-bytes`: token id = byte value, so text needs no
tokenizer) on three sentences with a **custom loss** — mean negative log-likelihood, computed
here on the client from the logprobs the server returns and applied exactly by the server
through `weights = -dloss/dlogprobs` — then samples from the trained weights. Against the real
service only the `ServiceClient(...)` arguments and the base model change.
"""

from __future__ import annotations

import argparse

import torch

from mock_server.embedded import serve
from tinker_ref import ServiceClient, types

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


def train(base_url: str, transport: str, steps: int) -> list[float]:
    losses = []
    with ServiceClient(base_url=base_url, api_key="tml-demo", transport=transport) as service:
        training = service.create_lora_training_client(BASE_MODEL, rank=8, seed=0)
        data = [datum(text) for text in TEXTS]
        for step in range(steps):
            # optim_step is submitted before the custom-loss result arrives; the server still
            # applies it after that loss's backward pass (seq_id ordering).
            loss_future = training.forward_backward_custom(data, mean_nll)
            optim_future = training.optim_step(types.AdamParams(learning_rate=1e-2))
            metrics = loss_future.result().metrics
            optim_future.result()
            losses.append(metrics["loss:sum"])
            print(f"step {step}: mean NLL {metrics['loss:sum']:.4f} tokens {metrics['tokens']:.0f}")
        sampler = training.save_weights_and_get_sampling_client()
        prompt = types.ModelInput.from_ints(list(b"the "))
        params = types.SamplingParams(max_tokens=12, temperature=0.7, seed=1)
        sample = sampler.sample(prompt, num_samples=1, sampling_params=params).result()
        print("sample:", repr(b"the " + bytes(sample.sequences[0].tokens)))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["http", "grpc"], default="http")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    with serve(seed=0, grpc=args.transport == "grpc") as mock:
        base_url = mock.grpc_target if args.transport == "grpc" else mock.url
        print(f"mock server at {base_url}")
        losses = train(base_url, args.transport, args.steps)
    print(f"mean NLL {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
