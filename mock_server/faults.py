"""Fault injection: server faults a client must survive, scripted per case, route and request.

Off unless a plan is given explicitly (`ServerConfig.fault_plan`, `tinker-mock serve
--fault-plan FILE`); a default server never injects anything. A plan is a list of rules; a rule
matches requests by conformance case (the `X-Conformance-Case` header; `None` = any request),
endpoint (the path after `/api/v1/`, e.g. "forward_backward") and position: the `nth` matching
request (1-based) and the `times - 1` after it. Counting is per (case, endpoint), so one case's
traffic never shifts another case's faults.

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

This module is transport-neutral: a front end asks `FaultInjector.match(case, endpoint)` once
per request and maps the returned rule to its own wire: the HTTP middleware for HTTP, the call
wrapper of `mock_server/grpc/server.py` for gRPC (a method has its HTTP path's name there, e.g.
ForwardBackward -> "forward_backward", and the case comes from `x-conformance-case` metadata).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAULT_KINDS = ("status", "drop_after_apply", "pending", "truncate_after_apply", "delay")


class FaultPlanError(ValueError):
    """A fault plan is malformed (raised when it is loaded, never per request)."""


@dataclass(frozen=True)
class FaultRule:
    endpoint: str  # path after /api/v1/, e.g. "forward_backward", "retrieve_future"
    kind: str  # one of FAULT_KINDS
    case: str | None = None  # X-Conformance-Case value to match; None matches every request
    nth: int = 1  # first matching request (1-based, per case and endpoint) that gets the fault
    times: int = 1  # how many consecutive matching requests get it
    status: int = 503  # kind "status": the HTTP status answered
    retry_after: float | None = None  # kind "status": Retry-After seconds, None = no header
    seconds: float = 0.0  # kinds "pending", "delay": how long the request is held

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultPlanError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.nth < 1 or self.times < 1:
            raise FaultPlanError(f"nth and times must be >= 1, got {self.nth}, {self.times}")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise FaultPlanError(f"a status fault answers 4xx/5xx, got {self.status}")
        if self.kind == "pending" and self.endpoint != "retrieve_future":
            raise FaultPlanError(f"'pending' applies to retrieve_future, not {self.endpoint!r}")

    def covers(self, position: int) -> bool:
        return self.nth <= position < self.nth + self.times

    def describe(self) -> str:
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
                rules.append(FaultRule(**rule))
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

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._seen: Counter[tuple[str | None, str]] = Counter()

    def match(self, case: str | None, endpoint: str) -> FaultRule | None:
        self._seen[(case, endpoint)] += 1
        position = self._seen[(case, endpoint)]
        for rule in self.plan.rules:
            if rule.endpoint != endpoint or (rule.case is not None and rule.case != case):
                continue
            # A case-less rule counts every request to the endpoint, across cases.
            count = position if rule.case is not None else self._total(endpoint)
            if rule.covers(count):
                return rule
        return None

    def _total(self, endpoint: str) -> int:
        return sum(n for (_, name), n in self._seen.items() if name == endpoint)


def fault_plan_argument(text: str) -> FaultPlan:
    """argparse `type=` for `--fault-plan FILE`: the loaded plan, or a usage error."""
    try:
        return FaultPlan.load(Path(text))
    except FaultPlanError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
