"""Determinism within one process: same seed + same requests => the same run, bit for bit.

Across processes and thread counts: test_engine_subprocesses.py.
"""

from __future__ import annotations

import pytest

from mock_server.engine import Engine, EngineConfig, LoraConfig
from tests.support.engine_data import TEST_MODELS, determinism_trace, shared_engine


@pytest.mark.spec("DET-1")
def test_two_runs_in_one_process_are_bit_identical():
    for name in TEST_MODELS:
        assert determinism_trace(shared_engine(), name) == determinism_trace(shared_engine(), name)


@pytest.mark.spec("DET-2")
def test_a_different_server_seed_gives_a_different_run():
    """Equal traces could also mean a trace ignores its input; this one must differ."""
    other = Engine(EngineConfig(seed=1))
    assert determinism_trace(other, TEST_MODELS[0]) != determinism_trace(
        shared_engine(), TEST_MODELS[0]
    )


@pytest.mark.spec("DET-2")
def test_a_different_lora_seed_gives_different_adapters_and_the_same_seed_the_same():
    engine = shared_engine()
    first = engine.create_model(TEST_MODELS[0], LoraConfig(rank=4), 1, "a")
    same = engine.create_model(TEST_MODELS[0], LoraConfig(rank=4), 1, "b")
    other = engine.create_model(TEST_MODELS[0], LoraConfig(rank=4), 2, "a")
    derived = engine.create_model(TEST_MODELS[0], LoraConfig(rank=4), None, "a")
    derived_again = engine.create_model(TEST_MODELS[0], LoraConfig(rank=4), None, "a")
    assert first.digest() == same.digest()  # the client's seed wins over the model key
    assert first.digest() != other.digest()
    assert derived.digest() == derived_again.digest()  # server seed + model key
    assert (
        derived.digest()
        != engine.create_model(TEST_MODELS[0], LoraConfig(rank=4), None, "b").digest()
    )
