"""`make bench`: run every benchmark, write results.json and scaling.png, update the README.

    python -m benchmarks [--quick] [--out-dir DIR] [--no-readme]

`--quick` runs every code path with tiny sizes (what the test suite does; the figures mean
nothing). The full run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from benchmarks import report, suite
from benchmarks.harness import git_revision, machine_info
from tests.support.mock_process import running_mock_server
from tests.support.sdk_venv import ensure_sdk_venv

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(settings: suite.Settings, fresh_servers: bool = True) -> dict[str, Any]:
    """All measurements. The scaling and large-vocabulary runs get servers of their own (their
    peak RSS is a result) unless `fresh_servers` is off (the quick check saves the start-ups);
    the fairness row always does (a short abandonment grace)."""
    started = time.perf_counter()
    official_python = ensure_sdk_venv("0.38.0")
    rows: list[dict[str, Any]] = suite.startup(settings)  # first: before any server runs
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running_mock_server())
        assert server.grpc_target is not None, "the gRPC front end did not start"
        rows += suite.client_latency(settings, server.url, server.grpc_target, official_python)
        small = (settings.model, settings.datums, settings.tokens)
        heavy = (settings.heavy_model, settings.heavy_datums, settings.heavy_tokens)
        pid = server.process.pid
        rows.append(suite.server_overhead(settings, server.url, pid, small, "small model", 1.25))
        rows.append(
            suite.server_overhead(settings, server.url, pid, heavy, ">= 100 ms compute", 1.1)
        )
        rows += suite.tensor_codec(settings)
        rows.append(suite.sampling_large_vocabulary(settings, server.url))
        rows.append(suite.fairness_under_abandonment(settings))  # a server of its own
        if fresh_servers:
            server = stack.enter_context(running_mock_server())
        scaling = suite.scaling(settings, server.url, server.process.pid)
        small_models_rss = suite.memory_after_small_models(server.process.pid)
        if fresh_servers:
            server = stack.enter_context(running_mock_server())
        large = suite.memory_large_vocabulary(settings, server.url, server.process.pid)
    large["workload"] = (
        f"{settings.memory_model} {settings.memory_datums}x{settings.memory_tokens}-token"
    )
    rows.sort(key=lambda row: row["row"])
    return {
        "machine": machine_info(),
        "git_revision": git_revision(REPO_ROOT),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {k: v for k, v in vars(settings).items()},
        "rows": rows,
        "scaling": scaling,
        "memory": {
            "small_models": max(settings.scaling_clients),
            "small_models_peak_rss_mib": small_models_rss,
            "large": large,
            "met": small_models_rss <= 1024 and large["peak_rss_mib"] <= 2048,
        },
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks, not figures")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    args = parser.parse_args()
    if args.quick:
        results = run(suite.Settings.quick(), fresh_servers=False)
    else:
        results = run(suite.Settings())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report.write_results(results, args.out_dir / "results.json")
    report.plot_scaling(results, args.out_dir / "scaling.png")
    print(report.markdown_table(results))
    print(f"({results['seconds']:.0f} s; wrote {args.out_dir / 'results.json'} and scaling.png)")
    if not args.no_readme:
        report.update_readme(REPO_ROOT / "README.md", results)


if __name__ == "__main__":
    main()
