"""Inflight sampling (`save_weights_and_get_sampling_client(kind="inflight")`).

Tinker's docs: an inflight save publishes the training model's current weights to *mutable*
weights shared by that model's inflight sampling clients. A client made by a later inflight save
needs those weights or newer; an earlier inflight client keeps its own namespace and *can* adopt
the newer weights as they propagate (until then it may still be served the older ones).

The mock chooses the deterministic end of that contract: propagation is instant. Each inflight
save updates every earlier inflight sampler of the same model to the weights it publishes, so a
sample submitted after the save sees them (a sample already submitted keeps the weights it was
submitted with). Snapshot samplers never change.
"""

from __future__ import annotations

from mock_server.service.state import Registry, Sampler

KINDS = ("snapshot", "inflight")


def publish(registry: Registry, sampler: Sampler, model_id: str) -> None:
    """`sampler` was just created by an inflight save of `model_id`: share its weights."""
    sampler.inflight_of = model_id
    for other in registry.samplers.values():
        if other.inflight_of == model_id:
            other.weights = sampler.weights
