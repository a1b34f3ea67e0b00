"""Run cases through an adapter and judge them; or regenerate the cases' expectations.

`run_suite` starts the mocks, the adapter, and keeps up to `jobs` cases in flight (the adapter's
`max_parallel` caps it); results come back in any order and are judged as they arrive: the step
results, the final weights digest (read from the mock: the weights *and* Adam state after the
case, so a gradient applied with the wrong sign, twice after a retry, or not at all shows), and the
wire observations. `regenerate` runs the reference adapter in record mode and writes what it
observed into each case's `expected` block; nothing else in a case file changes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.cases import Case, CaseError, Expectations, without_expectations
from conformance.checks import DEFAULT_TOLERANCE, compare, model_id, observe, wire_key
from conformance.report import CaseOutcome, Report
from conformance.servers import Mock, setting_key, start_mocks
from conformance.session import AdapterSession, ProtocolError

API_KEY = "tml-conformance"
CASE_TIMEOUT_S = 120.0
CASE_HEADER = "X-Conformance-Case"


def observe_case(case: Case, steps: Mapping[str, Any], mock: Mock) -> dict[str, Any]:
    """What a finished case left behind: its step results, the weights digest, wire values."""
    records = mock.records(case["name"])
    model = model_id(records)
    return {
        "steps": dict(steps),
        "digest": mock.digest(model) if model else None,
        "wire": {wire_key(check): observe(check, case, records) for check in case.get("wire", [])},
        "requests": len(records),
    }


# forward_backward_custom metrics whose meaning changed in SDK 0.38 (spec losses §2.3): before,
# loss:sum was the server surrogate and surrogate_loss:sum did not exist.
V038_CUSTOM_METRICS = ("loss:sum", "surrogate_loss:sum")


def _without_v038_metrics(case: Case, steps: Mapping[str, Any]) -> dict[str, Any]:
    custom = {s["id"] for s in case["steps"] if s["op"] == "forward_backward_custom"}
    trimmed = {}
    for step_id, result in steps.items():
        if (
            step_id in custom
            and isinstance(result, dict)
            and isinstance(result.get("metrics"), dict)
        ):
            metrics = {k: v for k, v in result["metrics"].items() if k not in V038_CUSTOM_METRICS}
            result = {**result, "metrics": metrics}
        trimmed[step_id] = result
    return trimmed


def judge(
    case: Case, observed: Mapping[str, Any], features: frozenset[str] | None = None
) -> list[str]:
    """Failures of a case (empty: passed). Without the `custom_loss_metrics_v038` feature the
    two custom-loss metrics whose meaning changed in 0.38 are left out of the comparison; the
    case `custom-loss-metrics-rewrite` checks them for SDKs that claim the feature."""
    if observed["requests"] == 0:
        return [
            f"the mock recorded no request with {CASE_HEADER}: {case['name']} "
            "(an adapter must send it on every request)"
        ]
    tolerance = {**DEFAULT_TOLERANCE, **case.get("tolerance", {})}
    expected = case["expected"]
    expected_steps, got_steps = expected["steps"], observed["steps"]
    if features is not None and "custom_loss_metrics_v038" not in features:
        expected_steps = _without_v038_metrics(case, expected_steps)
        got_steps = _without_v038_metrics(case, got_steps)
    failures = compare("steps", expected_steps, got_steps, tolerance)
    if observed["digest"] != expected["digest"]:
        failures.append(
            f"digest (weights and Adam state after the case): expected {expected['digest']}, "
            f"got {observed['digest']} — an update was applied with another value, twice, or "
            "not at all"
        )
    for key, value in expected.get("wire", {}).items():
        failures += compare(f"wire.{key}", value, observed["wire"].get(key), tolerance)
    return failures


def run_suite(
    cases: Sequence[Case],
    command: str,
    expectations: Expectations,
    *,
    jobs: int = 4,
    grpc: bool = False,
    case_timeout: float = CASE_TIMEOUT_S,
    record: dict[str, dict[str, Any]] | None = None,
) -> Report:
    """Judge every case; with `record`, also store each case's observations there."""
    started = time.monotonic()
    outcomes: list[CaseOutcome] = []
    runnable = []
    for case in cases:
        missing = expectations.missing_features(case)
        if missing:
            reason = f"the adapter's features file lacks {', '.join(missing)}"
            outcomes.append(CaseOutcome(case["name"], "skipped", reason=reason))
        else:
            runnable.append(case)
    adapter: dict[str, Any] = {"command": command}
    if runnable:
        with start_mocks(runnable, grpc) as mocks:
            session = AdapterSession(command)
            adapter.update(session.hello["adapter"])
            try:
                outcomes += _drive(
                    session, runnable, mocks, jobs, case_timeout, record, expectations.features
                )
            finally:
                session.close()
    for outcome in outcomes:
        apply_known_failure(outcome, expectations)
    return Report(adapter, outcomes, time.monotonic() - started)


