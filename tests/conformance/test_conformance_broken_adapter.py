"""A deliberately broken adapter fails exactly the cases that catch its bugs, with messages that
show expected vs got — and passes a case no bug touches (the suite is precise)."""

from __future__ import annotations

import shlex
import sys

import pytest

from tests.support.conformance_runs import BROKEN_ADAPTER, explain, run

CONTROL = "forward-cross-entropy-1d"  # no custom loss, one op: untouched by every break


@pytest.mark.parametrize(
    ("bug", "case", "message"),
    [
        # -dC/dlogprob of sum_nll is +w = 1.0; the broken client sends -1.0.
        (
            "weights-sign",
            "custom-sum-nll-1d",
            "wire.backward_weights:custom[0][0]: expected 1.0, got -1.0",
        ),
        (
            "weights-sign",
            "custom-sum-nll-1d",
            "state: the trained state moved beyond tolerance",
        ),
        # The user's 0-d tensor metric reaches the result unconverted.
        (
            "metrics-raw",
            "custom-metrics-become-numbers",
            "steps.custom.metrics.custom/weighted_margin:sum: expected the number",
        ),
        # Every call starts at seq_id 1 again: the optim_step collides with the forward_backward.
        (
            "seq-reuse",
            "forward-backward-cross-entropy-1d",
            "wire.seq_ids.seq_ids: expected 3 items [1, 2, 3], got 1 [1]",
        ),
        (
            "seq-reuse",
            "forward-backward-cross-entropy-1d",
            "steps.step: expected a result, got an error",
        ),
    ],
)
def test_a_broken_adapter_fails_the_case_that_catches_its_bug(
    bug: str, case: str, message: str, broken_report: object
) -> None:
    report = broken_report
    outcomes = {o.name: o for o in report.outcomes}  # type: ignore[attr-defined]
    assert outcomes[case].status == "failed", explain(report)  # type: ignore[arg-type]
    assert any(f.startswith(message) for f in outcomes[case].failures), outcomes[case].failures
    assert outcomes[CONTROL].status == "passed", explain(report)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def broken_report() -> object:
    """One run of the broken adapter: each bug live only during its own case."""
    breaks = [
        ("weights-sign", "custom-sum-nll-1d"),
        ("metrics-raw", "custom-metrics-become-numbers"),
        ("seq-reuse", "forward-backward-cross-entropy-1d"),
    ]
    command = [sys.executable, str(BROKEN_ADAPTER)]
    for bug, case in breaks:
        command += ["--break", f"{bug}:{case}"]
    return run(shlex.join(command), ",".join([case for _, case in breaks] + [CONTROL]))
