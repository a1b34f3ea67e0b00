"""Results file, the README table and the scaling plot, all from one results dict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TABLE_BEGIN = "<!-- benchmark-table:begin -->"
TABLE_END = "<!-- benchmark-table:end -->"


def write_results(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1) + "\n")


def markdown_table(results: dict[str, Any]) -> str:
    """The table the README quotes (between TABLE_BEGIN and TABLE_END)."""
    lines = [
        "| # | measurement | result | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['row']} | {row['name']} | {row['ratio']:.2f} | {row['target']} "
            f"| {'yes' if row['met'] else 'no'} |"
        )
    scaling = results["scaling"]
    speedups = ", ".join(
        f"{p['clients']}: {p['speedup']:.2f}x (CPU efficiency {p['efficiency_vs_one_client']:.2f}, "
        f"machine busy {p['machine_busy']:.0%}, p99/p50 {p['p99_over_p50']:.1f})"
        for p in scaling["points"]
    )
    lines.append(
        f"| 6 | {scaling['name']} | {speedups} | {scaling['target']} "
        f"| {'yes' if scaling['met'] else 'no'} |"
    )
    memory = results["memory"]
    lines.append(
        f"| 7 | server peak RSS: {memory['small_models']} small models; one "
        f"{memory['large']['workload']} batch | {memory['small_models_peak_rss_mib']:.0f} MiB; "
        f"{memory['large']['peak_rss_mib']:.0f} MiB | <= 1024 MiB; <= 2048 MiB "
        f"| {'yes' if memory['met'] else 'no'} |"
    )
    return "\n".join(lines)


def readme_table(readme: str) -> str | None:
    """The table currently quoted in the README, or None if it has none."""
    if TABLE_BEGIN not in readme or TABLE_END not in readme:
        return None
    return readme.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()


def update_readme(readme_path: Path, results: dict[str, Any]) -> None:
    readme = readme_path.read_text()
    if readme_table(readme) is None:
        raise RuntimeError(f"{readme_path} has no {TABLE_BEGIN} ... {TABLE_END} section")
    before, rest = readme.split(TABLE_BEGIN, 1)
    after = rest.split(TABLE_END, 1)[1]
    table = markdown_table(results)
    readme_path.write_text(f"{before}{TABLE_BEGIN}\n{table}\n{TABLE_END}{after}")


def plot_scaling(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    points = results["scaling"]["points"]
    clients = [p["clients"] for p in points]
    medians = [p["steps_per_second"]["median"] for p in points]
    lows = [p["steps_per_second"]["min"] for p in points]
    highs = [p["steps_per_second"]["max"] for p in points]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(clients, medians, marker="o", label="aggregate steps/s (median)")
    axis.fill_between(clients, lows, highs, alpha=0.2, label="min-max over runs")
    axis.plot(
        clients, [medians[0] * n for n in clients], linestyle="--", color="grey", label="linear"
    )
    axis.set_xlabel("concurrent training clients (separate models)")
    axis.set_ylabel("steps / s")
    axis.set_xscale("log", base=2)
    axis.set_xticks(clients, [str(n) for n in clients])
    cpus = results["machine"]["cpus"]
    axis.set_title(f"tinker-mock scaling on {cpus} CPU cores")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
