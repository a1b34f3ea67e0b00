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
    """The table the README quotes (between TABLE_BEGIN and TABLE_END), then the rows' notes.

    Every row: its figure (the ratio of two medians measured interleaved, or A's median where
    the target is absolute), both sides' median (min-max) over the runs, the target and verdict,
    and the machine's load meanwhile (idle cores: median (min-max) over the runs, of how many;
    the 1-minute load average as the row began). Results files from before rows 8-10 and the
    load figures existed render with what they have."""
    lines = [
        "| # | measurement | result | A / B: median (min-max) | target | met | machine load |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = results["rows"]
    notes: dict[str, int] = {}  # each note once, under the first row that has it
    for row in rows:
        if "note" in row:
            notes.setdefault(row["note"], row["row"])
    for row in [r for r in rows if r["row"] <= 5]:
        lines.append(_ratio_line(row))
    lines.append(_scaling_line(results["scaling"]))
    memory = results["memory"]
    lines.append(
        f"| 7 | server peak RSS: {memory['small_models']} small models; one "
        f"{memory['large']['workload']} batch | {memory['small_models_peak_rss_mib']:.0f} MiB; "
        f"{memory['large']['peak_rss_mib']:.0f} MiB | - | <= 1024 MiB; <= 2048 MiB "
        f"| {_verdict(memory['met'])} | - |"
    )
    for row in [r for r in rows if r["row"] > 5]:
        lines.append(_ratio_line(row))
    for note, number in notes.items():
        lines += ["", f"Row {number}: {note}."]
    return "\n".join(lines)


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "no")


def _quantity(value: float, unit: str) -> str:
    """A figure in its unit, scaled to 3 significant digits (seconds to ms or us when small)."""
    if unit in ("s", "s/token"):
        suffix = unit.removeprefix("s")
        for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
            if abs(value) >= scale or scale == 1e-6:
                return f"{value / scale:.3g} {name}{suffix}"
    return f"{value:.3g} {unit}"


def _summary(summary: dict[str, Any], unit: str) -> str:
    return (
        f"{_quantity(summary['median'], unit)} "
        f"({_quantity(summary['min'], unit)}-{_quantity(summary['max'], unit)})"
    )


def _load(load: dict[str, Any] | None) -> str:
    if load is None:
        return "not recorded"
    idle = load["idle_cores"]
    return (
        f"{idle['median']:.1f} ({idle['min']:.1f}-{idle['max']:.1f}) of {load['cpus']} cores "
        f"idle; load avg {load['load_average_1']:.1f}"
    )


def _ratio_line(row: dict[str, Any]) -> str:
    unit = row["unit"]
    if row.get("judged", "ratio") == "a_median":
        result = f"{_quantity(row['a']['median'], unit)} ({row['ratio']:.1f}x)"
    else:
        result = f"{row['ratio']:.2f}"
        if "ratio_above_floor" in row:
            result += f" ({row['ratio_above_floor']:.2f} above the vocabulary floor)"
    sides = f"{_summary(row['a'], unit)} / {_summary(row['b'], unit)}"
    target = row["target"] + (" s" if row.get("judged") == "a_median" else "")
    return (
        f"| {row['row']} | {row['name']} | {result} | {sides} | {target} "
        f"| {_verdict(row['met'])} | {_load(row.get('load'))} |"
    )


def _scaling_line(scaling: dict[str, Any]) -> str:
    points = []
    for p in scaling["points"]:
        rate = p["steps_per_second"]
        text = (
            f"{p['clients']}: {p['speedup']:.2f}x, {rate['median']:.3g} steps/s "
            f"({rate['min']:.3g}-{rate['max']:.3g}), CPU efficiency "
            f"{p['efficiency_vs_one_client']:.2f}"
        )
        if "free_cores" in p:
            text += (
                f", {p['idle_cores']['median']:.1f} cores idle, "
                f"{p['free_cores']['median']:.1f} free of other work"
            )
        else:
            text += f", machine busy {p['machine_busy']:.0%}"
        points.append(f"{text}, p99/p50 {p['p99_over_p50']:.1f}")
    if "clauses" in scaling:
        each = "; ".join(_verdict(clause["met"]) for clause in scaling["clauses"])
        verdict = f"{_verdict(scaling['met'])} (by target: {each})"
        load = f"load avg {scaling['load_average_1']:.1f}; idle/free cores per count"
    else:
        verdict = _verdict(scaling["met"])
        load = "machine busy per count"
    return (
        f"| 6 | {scaling['name']} | {'; '.join(points)} | - "
        f"| {scaling['target']} | {verdict} | {load} |"
    )


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
    # One client per core at most can run at once: "linear" stops at the machine's cores.
    cores = results["scaling"].get("cpus", max(clients))
    axis.plot(
        clients,
        [medians[0] * min(n, cores) for n in clients],
        linestyle="--",
        color="grey",
        label=f"linear up to {cores} cores",
    )
    for point, median in zip(points, medians, strict=True):
        if "free_cores" in point:  # how many cores other work left free at this count
            axis.annotate(
                f"{point['free_cores']['median']:.1f} cores free\n"
                f"CPU eff. {point['efficiency_vs_one_client']:.2f}",
                (point["clients"], median),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=7,
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
