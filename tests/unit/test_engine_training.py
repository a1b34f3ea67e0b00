"""Training end to end: supervised fine-tuning on the byte-level test model actually learns."""

from __future__ import annotations

import pytest
import torch

from mock_server.engine import AdamConfig, DatumInput, LoraConfig, SampleSpec
from mock_server.engine.tokenizer import BOS, EOS, encode_text
from tests.support.engine_data import TINY_BYTES, fresh_model, shared_engine

TEXTS = ["hello world", "the cat sat on the mat", "tinker ref"]


def _sft_datum(text: str) -> DatumInput:
    sequence = torch.tensor([BOS, *encode_text(text), EOS])
    inputs, targets = sequence[:-1], sequence[1:]  # position t predicts token t + 1
    return DatumInput(inputs, {"target_tokens": targets, "weights": torch.ones(targets.shape)})


def test_sft_on_a_few_repeated_texts_halves_the_loss_within_50_steps_and_memorises_them(
    record_property,
):
    model = fresh_model(TINY_BYTES, lora=LoraConfig(rank=8))
    data = [_sft_datum(text) for text in TEXTS * 2]  # each text twice: a repeated SFT set
    adam = AdamConfig(learning_rate=1e-2)

    curve = []
    for _ in range(50):
        curve.append(model.forward_backward(data, "cross_entropy").metrics["loss:sum"])
        model.optim_step(adam)
    final = model.forward_backward(data, "cross_entropy", forward_only=True).metrics["loss:sum"]
    halved_at = next(step for step, loss in enumerate(curve) if loss <= curve[0] / 2)
    record_property("sft_loss_start", round(curve[0], 2))
    record_property("sft_loss_after_50_steps", round(final, 2))
    record_property("sft_steps_to_half", halved_at)
    print(f"SFT loss:sum {curve[0]:.1f} -> {final:.2f}; halved after {halved_at} steps")

    assert final <= curve[0] / 2
    assert halved_at <= 50
    # at the start the model is near-uniform over 259 tokens; memorised text costs far less
    num_tokens = sum(d.tokens.shape[0] for d in data)
    assert curve[0] / num_tokens > 3.0
    assert final / num_tokens < 0.5

    # and greedy decoding after the first word reproduces the rest of a training text
    prompt = torch.tensor([BOS, *encode_text("tinker")])
    spec = SampleSpec(prompt, seed=0, max_tokens=8, temperature=0.0)
    sequence = shared_engine().sample(TINY_BYTES, model.weights(), spec).sequences[0]
    assert sequence.tokens == [*encode_text(" ref"), EOS]
    assert sequence.stop_reason == "stop"  # the model's EOS is the default stop token


@pytest.mark.spec("OPT-6")
def test_a_step_without_gradient_moves_nothing_even_with_weight_decay() -> None:
    model = fresh_model(TINY_BYTES)
    datum = _sft_datum("tinker ref")
    model.forward_backward([datum], "cross_entropy")
    decaying = AdamConfig(learning_rate=1e-2, weight_decay=0.5)
    model.optim_step(decaying)  # a real step: Adam has state, the weights are non-zero
    before = model.digest(include_optimizer=True)
    model.forward_backward([datum], "cross_entropy", forward_only=True)  # no gradient either
    assert model.optim_step(decaying) == {"optimizer_step:sum": 0.0, "grad_norm:max": 0.0}
    assert model.digest(include_optimizer=True) == before  # no decay, step count unchanged
