"""The harness protocol and the runner's verdicts, with small fake adapters (PROTOCOL.md)."""

from __future__ import annotations

import shlex
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance.cases import Expectations, load_cases
from conformance.report import CaseOutcome, Report
from conformance.runner import apply_known_failure, run_suite
from conformance.session import ProtocolError

CASES = "forward-cross-entropy-1d,custom-dpo-pair,sample-with-seed"


def _fake(tmp_path: Path, *parts: str) -> str:
    """An adapter command running the code `parts` (each dedented) after importing json, sys."""
    script = tmp_path / "fake_adapter.py"
    script.write_text("import json, sys\n" + "\n".join(textwrap.dedent(p) for p in parts))
    return shlex.join([sys.executable, str(script)])


HELLO = """
json.loads(sys.stdin.readline())
def send(message):
    print(json.dumps(message), flush=True)
send({"type": "hello", "protocol": PROTOCOL, "adapter": {"name": "fake"}, "max_parallel": 3})
"""


def test_a_protocol_version_mismatch_stops_the_run_with_both_versions(tmp_path: Path) -> None:
    command = _fake(tmp_path, "PROTOCOL = 99", HELLO)
    with pytest.raises(ProtocolError, match="runner speaks 1, adapter answered 99"):
        run_suite(load_cases(pattern=CASES), command, Expectations(None, {}))


def test_results_may_come_back_out_of_order(tmp_path: Path) -> None:
    body = """
    runs = [json.loads(sys.stdin.readline()) for _ in range(3)]
    for message in reversed(runs):  # answered last-first
        name = message["case"]["name"]
        send({"type": "result", "case": name, "status": "skipped", "reason": "fake " + name})
    """
    report = run_suite(
        load_cases(pattern=CASES),
        _fake(tmp_path, "PROTOCOL = 1", HELLO, body),
        Expectations(None, {}),
    )
    reasons = {o.name: (o.status, o.reason) for o in report.outcomes}
    assert reasons == {name: ("skipped", f"fake {name}") for name in CASES.split(",")}
    assert report.ok


def test_a_non_protocol_line_on_stdout_is_a_protocol_error(tmp_path: Path) -> None:
    body = """
    sys.stdin.readline()
    print("Loading model...", flush=True)
    """
    with pytest.raises(ProtocolError, match="non-protocol line 'Loading model"):
        run_suite(
            load_cases(pattern=CASES),
            _fake(tmp_path, "PROTOCOL = 1", HELLO, body),
            Expectations(None, {}),
        )


def test_an_errored_case_fails_the_run_and_the_junit_report(tmp_path: Path) -> None:
    body = """
    for line in sys.stdin:
        message = json.loads(line)
        if message["type"] == "run":
            send({"type": "result", "case": message["case"]["name"], "status": "errored",
                  "error": "no SDK here"})
    """
    report = run_suite(
        load_cases(pattern=CASES),
        _fake(tmp_path, "PROTOCOL = 1", HELLO, body),
        Expectations(None, {}),
    )
    assert not report.ok and report.counts["errored"] == 3
    report.write(tmp_path / "out")
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("errors")) == ("3", "3")
    assert all(case.find("error") is not None for case in suite.iter("testcase"))
    assert '"errored": 3' in (tmp_path / "out" / "report.json").read_text()


def test_a_case_missing_from_the_features_file_is_skipped_unsent(tmp_path: Path) -> None:
    body = "sys.stdin.read()"  # would hang on any run message
    expectations = Expectations(frozenset({"forward"}), {})
    report = run_suite(
        load_cases(pattern="sample-with-seed"),
        _fake(tmp_path, "PROTOCOL = 1", HELLO, body),
        expectations,
    )
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.reason) == (
        "skipped",
        "the adapter's features file lacks sampling",
    )


def test_a_known_failure_that_passes_fails_the_run() -> None:
    expectations = Expectations(None, {"custom-*": "pretend the custom path is broken"})
    passed = CaseOutcome("custom-dpo-pair", "passed")
    failed = CaseOutcome("custom-mean-nll-1d", "failed", failures=["x: expected 1, got 2"])
    apply_known_failure(passed, expectations)
    apply_known_failure(failed, expectations)
    assert (passed.status, failed.status) == ("unexpected_pass", "expected_failure")
    assert not Report({"name": "fake"}, [passed, failed], 0.0).ok
    assert Report({"name": "fake"}, [failed], 0.0).ok


def test_a_result_that_breaks_the_message_schema_is_a_protocol_error(tmp_path: Path) -> None:
    body = """
    message = json.loads(sys.stdin.readline())
    send({"type": "result", "case": message["case"]["name"], "status": "ok"})  # no "steps"
    """
    with pytest.raises(ProtocolError, match=r"invalid message .*'steps' is a required property"):
        run_suite(
            load_cases(pattern="forward-cross-entropy-1d"),
            _fake(tmp_path, "PROTOCOL = 1", HELLO, body),
            Expectations(None, {}),
        )
