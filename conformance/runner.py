"""Run cases through an adapter and judge them; or regenerate the cases' expectations.

`run_suite` starts the mocks, the adapter, and keeps up to `jobs` cases in flight (the adapter's
`max_parallel` caps it); results come back in any order and are judged as they arrive: the step
results, the trained state after the case (read from the mock: the weights *and* Adam state, as a
fingerprint compared with a tolerance, so a gradient applied with the wrong sign, twice after a
retry, or not at all shows on any CPU), and the wire observations. Once every case has run, each
fault case is compared bit for bit with its fault-free twin (`judge_twins`): both ran in this
process, so here — and only here — bits must agree. `regenerate` runs the reference adapter in
record mode and writes what it observed into each case's `expected` block, keeping every stored
value that the new run reproduces within its tolerance (no churn from another CPU's rounding).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance import CASE_TIMEOUT_S, state
from conformance.cases import Case, CaseError, Expectations, without_expectations
from conformance.checks import DEFAULT_TOLERANCE, compare, model_id, observe, wire_key
from conformance.report import CaseOutcome, Report
from conformance.servers import Mock, setting_key, start_mocks
from conformance.session import AdapterSession, ProtocolError

API_KEY = "tml-conformance"
CASE_HEADER = "X-Conformance-Case"


def observe_case(case: Case, steps: Mapping[str, Any], mock: Mock) -> dict[str, Any]:
    """What a finished case left behind: its step results, the trained state (fingerprint and
    bitwise digest), wire values."""
    records = mock.records(case["name"])
    model = model_id(records)
    final = mock.final_state(model) if model else None
    return {
        "steps": dict(steps),
        "state": final.fingerprint if final else None,
        "digest": final.digest if final else None,
        "wire": {wire_key(check): observe(check, case, records) for check in case.get("wire", [])},
        "requests": len(records),
    }


# forward_backward_custom metrics whose meaning changed in SDK 0.38 (spec CL-13, WIRE-18): before,
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
    failures += state.compare("state", expected["state"], observed["state"])
    # A wire check may need a feature of its own (how the SDK encodes something): an SDK that
    # does not claim it is judged on the rest of the case.
    unclaimed = {
        wire_key(check)
        for check in case.get("wire", [])
        if features is not None and check.get("feature", "") not in features | {""}
    }
    for key, value in expected.get("wire", {}).items():
        if key not in unclaimed:
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
    engine_processes: int = 0,
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
    observed = record if record is not None else {}
    if runnable:
        with start_mocks(runnable, grpc, engine_processes) as mocks:
            session = AdapterSession(command)
            adapter.update(session.hello["adapter"])
            try:
                outcomes += _drive(
                    session, runnable, mocks, jobs, case_timeout, observed, expectations.features
                )
            finally:
                session.close()
    judge_twins(runnable, observed, outcomes)
    for outcome in outcomes:
        apply_known_failure(outcome, expectations)
    return Report(adapter, outcomes, time.monotonic() - started)


def judge_twins(
    cases: Sequence[Case], observed: Mapping[str, Mapping[str, Any]], outcomes: list[CaseOutcome]
) -> None:
    """Bits where bits are sound: a case with a `same_as` twin that ran in this same process
    must end on exactly the twin's bits (a fault and its retry change nothing). Adds the
    finding to the case's outcome; cases whose twin did not run are judged on the stored
    fingerprint alone."""
    by_name = {outcome.name: outcome for outcome in outcomes}
    for case in cases:
        twin = case.get("same_as")
        mine, theirs = observed.get(case["name"]), observed.get(twin) if twin else None
        outcome = by_name.get(case["name"])
        if outcome is None or mine is None or theirs is None:
            continue
        if mine["digest"] is None or theirs["digest"] is None or mine["digest"] == theirs["digest"]:
            continue
        moved = state.deviation(theirs["state"], mine["state"])
        if moved <= 1:
            finding = (
                f"state: within tolerance of its fault-free twin {twin} but not bit-identical "
                "to it, though both ran in this process — the fault made an op run along "
                "another arithmetic path (re-chunked, reordered or recomputed), which a "
                "retry must not do"
            )
        else:
            finding = (
                f"state: differs from its fault-free twin {twin} beyond tolerance "
                f"({moved:.3g}x the allowed deviation) — an update was applied with another "
                "value, twice, or not at all"
            )
        outcome.failures.append(finding)
        if outcome.status == "passed":
            outcome.status = "failed"


def _drive(
    session: AdapterSession,
    cases: Sequence[Case],
    mocks: Mapping[str, Mock],
    jobs: int,
    case_timeout: float,
    observed_cases: dict[str, dict[str, Any]],
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
            observed_cases[case["name"]] = observed
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
    elif outcome.status == "passed" and expectations.flaky(outcome.name):
        outcome.reason = f"passed this time; listed as flaky ({reason})"
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
    if observed["state"] is None:
        raise CaseError(f"{case['name']}: the reference run left no model to fingerprint")
    return {"steps": steps, "state": observed["state"], "wire": observed["wire"]}


def regenerate(directory: Path, command: str, pattern: str = "*") -> Report:
    from conformance.cases import load_cases

    cases = load_cases(directory, pattern, require_expected=False)
    stored: dict[str, Any] = {}
    for case in cases:
        # Observed afresh, never judged against the old values; kept where the new run
        # reproduces them within tolerance, so another CPU's rounding rewrites nothing.
        stored[case["name"]] = case.pop("expected", None)
    observed: dict[str, dict[str, Any]] = {}
    report = run_suite(cases, command, Expectations(None, {}), record=observed)
    broken = [o for o in report.outcomes if o.status not in ("passed",)]
    if broken:
        raise CaseError(
            "the reference adapter did not run every case: "
            + "; ".join(f"{o.name}: {o.status} {o.reason}" for o in broken)
        )
    for case in cases:
        fresh = expectations_from(case, observed[case["name"]])
        case["expected"] = settle(stored[case["name"]], fresh, case)
        path = directory / f"{case['name']}.json"
        path.write_text(dump_case(case))
    load_cases(directory, pattern)  # the regenerated files validate, twins agree
    return report


def settle(old: Any, new: dict[str, Any], case: Case) -> dict[str, Any]:
    """The `expected` block to store: `new`, except that every stored value the new run
    reproduces within the case's tolerance (steps, wire) or the state tolerance (per tensor)
    stays as it was."""
    if not isinstance(old, dict):
        return new
    tolerance = {**DEFAULT_TOLERANCE, **case.get("tolerance", {})}
    settled = dict(new)
    for key in ("steps", "wire"):
        if key in old:
            settled[key] = _keep_close(old[key], new[key], tolerance)
    if isinstance(old.get("state"), dict):
        settled["state"] = {
            name: old["state"][name]
            if name in old["state"] and state.tensor_deviation(old["state"][name], value) <= 1
            else value
            for name, value in new["state"].items()
        }
    return settled


def _keep_close(old: Any, new: Any, tolerance: Mapping[str, float]) -> Any:
    """`new`, with each leaf replaced by `old`'s where `compare` finds them equal."""
    if isinstance(old, dict) and isinstance(new, dict) and set(old) == set(new):
        return {key: _keep_close(old[key], new[key], tolerance) for key in new}
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [_keep_close(o, n, tolerance) for o, n in zip(old, new, strict=True)]
    return old if not compare("", old, new, tolerance) else new


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
