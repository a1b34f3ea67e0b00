"""Tinkex 0.4.0, the Elixir SDK, through the whole suite — built offline from the vendored
source archives by conformance/adapters/elixir/build (what `make conformance-tinkex` runs).

Every case Tinkex claims passes except its known failures, each explained in
conformance/adapters/tinkex-0.4.0.known-failing.txt (a listed case that passes fails the run);
and a deliberately broken variant of the adapter (custom losses negated, so the backward
weights have the wrong sign) fails exactly the custom-loss cases that check those weights.

The toolchain is built on first use (Debian's Erlang via apt-get when missing, Elixir and
Tinkex into ~/.cache: about 2 minutes, then about a second). In CI a build failure fails the
tests; on a developer's machine without the means to build it they are skipped with the
build's own message saying what to install.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conformance import ROOT
from tests.support.conformance_runs import explain, run

ADAPTER_DIR = ROOT / "adapters" / "elixir"
ADAPTER = str(ADAPTER_DIR / "run-adapter")
FEATURES = "tinkex-0.4.0.features.json"
KNOWN_FAILING = "tinkex-0.4.0.known-failing.txt"


@pytest.fixture(scope="module")
def tinkex_built() -> None:
    build = subprocess.run(
        [str(ADAPTER_DIR / "build")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if build.returncode != 0:
        message = f"conformance/adapters/elixir/build failed:\n{build.stderr[-4000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_tinkex_passes_every_case_it_claims_but_its_known_failures(tinkex_built: None) -> None:
    report = run(ADAPTER, features=FEATURES, known_failing=KNOWN_FAILING)
    assert report.ok, explain(report)
    counts = report.counts
    assert counts["passed"] >= 30, explain(report)
    # every case is accounted for: passed, skipped for a feature Tinkex lacks, or explained
    assert counts["passed"] + counts["skipped"] + counts["expected_failure"] == len(
        report.outcomes
    ), explain(report)


NEGATED = ["custom-sum-nll-1d", "custom-mean-nll-1d", "custom-dpo-pair"]
CONTROL = "forward-cross-entropy-1d"  # no custom loss: the break cannot touch it


def test_a_tinkex_adapter_with_negated_custom_losses_fails_the_custom_loss_cases(
    tinkex_built: None,
) -> None:
    broken = f"env TINKEX_ADAPTER_NEGATE_CUSTOM_WEIGHTS=1 {ADAPTER}"
    report = run(broken, ",".join([*NEGATED, CONTROL]), features=FEATURES)
    outcomes = {o.name: o for o in report.outcomes}
    assert outcomes[CONTROL].status == "passed", explain(report)
    for name in NEGATED:
        assert outcomes[name].status == "failed", explain(report)
        failures = outcomes[name].failures
        assert any(f.startswith("wire.backward_weights") for f in failures), failures
        assert any(f.startswith("state: the trained state moved") for f in failures), failures
