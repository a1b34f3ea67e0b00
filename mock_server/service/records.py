"""The request record: what the server received, per request, for tests and conformance.

Each front end appends one `RequestRecord` per request it handles (endpoint, decoded body
summary, seq_id, selected headers, the `X-Conformance-Case` value, the answer's status), so a
test can check *wire* behaviour — chunk arrival order, zstd bodies, retry headers — and not only
returned values. Credentials are never recorded. Bounded FIFO (`ServerConfig.max_request_records`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mock_server.service.requests import ForwardBackward
from tinker_ref.types import Datum

# Lower-cased header names worth keeping (never X-API-Key or other credentials).
RECORDED_HEADERS = (
    "content-type",
    "content-encoding",
    "accept",
    "user-agent",
    "x-idempotency-key",
    "x-stainless-retry-count",
    "x-sdk-version",
    "x-sdk-method",
    "x-tinker-request-type",
    "x-tinker-request-iteration",
    "x-tinker-sampling-backpressure",
    "x-conformance-case",
)
CASE_HEADER = "x-conformance-case"
request_log = logging.getLogger("tinker_mock.requests")


@dataclass
class RequestRecord:
    index: int  # arrival order, from 0
    received_at: float  # wall-clock seconds
    method: str
    endpoint: str  # path, e.g. "/api/v1/forward_backward"
    headers: dict[str, str]  # RECORDED_HEADERS present on the request, lower-cased names
    case: str | None  # X-Conformance-Case, if sent
    body: Any = None  # JSON-able summary of the decoded body (None when undecodable)
    seq_id: int | None = None
    request_id: str | None = None  # the future it created or retrieved, if any
    status: int | None = None  # the status answered
    error: str | None = None  # the error detail answered, if any
    error_field: str | None = None  # the field that detail names, if any (logged, not in to_json)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "received_at": self.received_at,
            "method": self.method,
            "endpoint": self.endpoint,
            "headers": self.headers,
            "case": self.case,
            "body": self.body,
            "seq_id": self.seq_id,
            "request_id": self.request_id,
            "status": self.status,
            "error": self.error,
            **({"extra": self.extra} if self.extra else {}),
        }


class RequestLog:
    def __init__(self, capacity: int) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=capacity)
        self._count = 0

    def start(self, method: str, endpoint: str, headers: Mapping[str, str]) -> RequestRecord:
        """A new record for a request just received; the front end fills in the rest."""
        kept = {name: headers[name] for name in RECORDED_HEADERS if name in headers}
        record = RequestRecord(
            index=self._count,
            received_at=time.time(),
            method=method,
            endpoint=endpoint,
            headers=kept,
            case=kept.get(CASE_HEADER),
        )
        self._count += 1
        self._records.append(record)
        return record

    def finish(self, record: RequestRecord) -> None:
        """Log one structured line for an answered request (logger `tinker_mock.requests`, INFO):
        method, endpoint, model, seq_id, status, milliseconds since it arrived, and for an error
        answer the detail (JSON-quoted) and the field it names, as the client receives them."""
        if not request_log.isEnabledFor(logging.INFO):
            return
        body = record.body if isinstance(record.body, dict) else {}
        model = body.get("model_id") or body.get("session_id") or "-"
        error = ""
        if record.error is not None:
            error = f" detail={json.dumps(record.error)} field={record.error_field or '-'}"
        request_log.info(
            "%s %s model=%s seq_id=%s status=%s ms=%.1f%s",
            record.method,
            record.endpoint,
            model,
            "-" if record.seq_id is None else record.seq_id,
            "-" if record.status is None else record.status,
            (time.time() - record.received_at) * 1000,
            error,
        )

    def records(self, case: str | None = None) -> list[RequestRecord]:
        """Copies of the kept records in arrival order, optionally of one conformance case."""
        return [replace(r) for r in self._records if case is None or r.case == case]

    def clear(self) -> None:
        self._records.clear()


def forward_backward_summary(
    req: ForwardBackward, body_bytes: int, encoding: str | None, values: bool
) -> dict[str, Any]:
    """What the request record keeps of a forward/backward body (either front end): its shape,
    and its data only when the server records tensors (`ServerConfig.record_tensors`)."""
    return {
        "model_id": req.model_id,
        "seq_id": req.seq_id,
        "loss_fn": req.loss_fn,
        "loss_fn_config": req.loss_fn_config,
        "forward_only": req.forward_only,
        "num_datums": len(req.data),
        "data": [_datum_summary(datum, values) for datum in req.data],
        "body_bytes": body_bytes,
        "content_encoding": encoding,
    }


def _datum_summary(datum: Datum, values: bool) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for key, td in sorted(datum.loss_fn_inputs.items()):
        inputs[key] = {"dtype": td.dtype, "shape": list(td.dense_shape), "sparse": td.is_sparse}
        if values:
            inputs[key]["values"] = td.tolist()
    try:
        num_tokens: int | None = datum.model_input.length
    except ValueError:  # an image chunk without expected_tokens (the service refuses it later)
        num_tokens = None
    summary: dict[str, Any] = {"num_tokens": num_tokens, "loss_fn_inputs": inputs}
    if values:
        try:
            summary["tokens"] = datum.model_input.to_ints()
        except ValueError:  # image chunks: no token list to record
            summary["tokens"] = None
    return summary
