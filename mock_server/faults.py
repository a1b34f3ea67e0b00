"""Fault injection: server faults a client must survive, scripted per case, route and request.

Off unless a plan is given explicitly (`ServerConfig.fault_plan`, `tinker-mock serve
--fault-plan FILE`); a default server never injects anything. A plan is a list of rules; a rule
matches requests by conformance case (the `X-Conformance-Case` header; `None` = any request)
and by one of two addresses:

- an **endpoint** (the path after `/api/v1/`, e.g. "create_model"): every request to it counts;
- a **training op**, by its `seq_id`: `target="submit"` matches the requests that carry the op
  (whatever endpoint an SDK uses for it: the custom-loss forward goes to `/forward_backward`
  from SDK 0.25 on and to `/forward` from SDK 0.15 and Tinkex), `target="retrieve"` the
  `retrieve_future` polls of the future the op was answered with. A conformance case names the
  op by step and phase ("the backward of step c1"); the runner turns that into the seq_id.

and by position: the `nth` matching request (1-based) and the `times - 1` after it. Counting is
per (case, address), so one case's traffic never shifts another case's faults.

Kinds (what the client sees, and whether the op took effect):

- `status`: the answer is `status` (429, 408, 500, 503, …) with a JSON body, and
  `Retry-After: <retry_after>` when set; the handler is not run, nothing is applied.
- `drop_after_apply`: the handler runs (the op is accepted and will execute), then the
  connection is closed without an answer — a lost response the client must retry, and the server
  must deduplicate by (model_id, seq_id).
- `pending`: for `retrieve_future`: the poll is held `seconds` and answered `try_again`
  without looking at the future — a long-pending future as the client sees it (seconds > 45
  outlasts the official SDK's poll timeout).
- `truncate_after_apply`: the handler runs, then the answer's headers and the first half of its
  body go out and the connection is closed — a response cut mid-body (the op took effect).
- `delay`: the request is held `seconds` before it is handled, so requests sent after it are
  handled first — e.g. chunks of one forward_backward arriving in another order.
- `outage`: the `nth` matching request starts an outage: it and *every* request of the case
  (any endpoint; every request to the server for a case-less rule) arriving in the next
  `seconds` seconds are answered `status` (503 by default; 402 makes it a billing pause), with
  `Retry-After` when set; then the server answers normally again. Nothing is applied meanwhile.
  A client must ride it out and end as if nothing had happened.

A `status` or `outage` fault of 401 carries `WWW-Authenticate: Bearer error="invalid_token"`
(gRPC: the same as `www-authenticate` trailing metadata): the service rejected the token, so a
client in JWT mode exchanges its key for a new one and replays the request.

This module is transport-neutral: a front end asks `FaultInjector.match(case, endpoint)` once
per request as it arrives, and `match_op(case, seq_id, target)` once it has read the op's
seq_id (or, for a poll, the request_id: `seq_of`), before the op reaches the service; after a
submit is answered it tells the injector which request_id the op got (`note_submitted`). Each
front end maps the returned rule to its own wire: the HTTP middleware and handlers for HTTP,
the call wrapper of `mock_server/grpc/server.py` for gRPC (a method has its HTTP path's name
there, e.g. ForwardBackward -> "forward_backward", and the case comes from
`x-conformance-case` metadata).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAULT_KINDS = ("status", "drop_after_apply", "pending", "truncate_after_apply", "delay", "outage")
# Kinds answered with an error status in the handler's place.
STATUS_KINDS = frozenset({"status", "outage"})
OP_TARGETS = ("submit", "retrieve")


class FaultPlanError(ValueError):
    """A fault plan is malformed (raised when it is loaded, never per request)."""


@dataclass(frozen=True)
class FaultRule:
    endpoint: str | None  # path after /api/v1/, e.g. "create_model"; None: an op (seq_id)
    kind: str  # one of FAULT_KINDS
    case: str | None = None  # X-Conformance-Case value to match; None matches every request
    nth: int = 1  # first matching request (1-based, per case and address) that gets the fault
    times: int = 1  # how many consecutive matching requests get it
    status: int = 503  # kinds "status", "outage": the HTTP status answered
    retry_after: float | None = None  # kinds "status", "outage": Retry-After s, None = no header
    seconds: float = 0.0  # "pending", "delay": how long a request is held; "outage": its length
    seq_id: int | None = None  # the training op addressed (instead of an endpoint)
    target: str = "submit"  # with seq_id: "submit" (the op's POST) or "retrieve" (its polls)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultPlanError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.nth < 1 or self.times < 1:
            raise FaultPlanError(f"nth and times must be >= 1, got {self.nth}, {self.times}")
        if (self.endpoint is None) == (self.seq_id is None):
            raise FaultPlanError("a rule addresses either an endpoint or an op's seq_id")
        if self.target not in OP_TARGETS:
            raise FaultPlanError(f"target must be one of {OP_TARGETS}, got {self.target!r}")
        if self.kind in STATUS_KINDS and not 400 <= self.status <= 599:
            raise FaultPlanError(f"a status fault answers 4xx/5xx, got {self.status}")
        if self.kind == "outage" and (self.seconds <= 0 or self.times != 1):
            raise FaultPlanError("an outage lasts seconds > 0 and is started once (times = 1)")
        polls = self.endpoint == "retrieve_future" or (
            self.seq_id is not None and self.target == "retrieve"
        )
        if self.kind == "pending" and not polls:
            raise FaultPlanError(
                f"'pending' applies to retrieve_future polls, not {self.address()}"
            )

    def address(self) -> str:
        if self.seq_id is None:
            return str(self.endpoint)
        return f"seq_id {self.seq_id} ({self.target})"

    def covers(self, position: int) -> bool:
        return self.nth <= position < self.nth + self.times

    def describe(self) -> str:
        if self.kind == "outage":
            after = "" if self.retry_after is None else f" Retry-After {self.retry_after:g}"
            return f"outage {self.seconds:g}s: status {self.status}{after}"
        if self.kind == "status":
            after = "" if self.retry_after is None else f" Retry-After {self.retry_after:g}"
            return f"status {self.status}{after}"
        if self.kind in ("pending", "delay"):
            return f"{self.kind} {self.seconds:g}s"
        return self.kind


@dataclass(frozen=True)
class FaultPlan:
    rules: tuple[FaultRule, ...] = ()

    @classmethod
    def from_json(cls, value: Any) -> FaultPlan:
        """`{"rules": [{"endpoint": ..., "kind": ..., ...}, ...]}` -> a plan."""
        if not isinstance(value, dict) or not isinstance(value.get("rules"), list):
            raise FaultPlanError('a fault plan is a JSON object {"rules": [...]}')
        known = set(FaultRule.__dataclass_fields__)
        rules = []
        for index, rule in enumerate(value["rules"]):
            if not isinstance(rule, dict):
                raise FaultPlanError(f"rules[{index}]: expected an object, got {rule!r}")
            unknown = sorted(set(rule) - known)
            if unknown:
                raise FaultPlanError(f"rules[{index}]: unknown field(s) {', '.join(unknown)}")
            try:
                rules.append(FaultRule(**{"endpoint": None, **rule}))
            except TypeError as exc:  # a required field is missing
                raise FaultPlanError(f"rules[{index}]: {exc}") from exc
        return cls(tuple(rules))

    @classmethod
    def load(cls, path: Path) -> FaultPlan:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            if isinstance(exc, FaultPlanError):
                raise
            raise FaultPlanError(f"cannot read fault plan {path}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        return {"rules": [rule.__dict__ for rule in self.rules]}


class FaultInjector:
    """Counts requests per (case, endpoint) and says which rule, if any, applies to each.

    One per server; front ends call it from their event loop only, so the counter needs no lock.
    """

    def __init__(self, plan: FaultPlan, clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self._seen: Counter[tuple[str | None, str]] = Counter()
        self._ops: dict[tuple[str | None, str], int] = {}  # (case, request_id) -> seq_id
        self._clock = clock
        self._outages: list[tuple[FaultRule, float]] = []  # started outages, with their end

    def match(self, case: str | None, endpoint: str) -> FaultRule | None:
        """The endpoint-addressed rule for a request to `endpoint`, if any."""
        return self._match(case, endpoint, lambda rule: rule.endpoint == endpoint)

    def match_op(self, case: str | None, seq_id: int, target: str) -> FaultRule | None:
        """The op-addressed rule for a request carrying (`submit`) or polling (`retrieve`)
        the op `seq_id` of `case`, if any."""
        return self._match(
            case,
            f"seq_id {seq_id} ({target})",
            lambda rule: rule.seq_id == seq_id and rule.target == target,
        )

    def note_submitted(self, case: str | None, request_id: str, seq_id: int) -> None:
        """The op `seq_id` was answered with `request_id`: later polls of it are its polls."""
        self._ops[(case, request_id)] = seq_id

    def seq_of(self, case: str | None, request_id: str) -> int | None:
        return self._ops.get((case, request_id))

    def _match(
        self, case: str | None, address: str, addresses: Callable[[FaultRule], bool]
    ) -> FaultRule | None:
        self._seen[(case, address)] += 1
        position = self._seen[(case, address)]
        now = self._clock()
        for rule, until in self._outages:
            if now < until and (rule.case is None or rule.case == case):
                return rule  # the server is down for this request, whatever it is
        for rule in self.plan.rules:
            if not addresses(rule) or (rule.case is not None and rule.case != case):
                continue
            # A case-less rule counts every request to the address, across cases.
            count = position if rule.case is not None else self._total(address)
            if rule.covers(count):
                if rule.kind == "outage":
                    self._outages.append((rule, now + rule.seconds))
                return rule
        return None

    def _total(self, address: str) -> int:
        return sum(n for (_, name), n in self._seen.items() if name == address)


def fault_plan_argument(text: str) -> FaultPlan:
    """argparse `type=` for `--fault-plan FILE`: the loaded plan, or a usage error."""
    try:
        return FaultPlan.load(Path(text))
    except FaultPlanError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
