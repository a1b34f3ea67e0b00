"""The seven measurements of the benchmark table (issue: "Benchmarks: side-by-side speed and
memory, with targets"). Each returns a JSON-able dict with its ratio(s), target and raw samples.

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
    Summary,
    Worker,
    interleaved,
    machine_busy_jiffies,
    peak_rss_mib,
    percentile,
    process_cpu_seconds,
    start_workers,
)


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
        )


def ratio_row(
    row: int,
    name: str,
    a: Summary,
    b: Summary,
    target: float,
    at_most: bool,
    unit: str = "s",
) -> dict[str, Any]:
    ratio = a.median / b.median
    return {
        "row": row,
        "name": name,
        "ratio": ratio,
        "target": f"{'<=' if at_most else '>='} {target}",
        "met": ratio <= target if at_most else ratio >= target,
        "a": a.to_json(),
        "b": b.to_json(),
        "unit": unit,
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
    settings: Settings, http_url: str, workload: tuple[str, int, int], label: str, target: float
) -> dict[str, Any]:
    import sys

    (worker,) = start_workers([Worker(sys.executable, "tinker_ref", "http", http_url, *workload)])
    try:
        direct = in_process_step(*workload)
        steps = settings.steps
        a, b = interleaved(
            lambda: worker.mean_step("custom", steps),
            lambda: statistics.fmean(direct() for _ in range(steps)),
            settings.runs,
        )
    finally:
        worker.close()
    name = f"server overhead ({label}): HTTP step / in-process engine"
    row = ratio_row(3, name, a, b, target, True)
    row["workload"] = {"model": workload[0], "datums": workload[1], "tokens": workload[2]}
    row["in_process_step_ms"] = b.median * 1000
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

    a, b = interleaved(lambda: timed(proto), lambda: timed(raw_numpy), settings.runs)
    name = "tensor codec: protobuf encode+decode / numpy bytes round trip"
    first = ratio_row(5, name, a, b, 2.0, True)
    a, b = interleaved(lambda: timed(json_era, 1), lambda: timed(proto), settings.runs)
    second = ratio_row(5, "tensor codec: JSON-era encode+decode / protobuf", a, b, 20.0, False)
    for row in (first, second):
        row["elements"] = settings.codec_elements
    return [first, second]


# ----- row 6: scaling ---------------------------------------------------------------------------


def scaling(settings: Settings, http_url: str, server_pid: int) -> dict[str, Any]:
    """Aggregate throughput of N clients on separate models, and how much CPU it took.

    On a shared machine the raw speedup mostly measures how much CPU other work left free, so
    each run also records the CPU the server and the clients used and how busy the whole
    machine was: `efficiency` = steps per CPU-second of our processes, which is what the server
    itself controls (it falls if concurrency adds locking, spinning or serialisation)."""
    import os
    import sys

    workload = (settings.model, settings.datums, settings.tokens)
    most = max(settings.scaling_clients)
    workers = start_workers(
        [Worker(sys.executable, "tinker_ref", "http", http_url, *workload) for _ in range(most)]
    )
    steps = max(settings.steps, 3)
    throughput: dict[int, list[float]] = {n: [] for n in settings.scaling_clients}
    efficiency: dict[int, list[float]] = {n: [] for n in settings.scaling_clients}
    cores_used: dict[int, list[float]] = {n: [] for n in settings.scaling_clients}
    machine_busy: dict[int, list[float]] = {n: [] for n in settings.scaling_clients}
    latencies: dict[int, list[float]] = {n: [] for n in settings.scaling_clients}
    try:
        for _ in range(settings.runs):  # interleaved: 1, 2, 4, 8, 1, 2, 4, 8, ...
            for n in settings.scaling_clients:
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
                throughput[n].append(n * steps / wall)
                efficiency[n].append(n * steps / cpu)
                cores_used[n].append(cpu / wall)
                machine_busy[n].append(
                    (busy_after - busy_before) / max(total_after - total_before, 1)
                )
                latencies[n].extend(s for figures in per_client for s in figures["seconds"])
    finally:
        for worker in workers:
            worker.close()
    first = settings.scaling_clients[0]
    single = statistics.median(throughput[first])
    single_efficiency = statistics.median(efficiency[first])
    points: list[dict[str, Any]] = []
    for n in settings.scaling_clients:
        p50, p99 = percentile(latencies[n], 0.5), percentile(latencies[n], 0.99)
        points.append(
            {
                "clients": n,
                "steps_per_second": Summary(throughput[n]).to_json(),
                "speedup": statistics.median(throughput[n]) / single,
                "efficiency_vs_one_client": statistics.median(efficiency[n]) / single_efficiency,
                "cores_used": statistics.median(cores_used[n]),
                "machine_busy": statistics.median(machine_busy[n]),
                "latency_p50": p50,
                "latency_p99": p99,
                "p99_over_p50": p99 / p50,
            }
        )
    two = next((p for p in points if p["clients"] == 2), None)
    return {
        "row": 6,
        "name": "scaling: aggregate steps/s with N clients / 1 client",
        "points": points,
        "cpus": os.cpu_count(),
        "target": ">= 1.6 at 2 clients; p99 <= 3 x p50",
        "met": two is not None
        and two["speedup"] >= 1.6
        and all(p["p99_over_p50"] <= 3 for p in points),
    }


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
