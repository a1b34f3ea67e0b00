"""Engine processes (mock_server/engine/processes.py) give the in-process engine's results, bit
for bit, raise its errors, free what the service lets go, and never outlive the server.

The reference is the in-process `Engine` (itself checked against direct autograd elsewhere):
the same calls go to both, and every tensor and number that comes back must be equal.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mock_server import cli
from mock_server.engine import (
    AdamConfig,
    Checkpoint,
    DatumInput,
    Engine,
    EngineConfig,
    InvalidInputError,
    LoraConfig,
    SampleSpec,
    UnknownBaseModelError,
)
from mock_server.engine.custom_loss.compiler import compile_custom_loss
from mock_server.engine.processes import ENGINE_NICENESS, EngineProcesses
from mock_server.engine.slices import Unfinished
from mock_server.service.pool import available_cores
from tests.support.engine_data import same_bits
from tests.support.mock_process import running_mock_server
from tinker_ref.loss_handle import encode_graph, trace_loss

MODEL = "tinker-ref/tiny-bytes"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Engine, EngineProcesses]]:
    processes = EngineProcesses(EngineConfig(seed=7), count=2)
    try:
        yield Engine(EngineConfig(seed=7)), processes
    finally:
        processes.close()


def _data(seed: int) -> list[DatumInput]:
    generator = torch.Generator().manual_seed(seed)
    data = []
    for length in (3, 11, 6):
        tokens = torch.randint(0, 259, (length,), generator=generator)
        inputs = {
            "target_tokens": torch.randint(0, 259, (length,), generator=generator),
            "weights": torch.rand(length, generator=generator),
            "logprobs": -torch.rand(length, generator=generator),
            "advantages": torch.randn(length, generator=generator),
        }
        data.append(DatumInput(tokens, inputs))
    return data


def _only(data: list[DatumInput], *keys: str) -> list[DatumInput]:
    """The data with only these loss_fn_inputs (and target_tokens): what the loss takes."""
    keep = {"target_tokens", *keys}
    return [
        DatumInput(d.tokens, {k: v for k, v in d.loss_fn_inputs.items() if k in keep}) for d in data
    ]


def _weighted(logprobs: torch.Tensor, weights: torch.Tensor) -> Any:
    loss = -(logprobs * weights).sum()
    return loss, {"custom/nll:sum": loss}


def _uploaded_loss() -> Any:
    handle = trace_loss(_weighted, {"logprobs": 1, "weights": 1}, "session")
    inputs = [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}]
    return compile_custom_loss("weighted", inputs, encode_graph(handle).to_json()).as_datum_loss()


@pytest.mark.spec("DET-1")
def test_a_training_run_gives_the_same_bits_in_engine_processes(
    engines: tuple[Engine, EngineProcesses],
) -> None:
    lora = LoraConfig(rank=4)
    models = [engine.create_model(MODEL, lora, None, "model-a") for engine in engines]
    custom = _uploaded_loss()
    adam = AdamConfig(learning_rate=1e-2, weight_decay=0.01, grad_clip_norm=1.0)
    for step in range(3):
        data = _data(step)
        results = [
            [
                model.forward_backward(_only(data, "weights"), "cross_entropy", forward_only=True),
                model.forward_backward(
                    _only(data, "logprobs", "advantages"), "ppo", {"clip_low_threshold": 0.8}
                ),
                model.forward_backward_per_datum(_only(data, "weights"), custom),
                model.has_gradient(),
                model.optim_step(adam),
                model.digest(include_optimizer=True),
            ]
            for model in models
        ]
        assert same_bits(results[0], results[1]), f"step {step}"
    local, remote = models
    assert same_bits(local.weights(), remote.weights())
    assert same_bits(local.optimizer_state(), remote.optimizer_state())
    assert (remote.base.spec.name, remote.lora, remote.lora_seed) == (
        MODEL,
        lora,
        local.lora_seed,
    )

    # A checkpoint's weights and Adam state, loaded into a new model and into an existing one.
    checkpoint = Checkpoint(MODEL, lora, 11, local.weights(), local.optimizer_state())
    restored = [engine.model_from_checkpoint(checkpoint) for engine in engines]
    assert same_bits(*(model.digest(include_optimizer=True) for model in restored))
    for model in restored:
        model.load(checkpoint.weights, None)
    assert same_bits(*(model.optim_step(adam) for model in restored))
    assert same_bits(*(model.weights() for model in restored))


@pytest.mark.spec("DET-1")
def test_sampling_gives_the_same_tokens_and_logprobs_in_engine_processes(
    engines: tuple[Engine, EngineProcesses],
) -> None:
    weights = engines[0].create_model(MODEL, LoraConfig(rank=2), 5, "sampler").weights()
    spec = SampleSpec(
        prompt=torch.tensor([3, 1, 4, 1, 5]),
        seed=9,
        num_samples=3,
        max_tokens=12,
        top_p=0.9,
        prompt_logprobs=True,
        topk_prompt_logprobs=2,
        topk_sample_logprobs=2,
        stop_strings=("zz",),
    )
    for adapter in (weights, {}):  # a trained snapshot and the base model
        results = [engine.sample(MODEL, adapter, spec) for engine in engines]
        assert same_bits(results[0], results[1])


def test_errors_come_back_with_their_class_field_and_message(
    engines: tuple[Engine, EngineProcesses],
) -> None:
    local, remote = (engine.create_model(MODEL, LoraConfig(rank=2), 1, "e") for engine in engines)
    bad = [DatumInput(torch.tensor([999]), {"target_tokens": torch.tensor([1])})]
    caught = []
    for model in (local, remote):
        with pytest.raises(InvalidInputError) as error:
            model.forward_backward(bad, "cross_entropy")
        caught.append((type(error.value), error.value.field, error.value.message, str(error.value)))
    assert caught[0] == caught[1]
    with pytest.raises(UnknownBaseModelError, match=r"unknown base model 'no/such'"):
        engines[1].create_model("no/such", LoraConfig(), None, "x")
    with pytest.raises(InvalidInputError, match=r"lora_config\.rank"):
        engines[1].create_model(MODEL, LoraConfig(rank=0), None, "x")
    # The process is still serving after each error.
    assert remote.has_gradient() is False


def test_models_are_placed_on_the_least_loaded_process_and_freed_with_their_handle() -> None:
    processes = EngineProcesses(EngineConfig(seed=0), count=2)
    try:
        models = [processes.create_model(MODEL, LoraConfig(rank=2), i, f"m{i}") for i in range(4)]
        counts = [process.models for process in processes._processes]
        assert counts == [2, 2]
        del models[:3]
        gc.collect()
        assert sum(process.models for process in processes._processes) == 1
        # The next call to a process drops the models freed there; the survivor still trains.
        assert processes.models_held() == [0, 1]
        assert models[0].optim_step(AdamConfig()) == {
            "optimizer_step:sum": 0.0,
            "grad_norm:max": 0.0,
        }
    finally:
        processes.close()
    for pid in processes.pids():
        assert not _alive(pid), f"engine process {pid} outlived close()"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; its parent just has not reaped it yet


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def test_engine_processes_exit_when_the_server_is_killed() -> None:
    with running_mock_server("--engine-processes", "2", "--grpc-port", "-1") as server:
        server.wait_loaded()
        children = _children(server.process.pid)
        assert len(children) == 2, children
        os.kill(server.process.pid, signal.SIGKILL)  # no shutdown code runs
        server.process.wait(10)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in children), "engine processes outlived the server"


def test_the_cli_runs_one_engine_process_per_core_from_two_cores_on() -> None:
    parse = cli.build_parser().parse_args
    cores = available_cores()
    assert cli.config_from_args(parse(["serve"])).engine_processes == (cores if cores > 1 else 0)
    assert cli.config_from_args(parse(["serve", "--engine-processes", "0"])).engine_processes == 0
    assert cli.config_from_args(parse(["serve", "--engine-processes", "3"])).engine_processes == 3
    assert cli.main(["serve", "--port", "0", "--engine-processes", "-1"]) == 2


@pytest.mark.spec("DET-1")
def test_the_reference_passes_every_conformance_case_with_engine_processes(
    tmp_path: Path,
) -> None:
    adapter = (
        f"{sys.executable} {REPO_ROOT / 'conformance/adapters/python/adapter.py'} --sdk tinker_ref"
    )
    features = REPO_ROOT / "conformance/adapters/tinker_ref.features.json"
    args = ["run", "--adapter", adapter, "--features", str(features), "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "conformance", *args, "--engine-processes", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    cases = len(list((REPO_ROOT / "conformance/cases/v1").glob("*.json")))
    assert result.stdout.strip().splitlines()[-1].startswith(f"{cases} passed, 0 failed")


def _finish(value: Any) -> tuple[Any, int]:
    """Resume a sliced sample to its end: (result, how many slices it took)."""
    slices = 1
    while isinstance(value, Unfinished):
        value, slices = value.resume(), slices + 1
    return value, slices


@pytest.mark.spec("DET-1")
def test_a_sample_cut_into_one_token_slices_is_the_same_sample(
    engines: tuple[Engine, EngineProcesses],
) -> None:
    spec = SampleSpec(prompt=torch.tensor([7, 8]), seed=3, num_samples=2, max_tokens=5)
    whole = engines[0].sample(MODEL, {}, spec)
    for engine in engines:
        result, slices = _finish(engine.sample_sliced(MODEL, {}, spec, 0.0))
        assert same_bits(result, whole)
        assert slices == 2 * 5 + 1  # a pause after every token, then the end
    # A paused sample let go in its process: the process forgets it, and serves on.
    paused = engines[1].sample_sliced(MODEL, {}, spec, 0.0)
    assert isinstance(paused, Unfinished) and paused.affinity is not None
    paused.drop()
    assert same_bits(_finish(engines[1].sample_sliced(MODEL, {}, spec, 0.0))[0], whole)
    with pytest.raises(KeyError):
        paused.resume()


@pytest.mark.spec("DET-1")
def test_a_preempted_sample_pauses_at_once_and_is_still_the_same_sample(
    engines: tuple[Engine, EngineProcesses],
) -> None:
    spec = SampleSpec(prompt=torch.tensor([1, 2]), seed=5, num_samples=3, max_tokens=40)
    whole = engines[0].sample(MODEL, {}, spec)
    for engine in engines:
        paused: list[Any] = []

        def worker(engine: Engine | EngineProcesses = engine, paused: list[Any] = paused) -> None:
            engine.bind_worker(0)  # as the pool's worker 0
            engine.preempt(0)  # another session waits for this worker
            paused.append(engine.sample_sliced(MODEL, {}, spec, slice_seconds=60.0))

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(60)
        # Without the request the 60 s slice would have run all 120 tokens in one go.
        assert isinstance(paused[0], Unfinished), type(engine).__name__
        result, slices = _finish(paused[0])
        assert slices == 2 and same_bits(result, whole)


def test_engine_processes_run_below_the_servers_priority(
    engines: tuple[Engine, EngineProcesses],
) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for pid in engines[1].pids():
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(own + ENGINE_NICENESS, 19)
