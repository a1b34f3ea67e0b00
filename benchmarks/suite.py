"""The ten measurements of the benchmark table (issue: "Benchmarks: side-by-side speed and
memory, with targets"; rows 8-10 and the scaling row's free cores from "Report every row in
`make bench`"). Each returns a JSON-able dict with its ratio(s), target, verdict, raw samples
and the machine's load while it ran.

Workload unless stated: `tinker-ref/tiny-bytes`, 8 datums x 128 tokens, `forward_backward_custom`
with a mean-NLL loss + a pipelined `optim_step`, against `tinker-mock serve` on loopback.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    Load,
    Summary,
    Worker,
    console_script,
    interleaved,
    interleaved_many,
    machine_busy_jiffies,
    peak_rss_mib,
    percentile,
    process_cpu_seconds,
    running_server,
    start_workers,
    time_command,
    time_to_ready,
)

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Settings:
    runs: int = 7  # interleaved runs per side; each figure is the median over them
    steps: int = 4  # steps per run (a run's figure is their mean)
    model: str = "tinker-ref/tiny-bytes"
    datums: int = 8
    tokens: int = 128
    scaling_clients: tuple[int, ...] = (1, 2, 4, 8)
    heavy_model: str = "Qwen/Qwen3-8B"  # the >= 100 ms compute workload of row 3
    heavy_datums: int = 4
    heavy_tokens: int = 64
    memory_model: str = "Qwen/Qwen3-8B"  # row 7: one 16 x 256 batch
    memory_datums: int = 16
    memory_tokens: int = 256
    codec_elements: int = 1_000_000
    sample_model: str = "Qwen/Qwen3.5-4B"  # row 9: a real vocabulary (248,320) vs tiny-bytes
    sample_samples: int = 16
    sample_tokens: int = 64
    backlog_requests: int = 200  # row 10: abandoned sample requests of a killed client
    backlog_tokens: int = 64
    abandon_seconds: float = 1.0  # the server's session_abandon_seconds in row 10
    startup_warmup: bool = True  # row 8: run each command once untimed first

    @classmethod
    def quick(cls) -> Settings:
        """Exercises every code path in seconds (for the test suite); the figures mean nothing."""
        return cls(
            runs=2,
            steps=1,
            datums=2,
            tokens=16,
            scaling_clients=(1, 2),
            heavy_model="tinker-ref/tiny-bytes",
            heavy_datums=2,
            heavy_tokens=16,
            memory_model="tinker-ref/tiny-bytes",
            memory_datums=2,
            memory_tokens=16,
            codec_elements=10_000,
            sample_samples=2,
            sample_tokens=8,
            backlog_requests=20,
            backlog_tokens=8,
            abandon_seconds=0.5,
            startup_warmup=False,
        )


def ratio_row(
    row: int,
    name: str,
    a: Summary,
    b: Summary,
    load: Load,
    target: float,
    at_most: bool,
    unit: str = "s",
    judged: str = "ratio",
) -> dict[str, Any]:
    """One table row: the ratio of A's median to B's, each side's median/min/max, the machine's
    load over the runs, and the verdict of `target` on the `judged` figure: "ratio", or
    "a_median" for an absolute target on A (then A's unit is seconds)."""
    ratio = a.median / b.median
    figure = ratio if judged == "ratio" else a.median
    return {
        "row": row,
        "name": name,
        "ratio": ratio,
        "target": f"{'<=' if at_most else '>='} {target}",
        "judged": judged,
        "met": figure <= target if at_most else figure >= target,
        "a": a.to_json(),
        "b": b.to_json(),
        "unit": unit,
        "load": load.to_json(),
    }


# ----- rows 1, 2, 4: client latency -------------------------------------------------------------


def client_latency(
    settings: Settings, http_url: str, grpc_target: str, official_python: Path | str
) -> list[dict[str, Any]]:
    import sys

    workload = (settings.model, settings.datums, settings.tokens)
    ours_http, official, ours_grpc = start_workers(
        [
            Worker(sys.executable, "tinker_ref", "http", http_url, *workload),
            Worker(official_python, "official", "http", http_url, *workload),
            Worker(sys.executable, "tinker_ref", "grpc", grpc_target, *workload),
        ]
    )
    try:

        def compare(
            row: int, name: str, a: tuple[Worker, str], b: tuple[Worker, str], key: str = "seconds"
        ) -> dict[str, Any]:
            """Row `row`: mean per-step `key` of worker a's op over worker b's, interleaved."""
            summaries = interleaved(
                lambda: a[0].mean_step(a[1], settings.steps, key),
                lambda: b[0].mean_step(b[1], settings.steps, key),
                settings.runs,
            )
            target = {1: 0.8, 2: 0.7, 4: 1.7}[row]
            return ratio_row(row, name, *summaries, target, True)

        custom_http, custom_official = (ours_http, "custom"), (official, "custom")
        return [
            compare(
                1, "step latency: tinker_ref HTTP / official SDK 0.38", custom_http, custom_official
            ),
            # The same steps' client-process CPU: what the client itself costs (the wall
            # time is mostly the server's compute, which no client can shorten).
            compare(
                1,
                "client CPU per step: tinker_ref HTTP / official SDK 0.38",
                custom_http,
                custom_official,
                "cpu_seconds",
            ),
            compare(
                2,
                "step latency: tinker_ref gRPC / tinker_ref HTTP",
                (ours_grpc, "custom"),
                custom_http,
            ),
            compare(
                4,
                "forward_backward_custom / built-in cross_entropy",
                custom_http,
                (ours_http, "builtin"),
            ),
        ]
    finally:
        for worker in (ours_http, official, ours_grpc):
            worker.close()


# ----- row 3: server overhead -------------------------------------------------------------------


def in_process_step(model_name: str, datums: int, tokens: int) -> Callable[[], float]:
    """The engine calls one custom-loss step makes on the server, made directly: forward-only,
    the client's loss and gradient (tinker_ref's own code), the weighted backward, AdamW."""
    import random

    import torch

    from mock_server.engine import AdamConfig, Engine, EngineConfig, LoraConfig
    from mock_server.service.convert import datum_inputs
    from tinker_ref import types
    from tinker_ref.custom_loss import forward_phase_data, run_custom_loss

    rng = random.Random(0)
    data = []
    for _ in range(datums):
        ids = [rng.randrange(256) for _ in range(tokens + 1)]
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * tokens},
            )
        )
    model = Engine(EngineConfig(seed=0)).create_model(
        model_name, LoraConfig(rank=8), 0, model_key="bench"
    )
    adam = AdamConfig(learning_rate=1e-4)

    def mean_nll(
        data: list[types.Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        flat = torch.cat(logprobs)
        return -flat.mean(), {"tokens": float(flat.numel())}

    forward_inputs = datum_inputs(forward_phase_data(data))

    def step() -> float:
        started = time.perf_counter()
        forward = model.forward_backward(forward_inputs, "cross_entropy", forward_only=True)
        outputs = [
            {"logprobs": types.TensorData.from_torch(out["logprobs"])}
            for out in forward.loss_fn_outputs
        ]
        custom = run_custom_loss(data, outputs, mean_nll)
        model.forward_backward(datum_inputs(custom.backward_data), "cross_entropy")
        model.optim_step(adam)
        return time.perf_counter() - started

    step()  # warm-up: first calls allocate
    return step


def server_overhead(
    settings: Settings,
    http_url: str,
    server_pid: int,
    workload: tuple[str, int, int],
    label: str,
    target: float,
) -> dict[str, Any]:
    """HTTP step over the engine's own calls in this process, and where the HTTP step's CPU
    went: per step, the server's main process, its engine processes, and the client."""
    import sys

    (worker,) = start_workers([Worker(sys.executable, "tinker_ref", "http", http_url, *workload)])
    cpu = {"server main process": 0.0, "engine processes": 0.0, "client": 0.0}
    http_steps = 0

    def http_step() -> float:
        nonlocal http_steps
        main, tree = process_cpu_seconds(server_pid, False), process_cpu_seconds(server_pid)
        figures = worker.command("custom", steps)
        cpu["server main process"] += process_cpu_seconds(server_pid, False) - main
        cpu["engine processes"] += process_cpu_seconds(server_pid) - tree
        cpu["client"] += sum(figures["cpu_seconds"])
        http_steps += steps
        return statistics.fmean(figures["seconds"])

    try:
        direct = in_process_step(*workload)
        steps = settings.steps
        a, b, load = interleaved(
            http_step,
            lambda: statistics.fmean(direct() for _ in range(steps)),
            settings.runs,
        )
    finally:
        worker.close()
    cpu["engine processes"] -= cpu["server main process"]  # the tree counts the main process
    name = f"server overhead ({label}): HTTP step / in-process engine"
    row = ratio_row(3, name, a, b, load, target, True)
    row["workload"] = {"model": workload[0], "datums": workload[1], "tokens": workload[2]}
    row["in_process_step_ms"] = b.median * 1000
    row["cpu_ms_per_step"] = {key: 1000 * value / http_steps for key, value in cpu.items()}
    split = ", ".join(f"{key} {value:.1f} ms" for key, value in row["cpu_ms_per_step"].items())
    row["note"] = (
        f"CPU per HTTP step ({label}): {split}; the in-process engine step is "
        f"{b.median * 1000:.1f} ms of CPU and wall time"
    )
    return row


# ----- row 5: tensor codec ----------------------------------------------------------------------


def tensor_codec(settings: Settings) -> list[dict[str, Any]]:
    from tinker_ref.codec import (
        decode_tensor,
        encode_tensor,
        tensor_data_from_json,
        tensor_data_to_json,
    )
    from tinker_ref.types import TensorData

    array = np.random.default_rng(0).standard_normal(settings.codec_elements).astype(np.float32)
    td = TensorData.from_numpy(array)

    def timed(fn: Callable[[], object], repeat: int = 3) -> float:
        best = float("inf")
        for _ in range(repeat):  # best of a few: one run of a few ms is all noise otherwise
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        return best

    def proto() -> object:
        decoded = decode_tensor(encode_tensor(td))
        assert decoded.dense_shape == td.dense_shape
        return decoded

    def raw_numpy() -> object:
        return np.frombuffer(array.tobytes(), dtype=np.float32)

    def json_era() -> object:
        return tensor_data_from_json(json.loads(json.dumps(tensor_data_to_json(td))))

    measured = interleaved(lambda: timed(proto), lambda: timed(raw_numpy), settings.runs)
    name = "tensor codec: protobuf encode+decode / numpy bytes round trip"
    first = ratio_row(5, name, *measured, 2.0, True)
    measured = interleaved(lambda: timed(json_era, 1), lambda: timed(proto), settings.runs)
    name = "tensor codec: JSON-era encode+decode / protobuf"
    second = ratio_row(5, name, *measured, 20.0, False)
    for row in (first, second):
        row["elements"] = settings.codec_elements
    return [first, second]


# ----- row 6: scaling ---------------------------------------------------------------------------


def scaling(settings: Settings, http_url: str, server_pid: int) -> dict[str, Any]:
    """Aggregate throughput of N clients on separate models, and how much CPU it took.

    On a shared machine the raw speedup mostly measures how much CPU other work left free, so
    each run also records the CPU the server and the clients used and how busy the whole
    machine was: `efficiency` = steps per CPU-second of our processes, which is what the server
    itself controls (it falls if concurrency adds locking, spinning or serialisation);
    `idle_cores` = cores nobody used during the run; `free_cores` = cores that other work
    (anything but this server and these clients) left free, the ones N clients could use."""
    import os
    import sys

    workload = (settings.model, settings.datums, settings.tokens)
    most = max(settings.scaling_clients)
    workers = start_workers(
        [Worker(sys.executable, "tinker_ref", "http", http_url, *workload) for _ in range(most)]
    )
    cpus = os.cpu_count() or 1
    load_average = os.getloadavg()[0]
    steps = max(settings.steps, 3)
    counts = settings.scaling_clients
    throughput: dict[int, list[float]] = {n: [] for n in counts}
    efficiency: dict[int, list[float]] = {n: [] for n in counts}
    cores_used: dict[int, list[float]] = {n: [] for n in counts}
    machine_busy: dict[int, list[float]] = {n: [] for n in counts}
    idle_cores: dict[int, list[float]] = {n: [] for n in counts}
    free_cores: dict[int, list[float]] = {n: [] for n in counts}
    latencies: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for _ in range(settings.runs):  # interleaved: 1, 2, 4, 8, 1, 2, 4, 8, ...
            for n in counts:
                server_cpu = process_cpu_seconds(server_pid)
                busy_before, total_before = machine_busy_jiffies()
                started = time.perf_counter()
                for worker in workers[:n]:
                    worker.start("custom", steps)
                per_client = [worker.collect_all() for worker in workers[:n]]
                wall = time.perf_counter() - started
                busy_after, total_after = machine_busy_jiffies()
                cpu = process_cpu_seconds(server_pid) - server_cpu
                cpu += sum(sum(figures["cpu_seconds"]) for figures in per_client)
                busy = (busy_after - busy_before) / max(total_after - total_before, 1)
                throughput[n].append(n * steps / wall)
                efficiency[n].append(n * steps / cpu)
                cores_used[n].append(cpu / wall)
                machine_busy[n].append(busy)
                idle_cores[n].append(cpus * (1 - busy))
                # Other work's cores: the machine's busy cores less ours (never below zero:
                # the two counters are sampled at slightly different instants).
                free_cores[n].append(cpus - max(busy * cpus - cpu / wall, 0.0))
                latencies[n].extend(s for figures in per_client for s in figures["seconds"])
    finally:
        for worker in workers:
            worker.close()
    single = statistics.median(throughput[counts[0]])
    single_efficiency = statistics.median(efficiency[counts[0]])
    points: list[dict[str, Any]] = []
    for n in counts:
        p50, p99 = percentile(latencies[n], 0.5), percentile(latencies[n], 0.99)
        points.append(
            {
                "clients": n,
                "steps_per_second": Summary(throughput[n]).to_json(),
                "speedup": statistics.median(throughput[n]) / single,
                "efficiency_vs_one_client": statistics.median(efficiency[n]) / single_efficiency,
                "efficiency_vs_one_client_range": [
                    min(efficiency[n]) / single_efficiency,
                    max(efficiency[n]) / single_efficiency,
                ],
                "cores_used": statistics.median(cores_used[n]),
                "machine_busy": statistics.median(machine_busy[n]),
                "idle_cores": Summary(idle_cores[n]).to_json(),
                "free_cores": Summary(free_cores[n]).to_json(),
                "latency_p50": p50,
                "latency_p99": p99,
                "p99_over_p50": p99 / p50,
            }
        )
    clauses = scaling_clauses(points)
    return {
        "row": 6,
        "name": "scaling: aggregate steps/s with N clients / 1 client",
        "points": points,
        "cpus": cpus,
        "load_average_1": load_average,
        "target": "; ".join(clause["target"] for clause in clauses),
        "clauses": clauses,
        # A clause whose condition did not hold (met None) is not judged either way.
        "met": all(clause["met"] is not False for clause in clauses),
    }


def scaling_clauses(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scaling targets, each with its verdict: True, False, or None where the run could not
    judge it (no point at that count, or too few cores free of other work)."""
    by_clients = {p["clients"]: p for p in points}
    two = by_clients.get(2)

    def median_rate(n: int) -> float:
        rate: float = by_clients[n]["steps_per_second"]["median"]
        return rate

    more = [n for n in (4, 8) if n in by_clients]
    two_free = two["free_cores"]["median"] if two is not None else 0.0
    return [
        {
            "target": "steps/s at 4 and 8 clients >= at 2",
            "met": None
            if two is None or not more
            else all(median_rate(n) >= median_rate(2) for n in more),
        },
        {
            "target": "CPU efficiency >= 0.85 at every count",
            "met": all(p["efficiency_vs_one_client"] >= 0.85 for p in points),
        },
        {
            "target": ">= 1.6x at 2 clients when >= 1.8 cores are free of other work",
            "met": None if two is None or two_free < 1.8 else two["speedup"] >= 1.6,
            "free_cores_at_2": two_free,
        },
        {
            "target": "p99 <= 3 x p50",
            "met": all(p["p99_over_p50"] <= 3 for p in points),
        },
    ]


# ----- row 7: memory ----------------------------------------------------------------------------


def memory_after_small_models(server_pid: int) -> float:
    """The scaling run's server: it has loaded one small model per scaling client."""
    return peak_rss_mib(server_pid)


def memory_large_vocabulary(settings: Settings, http_url: str, server_pid: int) -> dict[str, Any]:
    """One `Qwen/Qwen3-8B`-vocabulary model running one big batch, on a fresh server."""
    import sys

    workload = (settings.memory_model, settings.memory_datums, settings.memory_tokens)
    worker = Worker(sys.executable, "tinker_ref", "http", http_url, *workload, warmup=False)
    start_workers([worker])
    try:
        seconds = worker.steps("builtin", 1)
    finally:
        worker.close()
    return {"peak_rss_mib": peak_rss_mib(server_pid), "step_seconds": seconds[0]}


# ----- row 8: start-up --------------------------------------------------------------------------


def startup(settings: Settings) -> list[dict[str, Any]]:
    """Wall time of the CLIs a user types, each over a bare `python -c pass` of the same
    interpreter, interleaved. The targets are absolute (seconds, on a quiet machine); the ratio
    says how much of it is the interpreter's own start-up on this machine."""
    import sys

    mock, conformance = (
        str(console_script("tinker-mock")),
        str(console_script("tinker-conformance")),
    )
    serve = [mock, "serve", "--port", "0", "--grpc-port", "0"]
    commands: dict[str, Callable[[], float]] = {
        "python -c pass": lambda: time_command([sys.executable, "-c", "pass"]),
        "serve": lambda: time_to_ready(serve),
        "help": lambda: time_command([mock, "--help"]),
        "models": lambda: time_command([mock, "models"]),
        "conformance help": lambda: time_command([conformance, "--help"]),
    }
    if settings.startup_warmup:
        for command in commands.values():  # the page cache, .pyc files
            command()
    measured = interleaved_many(commands, settings.runs)
    baseline = measured["python -c pass"]
    rows = [
        (
            "serve",
            "start-up: `tinker-mock serve --port 0 --grpc-port 0` to its ready line",
            0.5,
        ),
        ("help", "start-up: `tinker-mock --help`", 0.3),
        ("models", "start-up: `tinker-mock models`", 0.3),
        ("conformance help", "start-up: `tinker-conformance --help`", 0.3),
    ]
    return [
        {
            **ratio_row(
                8,
                f"{title} (s; ratio over `python -c pass`)",
                measured[key],
                baseline,
                measured.load,
                target,
                True,
                judged="a_median",
            ),
            "note": "target in seconds on a quiet machine; b = `python -c pass`",
        }
        for key, title, target in rows
    ]


# ----- row 9: sampling on a large vocabulary ----------------------------------------------------


def vocabulary_floor(model_name: str, tokens: int) -> Callable[[], float]:
    """Seconds per generated token of the work no sampler of a V-token vocabulary avoids, at
    the stand-in's width D (a base-model sampler: no LoRA rows), on one torch thread as the
    server's engine runs (`EngineConfig.intra_op_threads`): per token one (1, D) x (D, V)
    product for the logits, a softmax and a cumulative sum over V for the draw; per sequence
    one (T, D) x (D, V) product and a log-sum-exp over V for the sampled tokens' logprobs."""
    import torch

    from mock_server.engine.catalog import load_catalog

    spec = load_catalog()[model_name]
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(spec.d_model, spec.vocab_size, generator=generator)
    bias = torch.zeros(spec.vocab_size)
    hidden = torch.randn(tokens, spec.d_model, generator=generator)
    targets = torch.randint(spec.vocab_size, (tokens,), generator=generator)
    chunks = [slice(s, s + 16384) for s in range(0, spec.vocab_size, 16384)]

    def run() -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            started = time.perf_counter()
            with torch.no_grad():
                for t in range(tokens):
                    logits = torch.addmm(bias, hidden[t : t + 1], weight)[0]
                    cumulative = torch.softmax(logits, dim=0).cumsum(dim=0)
                    torch.searchsorted(cumulative, torch.rand((), generator=generator))
                # The sampled tokens' logits, and the normaliser over V chunk by chunk (each
                # chunk's logits stay in cache), as the server's projection computes them.
                picked = (hidden * weight.t()[targets]).sum(dim=1) + bias[targets]
                normaliser = torch.stack(
                    [
                        torch.logsumexp(torch.addmm(bias[cols], hidden, weight[:, cols]), dim=1)
                        for cols in chunks
                    ]
                ).logsumexp(dim=0)
                picked - normaliser
            return (time.perf_counter() - started) / tokens
        finally:
            torch.set_num_threads(threads)

    run()  # warm-up
    return run


def sampling_large_vocabulary(settings: Settings, http_url: str) -> dict[str, Any]:
    """Seconds per generated token of `sample` on a real-vocabulary stand-in over the same on
    `tinker-ref/tiny-bytes` (= tiny-bytes tokens/s over the stand-in's), interleaved, with the
    vocabulary floor (`vocabulary_floor`) measured alongside in this process."""
    import sys

    from mock_server.engine.catalog import load_catalog

    spec = load_catalog()[settings.sample_model]
    large, small = start_workers(
        [
            Worker(sys.executable, "tinker_ref", "http", http_url, model, 0, 0)
            for model in (settings.sample_model, settings.model)
        ]
    )
    samples, tokens = settings.sample_samples, settings.sample_tokens

    def per_token(worker: Worker) -> float:
        figures = worker.command("sample", 1, samples=samples, tokens=tokens)
        return sum(figures["seconds"]) / max(sum(figures["tokens"]), 1)

    try:
        per_token(large)  # warm-up: the sampling sessions, the models' first calls
        per_token(small)
        floor = vocabulary_floor(settings.sample_model, tokens)
        measured = interleaved_many(
            {"large": lambda: per_token(large), "small": lambda: per_token(small), "floor": floor},
            settings.runs,
        )
    finally:
        large.close()
        small.close()
    name = (
        f"sample throughput: tinker-ref/tiny-bytes tokens/s / {settings.sample_model} tokens/s "
        f"({samples} samples x {tokens} tokens)"
    )
    row = ratio_row(
        9, name, measured["large"], measured["small"], measured.load, 3.0, True, "s/token"
    )
    floor_per_token = measured["floor"].median
    large_per_token = measured["large"].median
    small_per_token = measured["small"].median
    row["floor"] = measured["floor"].to_json()
    # The ratio with the vocabulary floor taken out of the large model's time: what is left is
    # the vocabulary-independent work, which should cost about what tiny-bytes costs.
    row["ratio_above_floor"] = max(large_per_token - floor_per_token, 0.0) / small_per_token
    row["note"] = (
        f"raw ratio. Its floor, which tiny-bytes (V=259) barely pays: per token a (1, D+r) x "
        f"(D+r, V) output GEMV (V={spec.vocab_size}, D={spec.d_model}, r=0 for base weights), "
        f"a softmax and cumulative sum over V, plus a final logprob pass over the sequence: "
        f"{floor_per_token * 1e3:.3f} ms/token measured alongside, of "
        f"{large_per_token * 1e3:.3f} ms/token; above the floor the ratio is "
        f"{row['ratio_above_floor']:.2f}"
    )
    return row


# ----- row 10: fairness under abandonment -------------------------------------------------------


def fairness_under_abandonment(settings: Settings) -> dict[str, Any]:
    """A new session's first model (create_session + create_model + get_info, through a fresh
    tinker_ref ServiceClient) right after a killed client left `backlog_requests` sample
    requests queued, over the same on the idle server, interleaved. The server (its own, with
    `session_abandon_seconds` short so each backlog is cancelled before the next idle run) takes
    engine work by turns between sessions, so the new session should wait for about one sample,
    not for the backlog."""
    import sys

    argv = [sys.executable, "-m", "mock_server", "serve", "--port", "0", "--grpc-port", "-1"]
    argv += ["--session-abandon-seconds", str(settings.abandon_seconds)]
    with running_server(argv) as (url, _pid):
        (measurer,) = start_workers(
            [Worker(sys.executable, "tinker_ref", "http", url, settings.model, 0, 0)]
        )
        try:
            measurer.steps("fresh_model", 1)  # warm-up: the server's first model
            # Warm-up: the engine processes' first samples (their first run took over a second),
            # then the grace, so the first timed run meets no earlier backlog.
            queue_backlog(url, settings)
            time.sleep(settings.abandon_seconds + 1.2)
            measurer.steps("fresh_model", 1)

            def idle() -> float:
                # Past the grace, the untimed call's session creation sweeps: the last backlog's
                # queued samples are cancelled; the one running finishes meanwhile.
                time.sleep(settings.abandon_seconds + 1.2)
                measurer.steps("fresh_model", 1)
                time.sleep(0.3)
                return measurer.steps("fresh_model", 1)[0]

            def backlog() -> float:
                queue_backlog(url, settings)
                return measurer.steps("fresh_model", 1)[0]

            measured = interleaved(backlog, idle, settings.runs)
        finally:
            measurer.close()
    name = (
        f"fairness: a new session's create_lora_training_client + get_info with "
        f"{settings.backlog_requests} abandoned {settings.backlog_tokens}-token samples queued "
        f"/ on an idle server"
    )
    row = ratio_row(10, name, *measured, 2.0, True)
    row["backlog"] = {
        "requests": settings.backlog_requests,
        "tokens": settings.backlog_tokens,
        "session_abandon_seconds": settings.abandon_seconds,
    }
    return row


def queue_backlog(url: str, settings: Settings) -> None:
    """Start `backlog_client.py`, wait until the server has accepted its requests, kill it."""
    import subprocess
    import sys

    argv = [sys.executable, str(HERE / "backlog_client.py"), url, settings.model]
    argv += [str(settings.backlog_requests), str(settings.backlog_tokens)]
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        line = client.stdout.readline().strip()
        if line != "queued":
            raise RuntimeError(f"the backlog client failed (said {line!r})")
    finally:
        client.kill()  # SIGKILL: no goodbye reaches the server
        client.wait(5)
        if client.stdout is not None:
            client.stdout.close()
