"""Tests of training_loop.py with the `tinker_mock` fixtures only (no conftest, no imports
from tinker-ref): the shape of test a user writes for their own loop."""

from __future__ import annotations

import os

import pytest
import tinker
from training_loop import BASE_MODEL, complete, train

PAIRS = [("Q: capital of France? A:", " Paris"), ("Q: two plus two? A:", " four")]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any attempt to reach the Hugging Face hub fails instead of downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_loss_falls_and_the_server_saw_every_step(tinker_mock) -> None:
    training, losses = train(PAIRS, steps=6, learning_rate=2e-2)
    assert losses[-1] < 0.5 * losses[0]
    # The server's record agrees with what the SDK reported, bit for bit.
    assert tinker_mock.losses(training.model_id) == losses
    assert tinker_mock.optimizer_steps(training.model_id) == 6
    assert len(tinker_mock.requests("optim_step")) == 6


def test_training_memorises_the_answer(tinker_mock) -> None:
    training, _ = train(PAIRS, steps=30, learning_rate=3e-2)
    assert complete(training, PAIRS[0][0], max_tokens=8) == PAIRS[0][1]


def test_the_tokenizer_comes_from_the_server_without_the_hub(tinker_mock) -> None:
    service = tinker.ServiceClient()
    training = service.create_lora_training_client(base_model=BASE_MODEL, rank=1)
    tokenizer = training.get_tokenizer()
    text = "héllo, wörld ✓"
    assert tokenizer.encode(text, add_special_tokens=False) == list(text.encode())
    assert tokenizer.decode(list(text.encode())) == text
    assert tokenizer.eos_token_id == 257


@pytest.mark.tinker_mock(seed=1)
def test_a_rerun_on_the_same_server_reproduces_losses_and_weights(tinker_mock) -> None:
    assert tinker_mock.config.seed == 1
    _, losses = train(PAIRS, steps=2, learning_rate=2e-2)
    digest = tinker_mock.weights_digest(tinker_mock.model_ids()[-1], include_optimizer=True)
    _, again = train(PAIRS, steps=2, learning_rate=2e-2)
    # Same server, same requests, LoRA seed fixed by the loop: identical numbers.
    assert again == losses
    assert tinker_mock.weights_digest(tinker_mock.model_ids()[-1], include_optimizer=True) == digest


def test_the_fixture_sets_the_sdk_environment(tinker_mock) -> None:
    assert os.environ["TINKER_BASE_URL"] == tinker_mock.url
    assert os.environ["TINKER_API_KEY"].startswith("tml-")


def test_the_variables_are_restored_after_a_test_with_the_fixture() -> None:
    # Runs after the tests above (pytest keeps file order) and before the session mock exists;
    # the runner starts pytest with no TINKER_* variables.
    assert "TINKER_BASE_URL" not in os.environ and "TINKER_API_KEY" not in os.environ


def test_the_session_mock_serves_several_tests_a(tinker_mock_session) -> None:
    _, losses = train(PAIRS[:1], steps=1, learning_rate=1e-2)
    assert len(tinker_mock_session.model_ids()) == 1 and losses


def test_the_session_mock_serves_several_tests_b(tinker_mock_session) -> None:
    # Runs after _a (pytest keeps file order): the same server still holds _a's model.
    _, losses = train(PAIRS[:1], steps=1, learning_rate=1e-2)
    assert len(tinker_mock_session.model_ids()) == 2 and losses
