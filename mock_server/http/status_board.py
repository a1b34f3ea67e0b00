"""What the status page knows that the service's state does not: failures, checkpoints and the
custom loss a client reports.

The HTTP front end feeds it (the middleware after every answer, the routes where an op is
submitted or a future retrieved); the page (`status_page.py`) reads it on the event loop. It is
bounded and never consulted by the service, so it cannot change what any request does.

The custom loss: in `forward_backward_custom` the loss is computed on the client, and the server
only sees the surrogate pass (`weights = -dLoss/dlogprobs`), whose `loss:sum` is not the user's
loss. A client MAY send the custom loss's value with the backward request in the header
`X-Tinker-Custom-Loss: <float>` (the whole call's loss, on the call's first backward request
when the SDK chunks it). The server records it per `(model_id, seq_id)` and the page shows it as
"custom loss (reported by the client)" beside the "server surrogate". Without it (the official
SDK), the page says the custom loss is not visible to the server; it still knows the pass was a
surrogate when the SDK names the method (`x-sdk-method: TrainingClient.forward_backward_custom`).
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from mock_server.service.errors import MalformedRequest
from mock_server.service.futures import Failure
from mock_server.service.records import RequestRecord

CUSTOM_LOSS_HEADER = "X-Tinker-Custom-Loss"
CUSTOM_SDK_METHODS = frozenset(
    {"TrainingClient.forward_backward_custom", "TrainingClient.forward_backward_custom_async"}
)
_SAVE_ENDPOINTS = {
    "/api/v1/save_weights": "state",
    "/api/v1/save_weights_for_sampler": "sampler weights",
}
MAX_FAILURES = 200  # kept for the page, newest last
MAX_SUBMITTED = 10_000  # request_id -> op, to name the model of a failed future


@dataclass(frozen=True)
class FailedRequest:
    at: float  # wall-clock seconds
    endpoint: str
    model_id: str | None  # or the session / base model the request named
    status: str  # the HTTP status, or "failed future (user)" / "(server)"
    detail: str
    field: str | None


@dataclass
class CheckpointNote:
    model_id: str
    kind: str  # "state" or "sampler weights"
    name: str | None  # the path the client asked for (None: an ephemeral sampler snapshot)
    request_id: str
    at: float
    outcome: str = "pending"  # "pending", "saved" or "failed: ..."
    path: str | None = None  # the tinker:// path once saved


def parse_custom_loss(value: str | None) -> float | None:
    """The header's value, or None when absent; MalformedRequest when it is not a finite
    number (so a typo fails loudly instead of drawing nothing)."""
    if value is None:
        return None
    try:
        loss = float(value)
    except ValueError:
        loss = math.nan
    if not math.isfinite(loss):
        raise MalformedRequest(
            f"expected a finite number (the custom loss), got {value!r}", CUSTOM_LOSS_HEADER
        )
    return loss


class StatusBoard:
    def __init__(self) -> None:
        self.failures: deque[FailedRequest] = deque(maxlen=MAX_FAILURES)
        self.failure_counts: Counter[str] = Counter()  # per model id
        self.custom_losses: dict[str, dict[int, float]] = {}  # model -> seq_id -> loss
        self.custom_passes: Counter[str] = Counter()  # surrogate passes the SDK named
        self.checkpoints: list[CheckpointNote] = []
        self._submitted: OrderedDict[str, tuple[str, str]] = OrderedDict()  # -> (model, endpoint)
        self._failed_futures: set[str] = set()

    def observe(self, record: RequestRecord, error_field: str | None) -> None:
        """Called once per answered request (after `record.status` is set); only the API's
        requests count (a browser's /favicon.ico is nobody's failure)."""
        if not record.endpoint.startswith("/api/"):
            return
        body: dict[str, Any] = record.body if isinstance(record.body, dict) else {}
        model_id = body.get("model_id")
        owner = model_id or body.get("session_id") or body.get("base_model")
        status = record.status or 0
        if status >= 400:
            self.failures.append(
                FailedRequest(
                    record.received_at,
                    record.endpoint,
                    owner if isinstance(owner, str) else None,
                    str(status),
                    record.error or "",
                    error_field,
                )
            )
            if isinstance(model_id, str):
                self.failure_counts[model_id] += 1
            return
        if not isinstance(model_id, str) or record.request_id is None:
            return
        self._submitted[record.request_id] = (model_id, record.endpoint)
        while len(self._submitted) > MAX_SUBMITTED:
            self._submitted.popitem(last=False)
        method = record.headers.get("x-sdk-method")
        if record.endpoint == "/api/v1/forward_backward" and method in CUSTOM_SDK_METHODS:
            self.custom_passes[model_id] += 1
        kind = _SAVE_ENDPOINTS.get(record.endpoint)
        if kind is not None:
            name = body.get("path")
            self.checkpoints.append(
                CheckpointNote(
                    model_id,
                    kind,
                    name if isinstance(name, str) else None,
                    record.request_id,
                    record.received_at,
                )
            )
            del self.checkpoints[:-MAX_FAILURES]

    def note_custom_loss(self, model_id: str, seq_id: int, loss: float) -> None:
        self.custom_losses.setdefault(model_id, {})[seq_id] = loss

    def note_outcome(self, request_id: str, failure: Failure | None, result: object) -> None:
        """A retrieved future's outcome: failed ops become failures, saves get their path."""
        submitted = self._submitted.get(request_id)
        if submitted is None:
            return
        model_id, endpoint = submitted
        for note in self.checkpoints:
            if note.request_id == request_id:
                if failure is not None:
                    note.outcome = f"failed: {failure.message}"
                else:
                    note.outcome, note.path = "saved", getattr(result, "path", None)
        if failure is None or request_id in self._failed_futures:
            return
        self._failed_futures.add(request_id)
        self.failures.append(
            FailedRequest(
                time.time(),
                endpoint,
                model_id,
                f"failed future ({failure.category})",
                failure.message,
                None,
            )
        )
        self.failure_counts[model_id] += 1

    def pending_of(self, model_id: str, pending_ids: set[str]) -> int:
        """How many of `model_id`'s submitted ops are still among `pending_ids`."""
        return sum(
            1
            for request_id, (model, _) in self._submitted.items()
            if model == model_id and request_id in pending_ids
        )
