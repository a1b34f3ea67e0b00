"""The benchmark code runs and reports correctly (never its timings: those live in
benchmarks/results.json). One `python -m benchmarks --quick` run exercises every measurement
with tiny sizes; the committed results file and the README table must agree."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from tests.support.mock_process import REPO_ROOT
from tests.support.subprocesses import run_checked

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_results(official_sdk_38: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    completed = run_checked(
        [sys.executable, "-m", "benchmarks", "--quick", "--out-dir", out, "--no-readme"],
        cwd=REPO_ROOT,
        timeout=400,
    )
    for row in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):  # the table printed has every row
        assert f"\n| {row} | " in completed.stdout
    return out


@pytest.mark.sdk
def test_quick_run_measures_every_row_side_by_side(quick_results: Path) -> None:
    results: dict[str, Any] = json.loads((quick_results / "results.json").read_text())
    runs = results["settings"]["runs"]
    cpus = results["machine"]["cpus"]
    assert sorted({row["row"] for row in results["rows"]}) == [1, 2, 3, 4, 5, 8, 9, 10]
    for row in results["rows"]:
        assert len(row["a"]["samples"]) == len(row["b"]["samples"]) == runs
        assert all(s > 0 and math.isfinite(s) for s in row["a"]["samples"] + row["b"]["samples"])
        for side in (row["a"], row["b"]):
            assert side["min"] <= side["median"] <= side["max"]
        assert row["ratio"] == pytest.approx(row["a"]["median"] / row["b"]["median"])
        judged = row["ratio"] if row["judged"] == "ratio" else row["a"]["median"]
        assert row["met"] == eval_target(judged, row["target"])
        idle = row["load"]["idle_cores"]
        assert len(idle["samples"]) == runs and all(0 <= c <= cpus for c in idle["samples"])
        assert row["load"]["cpus"] == cpus and row["load"]["load_average_1"] >= 0
    startup = [row for row in results["rows"] if row["row"] == 8]
    assert len(startup) == 4 and all(row["judged"] == "a_median" for row in startup)
    assert [row["target"] for row in startup] == ["<= 0.5", "<= 0.3", "<= 0.3", "<= 0.3"]
    (sampling,) = [row for row in results["rows"] if row["row"] == 9]
    assert sampling["unit"] == "s/token" and sampling["target"] == "<= 3.0"
    assert len(sampling["floor"]["samples"]) == runs and sampling["ratio_above_floor"] >= 0
    assert "GEMV" in sampling["note"]
    (fairness,) = [row for row in results["rows"] if row["row"] == 10]
    assert fairness["backlog"]["requests"] == results["settings"]["backlog_requests"]
    scaling = results["scaling"]
    points = scaling["points"]
    assert [p["clients"] for p in points] == list(results["settings"]["scaling_clients"])
    assert points[0]["speedup"] == pytest.approx(1.0)
    assert all(p["latency_p99"] >= p["latency_p50"] > 0 for p in points)
    assert points[0]["efficiency_vs_one_client"] == pytest.approx(1.0)
    assert all(p["cores_used"] > 0 and 0 <= p["machine_busy"] <= 1 for p in points)
    for p in points:
        assert 0 <= p["idle_cores"]["median"] <= p["free_cores"]["median"] <= cpus
    clauses = scaling["clauses"]
    assert len(clauses) == 4 and all(c["met"] in (True, False, None) for c in clauses)
    assert scaling["met"] == all(c["met"] is not False for c in clauses)
    memory = results["memory"]
    assert 100 < memory["small_models_peak_rss_mib"] < 4096
    assert memory["large"]["peak_rss_mib"] > 100
    assert (quick_results / "scaling.png").read_bytes()[:8] == PNG_MAGIC
    assert results["git_revision"] and results["machine"]["cpus"] >= 1


def eval_target(ratio: float, target: str) -> bool:
    op, value = target.split()
    return ratio <= float(value) if op == "<=" else ratio >= float(value)


def test_readme_quotes_the_committed_results() -> None:
    results = json.loads((REPO_ROOT / "benchmarks" / "results.json").read_text())
    quoted = report.readme_table((REPO_ROOT / "README.md").read_text())
    assert quoted == report.markdown_table(results), "run `make bench` to refresh the README"


def test_update_readme_replaces_only_the_table(tmp_path: Path) -> None:
    results = json.loads((REPO_ROOT / "benchmarks" / "results.json").read_text())
    readme = tmp_path / "README.md"
    for old in ("old table", ""):  # a stale table, and the empty section of a new README
        readme.write_text(f"intro\n{report.TABLE_BEGIN}\n{old}\n{report.TABLE_END}\noutro\n")
        report.update_readme(readme, results)
        text = readme.read_text()
        assert text.startswith(f"intro\n{report.TABLE_BEGIN}\n|") and text.endswith("outro\n")
        assert report.readme_table(text) == report.markdown_table(results)
    plain = tmp_path / "plain.md"
    plain.write_text("no table here\n")
    with pytest.raises(RuntimeError, match="benchmark-table"):
        report.update_readme(plain, results)
