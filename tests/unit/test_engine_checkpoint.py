"""Checkpoints: save -> load -> continue is the uninterrupted run, bit for bit, with Adam state."""

from __future__ import annotations

import pytest

from mock_server.engine import (
    AdamConfig,
    CheckpointError,
    LoraConfig,
    TrainingModel,
    load_checkpoint,
    save_checkpoint,
)
from tests.support.engine_data import (
    TINY_64,
    TINY_512,
    fresh_model,
    make_batch,
    shared_engine,
)

ADAM = AdamConfig(learning_rate=1e-2, weight_decay=0.01, grad_clip_norm=5.0)


def _train(model: TrainingModel, steps: range) -> None:
    """One CE forward_backward + optim_step per step, on data fixed by the step number."""
    for step in steps:
        batch = make_batch(step, model.vocab_size, (5, 3, 6))
        model.forward_backward(batch.datums(weights=batch.floats("weights")), "cross_entropy")
        model.optim_step(ADAM)


@pytest.mark.spec("CKPT-1", "CKPT-2")
@pytest.mark.parametrize("base_model", [TINY_64, TINY_512])
def test_save_load_continue_with_optimizer_state_equals_an_uninterrupted_run_bitwise(
    tmp_path, base_model
):
    uninterrupted = fresh_model(base_model)
    _train(uninterrupted, range(4))

    interrupted = fresh_model(base_model)
    _train(interrupted, range(2))
    save_checkpoint(interrupted, tmp_path / "step-2", include_optimizer=True)
    del interrupted
    resumed = shared_engine().model_from_checkpoint(
        load_checkpoint(tmp_path / "step-2", with_optimizer=True)
    )
    _train(resumed, range(2, 4))

    assert resumed.digest(include_optimizer=True) == uninterrupted.digest(include_optimizer=True)
    assert resumed.base.spec.name == base_model


@pytest.mark.spec("CKPT-3")
def test_continuing_without_optimizer_state_differs_because_adam_moments_reset(tmp_path):
    uninterrupted = fresh_model()
    _train(uninterrupted, range(4))

    interrupted = fresh_model()
    _train(interrupted, range(2))
    save_checkpoint(interrupted, tmp_path / "weights-only", include_optimizer=False)
    checkpoint = load_checkpoint(tmp_path / "weights-only", with_optimizer=False)
    assert checkpoint.optimizer is None
    resumed = shared_engine().model_from_checkpoint(checkpoint)
    assert resumed.digest() == interrupted.digest()  # the weights themselves round-trip
    assert resumed.optimizer_state().tensors == {}  # Adam restarts: step 0, zero moments
    _train(resumed, range(2, 4))

    assert resumed.digest() != uninterrupted.digest()


@pytest.mark.spec("CKPT-5")
def test_loading_optimizer_state_from_a_checkpoint_saved_without_it_is_a_checkpoint_error(
    tmp_path,
):
    model = fresh_model()
    _train(model, range(1))
    save_checkpoint(model, tmp_path / "weights-only", include_optimizer=False)

    with pytest.raises(CheckpointError, match="without optimizer state"):
        load_checkpoint(tmp_path / "weights-only", with_optimizer=True)


@pytest.mark.spec("CKPT-3")
def test_a_checkpoint_saved_with_optimizer_state_also_loads_without_it(tmp_path):
    model = fresh_model()
    _train(model, range(2))
    save_checkpoint(model, tmp_path / "both", include_optimizer=True)

    resumed = shared_engine().model_from_checkpoint(
        load_checkpoint(tmp_path / "both", with_optimizer=False)
    )
    assert resumed.digest() == model.digest()
    assert resumed.optimizer_state().tensors == {}


@pytest.mark.spec("CKPT-7")
def test_loading_a_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent", with_optimizer=False)


@pytest.mark.spec("CKPT-7")
def test_adapters_of_another_rank_do_not_load_and_leave_the_model_untouched(tmp_path):
    saved = fresh_model(lora=LoraConfig(rank=4))
    _train(saved, range(1))
    save_checkpoint(saved, tmp_path / "rank-4", include_optimizer=True)
    other = fresh_model(lora=LoraConfig(rank=8))
    before = other.digest(include_optimizer=True)

    checkpoint = load_checkpoint(tmp_path / "rank-4", with_optimizer=True)
    with pytest.raises(CheckpointError, match="do not fit"):
        other.load(checkpoint.weights, checkpoint.optimizer)
    assert other.digest(include_optimizer=True) == before


@pytest.mark.spec("CKPT-6")
def test_saving_over_an_existing_checkpoint_replaces_it(tmp_path):
    model = fresh_model()
    save_checkpoint(model, tmp_path / "ckpt", include_optimizer=False)
    _train(model, range(1))
    save_checkpoint(model, tmp_path / "ckpt", include_optimizer=True)

    resumed = shared_engine().model_from_checkpoint(
        load_checkpoint(tmp_path / "ckpt", with_optimizer=True)
    )
    assert resumed.digest(include_optimizer=True) == model.digest(include_optimizer=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging left behind


@pytest.mark.spec("CKPT-4")
@pytest.mark.parametrize("with_optimizer", [False, True])
def test_loading_discards_the_gradient_accumulated_before_the_load(tmp_path, with_optimizer):
    model = fresh_model()
    _train(model, range(1))
    save_checkpoint(model, tmp_path / "ckpt", include_optimizer=True)
    batch = make_batch(7, model.vocab_size, (4, 2))
    model.forward_backward(batch.datums(weights=batch.floats("weights")), "cross_entropy")
    assert model.has_gradient()

    checkpoint = load_checkpoint(tmp_path / "ckpt", with_optimizer=with_optimizer)
    model.load(checkpoint.weights, checkpoint.optimizer)
    loaded = model.digest(include_optimizer=True)
    assert not model.has_gradient()
    assert model.optim_step(ADAM)["optimizer_step:sum"] == 0.0  # nothing left to apply
    assert model.digest(include_optimizer=True) == loaded
