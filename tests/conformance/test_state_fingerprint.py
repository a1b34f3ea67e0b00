"""The stored state fingerprint still catches every wrong update, while no CPU's rounding moves it.

The mocks of a conformance run live in this process, so the engine's optimizer step can be
mutated here the ways a faulty server or SDK would get it wrong:

- `backward applied twice`: the accumulated gradient doubled before the step (a retried
  forward_backward run a second time);
- `optim_step applied twice`: two Adam steps on one gradient (a retried optim_step run again);
- `wrong value`: half of every gradient 10% off (a backward with other weights for some tokens);
- `not applied`: the step skipped and its gradient dropped.

For every case that trains, each mutation must move the final state at least `FAR` times the
tolerance; the unmutated run stays within it. The kernel-path runs (`test_kernel_paths.py`)
show the other half: no CPU moves it at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from conformance import state
from conformance.cases import load_cases
from mock_server.engine.training import AdamConfig, TrainingModel
from tests.support.conformance_runs import run_reference

FAR = 100.0  # a mutation must move the state at least this many times the tolerance

Step = Callable[[TrainingModel, AdamConfig], dict[str, float]]


def _scaled_gradient(factor: float) -> Callable[[Step], Step]:
    def mutate(original: Step) -> Step:
        def step(model: TrainingModel, adam: AdamConfig) -> dict[str, float]:
            with torch.no_grad():
                for param in model.adapter.values():
                    if param.grad is not None:
                        param.grad.mul_(factor)
            return original(model, adam)

        return step

    return mutate


def _partly_wrong(original: Step) -> Step:
    def step(model: TrainingModel, adam: AdamConfig) -> dict[str, float]:
        with torch.no_grad():
            for param in model.adapter.values():
                if param.grad is not None:
                    flat = param.grad.view(-1)
                    flat[: flat.numel() // 2].mul_(1.1)
        return original(model, adam)

    return step


def _stepped_twice(original: Step) -> Step:
    def step(model: TrainingModel, adam: AdamConfig) -> dict[str, float]:
        saved = {name: p.grad for name, p in model.adapter.items()}
        saved = {name: g.clone() if g is not None else None for name, g in saved.items()}
        metrics = original(model, adam)
        for name, param in model.adapter.items():
            param.grad = saved[name]
        original(model, adam)
        return metrics

    return step


def _not_applied(original: Step) -> Step:
    def step(model: TrainingModel, adam: AdamConfig) -> dict[str, float]:
        for param in model.adapter.values():
            param.grad = None  # the gradient is dropped; the step sees none and is skipped
        return original(model, adam)

    return step


MUTATIONS: dict[str, Callable[[Step], Step]] = {
    "backward applied twice": _scaled_gradient(2.0),
    "optim_step applied twice": _stepped_twice,
    "wrong value": _partly_wrong,
    "not applied": _not_applied,
}
# A doubled gradient clipped to a norm it already exceeds is the same clipped gradient: no
# state can show it, so this one case is exempt from that one mutation (the others catch it).
INVISIBLE = {("backward applied twice", "optim-step-grad-clip")}


@pytest.fixture(scope="module")
def expected_states() -> dict[str, state.Fingerprint]:
    return {case["name"]: case["expected"]["state"] for case in load_cases()}


def _deviations(expected: dict[str, state.Fingerprint]) -> dict[str, float]:
    observed = run_reference()
    return {name: state.deviation(expected[name], observed[name]["state"]) for name in expected}


@pytest.mark.spec("DET-6")
def test_the_unmutated_reference_ends_within_tolerance_of_every_stored_state(
    expected_states: dict[str, state.Fingerprint],
) -> None:
    deviations = _deviations(expected_states)
    assert max(deviations.values()) <= 1, {n: d for n, d in deviations.items() if d > 1}


@pytest.mark.spec("DET-6")
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_wrong_update_moves_the_state_of_every_training_case_far_outside_tolerance(
    mutation: str, expected_states: dict[str, state.Fingerprint], monkeypatch: Any
) -> None:
    monkeypatch.setattr(TrainingModel, "optim_step", MUTATIONS[mutation](TrainingModel.optim_step))
    deviations = _deviations(expected_states)
    training = [n for n, fp in expected_states.items() if state.trains(fp)]
    assert len(training) >= 30, f"only {len(training)} cases train"
    caught = {n: deviations[n] for n in training if (mutation, n) not in INVISIBLE}
    missed = {n: d for n, d in caught.items() if d < FAR}
    assert not missed, f"{mutation}: state moved less than {FAR}x the tolerance in {missed}"
    print(f"{mutation}: smallest deviation {min(caught.values()):.3g}x the tolerance")


def test_a_moved_state_is_reported_with_the_tensors_that_moved() -> None:
    expected = {"w.lora_b": [1.0, 0.5, -0.5], "w.lora_b.step": 1}
    within = {"w.lora_b": [1.00005, 0.5, -0.5], "w.lora_b.step": 1}
    moved = {"w.lora_b": [2.0, 1.0, -1.0], "w.lora_b.step": 2}
    assert state.compare("state", expected, within) == []
    (failure,) = state.compare("state", expected, moved)
    assert "moved beyond tolerance in 2 tensor(s)" in failure
    assert "w.lora_b: expected [1.0, 0.5, -0.5], got [2.0, 1.0, -1.0]" in failure
    assert "w.lora_b.step: expected 1, got 2" in failure


def test_the_fingerprint_is_invariant_to_nothing_but_rounding() -> None:
    tensors = {
        "a.lora_b": torch.linspace(-1, 1, 64).reshape(8, 8),
        "a.lora_b.step": torch.tensor(3.0),
    }
    base = state.fingerprint(tensors)
    nudged = state.fingerprint({**tensors, "a.lora_b": tensors["a.lora_b"] * (1 + 1e-7)})
    flipped = state.fingerprint({**tensors, "a.lora_b": tensors["a.lora_b"].flip(0)})
    assert state.deviation(base, nudged) <= 1
    # the same norm, another direction: only the projections see it
    assert flipped["a.lora_b"][0] == base["a.lora_b"][0]
    assert state.deviation(base, flipped) > FAR
