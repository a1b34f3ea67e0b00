"""What an in-process mock holds after a run, for tests that check a disturbed run (faults, an
outage, a resilient client) ends exactly like an undisturbed one."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mock_server.embedded import EmbeddedServer


def server_view(mock: EmbeddedServer, model_id: str) -> dict[str, Any]:
    """The model's weights and Adam moments (`digest`), the ops it executed in order
    (`executed`) and every request record as JSON (`records`), read on the server's loop."""

    def view() -> dict[str, Any]:
        model = mock.service.ctx.registry.models[model_id]
        assert model.training is not None
        return {
            "digest": model.training.digest(include_optimizer=True),
            "executed": [event.op for event in model.history],
            "records": _records_json(mock),
        }

    result: dict[str, Any] = mock.call(view)
    return result


def _records_json(mock: EmbeddedServer) -> list[dict[str, Any]]:
    return [record.to_json() for record in mock.service.records.records()]


def recorded_requests(mock: EmbeddedServer) -> list[dict[str, Any]]:
    """Every request record of `mock` as JSON, read on the server's loop."""
    records: list[dict[str, Any]] = mock.call(lambda: _records_json(mock))
    return records


def request_ids_per_seq_id(records: list[dict[str, Any]]) -> dict[tuple[str, int], set[str]]:
    """(model_id, seq_id) -> every request_id the server answered for it (retries included)."""
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    for record in records:
        body = record["body"]
        if record["seq_id"] is not None and record["request_id"] and isinstance(body, dict):
            seen[(str(body.get("model_id")), record["seq_id"])].add(record["request_id"])
    return seen
