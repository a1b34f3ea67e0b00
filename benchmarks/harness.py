"""Measuring side by side: interleaved runs, summaries, client worker processes, server RSS.

Timings on shared 2-core machines drift by tens of percent within a minute, so nothing here
reports an absolute time alone: every figure is a ratio of two things measured in the same
run, interleaved A B A B ..., each side summarised by its median over >= 5 runs, and each run
records how many cores the machine left idle meanwhile (`Load`). Where a target is absolute
(the start-up rows' seconds) the figure is still reported beside its ratio to a baseline.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("step_worker.py")


@dataclass(frozen=True)
class Summary:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": min(self.samples),
            "max": max(self.samples),
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Load:
    """How busy the machine was over each interleaved run (all of its processes, ours too).

    `idle_cores`: CPUs x the fraction of CPU time nobody used, per run; `load_average_1`: the
    1-minute load average when the measurement began (other work on a shared machine shows up
    here before it starts)."""

    idle_cores: Summary
    cpus: int
    load_average_1: float

    def to_json(self) -> dict[str, Any]:
        return {
            "idle_cores": self.idle_cores.to_json(),
            "cpus": self.cpus,
            "load_average_1": self.load_average_1,
        }


@dataclass(frozen=True)
class Measured:
    """The summaries of things measured side by side, by name, and the machine's load."""

    summaries: dict[str, Summary]
    load: Load

    def __getitem__(self, name: str) -> Summary:
        return self.summaries[name]


def interleaved_many(fns: dict[str, Callable[[], float]], runs: int) -> Measured:
    """Run every function once per round, in order, `runs` rounds (A B C A B C ...); each call
    returns one run's figure. Each round's machine load is recorded alongside."""
    import os

    cpus = os.cpu_count() or 1
    load_average = os.getloadavg()[0]
    samples: dict[str, list[float]] = {name: [] for name in fns}
    idle: list[float] = []
    for _ in range(runs):
        busy_before, total_before = machine_busy_jiffies()
        for name, fn in fns.items():
            samples[name].append(fn())
        busy_after, total_after = machine_busy_jiffies()
        busy = (busy_after - busy_before) / max(total_after - total_before, 1)
        idle.append(cpus * (1 - busy))
    summaries = {name: Summary(values) for name, values in samples.items()}
    return Measured(summaries, Load(Summary(idle), cpus, load_average))


def interleaved(
    a: Callable[[], float], b: Callable[[], float], runs: int
) -> tuple[Summary, Summary, Load]:
    """Run A B A B ... `runs` times each; each call returns one run's figure."""
    measured = interleaved_many({"a": a, "b": b}, runs)
    return measured["a"], measured["b"], measured.load


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Worker:
    """A `step_worker.py` process: one training client that runs timed steps on command."""

    def __init__(
        self,
        python: Path | str,
        sdk: str,
        transport: str,
        address: str,
        model: str,
        datums: int,
        tokens: int,
        warmup: bool = True,
    ) -> None:
        self.label = f"{sdk}/{transport}"
        args = [sdk, transport, address, model, str(datums), str(tokens), str(int(warmup))]
        self._process = subprocess.Popen(
            [str(python), str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_worker_env(),
        )

    def wait_ready(self) -> None:
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise RuntimeError(f"benchmark worker {self.label} failed to start (said {line!r})")

    def start(self, op: str, steps: int) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, "steps": steps}) + "\n")
        self._process.stdin.flush()

    def collect_all(self) -> dict[str, list[float]]:
        """The last command's per-step figures: "seconds" (wall) and "cpu_seconds" (client)."""
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.label} died")
        figures: dict[str, list[float]] = json.loads(line)
        return figures

    def collect(self, key: str = "seconds") -> list[float]:
        return self.collect_all()[key]

    def command(self, op: str, steps: int, **fields: int) -> dict[str, list[float]]:
        """One command with extra fields (e.g. the "sample" op's samples and tokens)."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, "steps": steps, **fields}) + "\n")
        self._process.stdin.flush()
        return self.collect_all()

    def steps(self, op: str, steps: int, key: str = "seconds") -> list[float]:
        self.start(op, steps)
        return self.collect(key)

    def mean_step(self, op: str, steps: int, key: str = "seconds") -> float:
        return statistics.fmean(self.steps(op, steps, key))

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)


def start_workers(workers: list[Worker]) -> list[Worker]:
    """Wait for workers started together (their torch imports overlap)."""
    for worker in workers:
        worker.wait_ready()
    return workers


def _worker_env() -> dict[str, str]:
    import os

    return {**os.environ, "TINKER_TELEMETRY": "0", "PYTHONUNBUFFERED": "1"}


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a server and its engine processes), Linux /proc."""
    tree, index = [pid], 0
    while index < len(tree):
        tasks = Path(f"/proc/{tree[index]}/task")
        for task in tasks.iterdir() if tasks.exists() else ():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                tree += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return tree


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process and its live descendants, summed, in
    MiB (Linux): the server's engine processes count. A sum of peaks, so never an understatement."""
    total = 0.0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    if total == 0:
        raise RuntimeError(f"no VmHWM for pid {pid}")
    return total


def process_cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU time a live process and (unless told not to) its live descendants have
    used so far (Linux /proc): the server's engine processes count."""
    import os

    total = 0
    for member in process_tree(pid) if descendants else [pid]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # exited meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def machine_info() -> dict[str, Any]:
    import os
    import platform

    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        # Other work on the machine skews every ratio; a load far above the core count means
        # the figures of this run are noisy.
        "load_average_1_5_15": os.getloadavg(),
        "torch": torch.__version__,
    }


def console_script(name: str) -> Path:
    """A console script of the virtualenv this interpreter runs in (`tinker-mock`, ...)."""
    script = Path(sys.executable).parent / name
    if not script.is_file():
        raise RuntimeError(f"no {name} beside {sys.executable}: run `make setup`")
    return script


def time_command(argv: list[str]) -> float:
    """Wall time of a command run to completion, its output discarded (it must succeed)."""
    import time

    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def time_to_ready(argv: list[str]) -> float:
    """Wall time from starting a server command to its ready line (see `running_server`);
    the server is stopped afterwards."""
    import time

    started = time.perf_counter()
    with running_server(argv):
        return time.perf_counter() - started


@contextmanager
def running_server(argv: list[str], start_timeout: float = 60.0) -> Iterator[tuple[str, int]]:
    """A server command that prints the ready line `tinker-mock listening http=URL grpc=...`
    first: yields (URL, pid); SIGTERM at the end (SIGKILL after 15 s)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    try:
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(start_timeout)
        line = lines[0] if lines else ""
        if not line.startswith("tinker-mock listening http="):
            raise RuntimeError(f"{argv} did not become ready (first line {line!r})")
        yield line.split()[2].removeprefix("http="), process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        stdout.close()


def git_revision(repo: Path) -> str:
    completed = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    revision = completed.stdout.strip() or "unknown"
    return revision + ("-dirty" if dirty.stdout.strip() else "")