def _drive(
    session: AdapterSession,
    cases: Sequence[Case],
    mocks: Mapping[str, Mock],
    jobs: int,
    case_timeout: float,
    record: dict[str, dict[str, Any]] | None,
    features: frozenset[str] | None,
) -> list[CaseOutcome]:
    queue = list(cases)
    in_flight: dict[str, tuple[Case, float]] = {}
    outcomes = []
    limit = max(1, min(jobs, session.max_parallel))
    while queue or in_flight:
        while queue and len(in_flight) < limit:
            case = queue.pop(0)
            mock = mocks[setting_key(case)]
            session.send(
                {
                    "type": "run",
                    "case": without_expectations(case),
                    "server": mock.endpoints(),
                    "api_key": API_KEY,
                }
            )
            in_flight[case["name"]] = (case, time.monotonic())
        oldest = min(t for _, t in in_flight.values())
        try:
            message = session.receive(max(0.1, oldest + case_timeout - time.monotonic()))
        except ProtocolError as exc:
            if "within" not in str(exc):
                raise
            for name, (_, sent) in list(in_flight.items()):
                if time.monotonic() - sent >= case_timeout:
                    del in_flight[name]
                    outcomes.append(
                        CaseOutcome(
                            name,
                            "errored",
                            case_timeout,
                            reason=f"no result within {case_timeout:g}s",
                        )
                    )
            continue
        if message.get("type") != "result" or message.get("case") not in in_flight:
            raise ProtocolError(f"unexpected message (not a result of a case in flight): {message}")
        case, sent = in_flight.pop(message["case"])
        outcome = CaseOutcome(case["name"], "passed", time.monotonic() - sent)
        status = message.get("status")
        if status == "skipped":
            outcome.status, outcome.reason = "skipped", str(message.get("reason", "no reason"))
        elif status == "errored":
            outcome.status, outcome.reason = "errored", str(message.get("error", "no detail"))
        elif status == "ok" and isinstance(message.get("steps"), dict):
            observed = observe_case(case, message["steps"], mocks[setting_key(case)])
            if record is not None:
                record[case["name"]] = observed
            if "expected" in case:
                outcome.failures = judge(case, observed, features)
                outcome.status = "failed" if outcome.failures else "passed"
        else:
            raise ProtocolError(
                f"a result needs status ok (with steps), skipped or errored: {message}"
            )
        outcomes.append(outcome)
    return outcomes


def apply_known_failure(outcome: CaseOutcome, expectations: Expectations) -> None:
    reason = expectations.known_failure(outcome.name)
    if reason is None or outcome.status == "skipped":
        return
    if outcome.status in ("failed", "errored"):
        outcome.status = "expected_failure"
        outcome.reason = f"known failure: {reason}"
    elif outcome.status == "passed":
        outcome.status = "unexpected_pass"
        outcome.reason = f"listed as known-failing ({reason}) but passed: remove it from the list"


# ----- regeneration -----


def expectations_from(case: Case, observed: Mapping[str, Any]) -> dict[str, Any]:
    """The `expected` block of a case from the reference run's observations."""
    steps: dict[str, Any] = {}
    by_id = {step["id"]: step for step in case["steps"]}
    for step_id, result in observed["steps"].items():
        step = by_id[step_id]
        wanted = step.get("expect_error")
        if (wanted is not None) != ("error" in result):
            raise CaseError(
                f"{case['name']}: step {step_id}: the reference "
                f"{'succeeded' if wanted else 'failed: ' + str(result.get('error'))}, "
                f"but the case says expect_error={wanted}"
            )
        if wanted is not None:
            if result["error"]["kind"] not in wanted:
                raise CaseError(
                    f"{case['name']}: step {step_id}: reference error {result['error']} "
                    f"is not of kind {wanted}"
                )
            steps[step_id] = {"error": {"kind": wanted}}
        elif step["op"] == "save_state":
            # Checkpoint paths embed the per-run model id: only their shape is fixed.
            steps[step_id] = {"path": {"pattern": rf"tinker://\S+/{re.escape(step['name'])}"}}
        else:
            steps[step_id] = result
    if observed["digest"] is None:
        raise CaseError(f"{case['name']}: the reference run left no model to digest")
    return {"steps": steps, "digest": observed["digest"], "wire": observed["wire"]}


def regenerate(directory: Path, command: str, pattern: str = "*") -> Report:
    from conformance.cases import load_cases

    cases = load_cases(directory, pattern, require_expected=False)
    for case in cases:
        case.pop("expected", None)  # observed afresh, never judged against the old values
    observed: dict[str, dict[str, Any]] = {}
    report = run_suite(cases, command, Expectations(None, {}), record=observed)
    broken = [o for o in report.outcomes if o.status not in ("passed",)]
    if broken:
        raise CaseError(
            "the reference adapter did not run every case: "
            + "; ".join(f"{o.name}: {o.status} {o.reason}" for o in broken)
        )
    for case in cases:
        case["expected"] = expectations_from(case, observed[case["name"]])
        path = directory / f"{case['name']}.json"
        path.write_text(dump_case(case))
    load_cases(directory, pattern)  # the regenerated files validate, twins agree
    return report


def dump_case(case: Case) -> str:
    """Indented JSON with number lists on one line (readable diffs of regenerated values)."""
    text = json.dumps(case, indent=2, ensure_ascii=False)
    scalar_list = re.compile(
        r"\[\s*([-0-9eE.+,\s]*?|(?:null|true|false|[-0-9eE.+]+)(?:,\s*(?:null|true|false|[-0-9eE.+]+))*)\s*\]"
    )
    return (
        scalar_list.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1).strip()) + "]", text)
        + "\n"
    )
