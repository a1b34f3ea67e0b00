"""The code under test: a small supervised training loop written against the official SDK.

Nothing here knows about the mock; the SDK reads `TINKER_BASE_URL` / `TINKER_API_KEY`, and the
tokenizer comes from `TrainingClient.get_tokenizer()` as it would against the real service.
"""

from __future__ import annotations

from typing import Any

import tinker
from tinker import types

BASE_MODEL = "tinker-ref/tiny-bytes"


def sft_datum(tokenizer: Any, prompt: str, answer: str) -> types.Datum:
    """Next-token prediction on `prompt + answer + eos`, weighting only the answer's tokens."""
    prompt_tokens = tokenizer.encode(prompt, add_special_tokens=False)
    answer_tokens = [*tokenizer.encode(answer, add_special_tokens=False), tokenizer.eos_token_id]
    tokens = prompt_tokens + answer_tokens
    weights = [0.0] * (len(prompt_tokens) - 1) + [1.0] * len(answer_tokens)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
    )


def train(
    pairs: list[tuple[str, str]], steps: int, learning_rate: float
) -> tuple[tinker.TrainingClient, list[float]]:
    """Train a LoRA on `pairs`; returns the training client and each step's loss."""
    service = tinker.ServiceClient()
    training = service.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=0)
    tokenizer = training.get_tokenizer()
    data = [sft_datum(tokenizer, prompt, answer) for prompt, answer in pairs]
    losses = []
    for _ in range(steps):
        backward = training.forward_backward(data, "cross_entropy")
        optim = training.optim_step(types.AdamParams(learning_rate=learning_rate))
        losses.append(backward.result().metrics["loss:sum"])
        optim.result()
    return training, losses


def complete(training: tinker.TrainingClient, prompt: str, max_tokens: int) -> str:
    """Greedy completion of `prompt` from a snapshot of the current weights."""
    tokenizer = training.get_tokenizer()
    sampler = training.save_weights_and_get_sampling_client()
    result = sampler.sample(
        types.ModelInput.from_ints(tokenizer.encode(prompt, add_special_tokens=False)),
        num_samples=1,
        sampling_params=types.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    ).result()
    return str(tokenizer.decode(result.sequences[0].tokens, skip_special_tokens=True))
