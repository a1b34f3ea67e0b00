"""Engine work in worker processes: throughput that grows with cores instead of the GIL.

A tiny model's step is mostly Python and torch dispatch, which hold the GIL: two engine
threads in one process reach about 1.3x one thread's steps/s on 2 cores, two processes 1.85x
(measured side by side; `make bench` row 6). So `EngineProcesses` runs N child processes, each
with its own `Engine`, and keeps the in-process `Engine`'s interface:

* **One feeder per process.** The service's pool has one worker thread per process
  (`bind_worker`: worker `i` feeds process `i`), so no thread ever waits for a busy process
  while another process idles, and the pool's turns between sessions decide what runs next.
* **Per-model affinity.** A model lives in one process for its whole life (`placement()`: the
  one with the fewest models, counting those being created); the service holds a
  `RemoteModel`, whose methods are calls into that process, and queues its ops for that
  process's worker (`affinity`). A model's ops never overlap anyway (the sequencer runs them
  one at a time), so affinity costs no parallelism that ordering allows.
* **Sampling** runs in the process of whichever worker is free first; the sampler's weights
  travel with each call (LoRA adapters: kilobytes to a few MiB).
* **Same bits.** Every process builds the same base weights from the server seed, pins torch
  to one intra-op thread, and runs the same code; where an op runs does not change its result
  (tests/integration/test_engine_processes.py compares against the in-process engine).
* **Calls are blocking** (the service's pool threads make them, `service/pool.py`) and a
  process serves one call at a time; waiting on the pipe releases the GIL.

Messages use `ipc.py` (no pickle). A child exits when its pipe closes, so a killed server
leaves none behind. The processes start side by side; the constructor returns once each
answers (about one `import torch`: the CLI server holds requests meanwhile, `startup.py`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from torch import Tensor

from mock_server.engine import ipc
from mock_server.engine.catalog import ModelSpec, get_spec, load_catalog
from mock_server.engine.checkpoint import Checkpoint
from mock_server.engine.custom_loss.interpreter import CompiledCustomLoss, CustomLossSource
from mock_server.engine.engine import Engine, EngineConfig
from mock_server.engine.losses import ConfigValue
from mock_server.engine.model import Adapter, LoraConfig
from mock_server.engine.sampling import SampleResult, SampleSpec
from mock_server.engine.slices import Unfinished
from mock_server.engine.training import (
    AdamConfig,
    DatumInput,
    DatumLoss,
    ForwardBackwardResult,
    OptimizerState,
    TrainingModel,
)


class EngineProcessDied(RuntimeError):
    """An engine process exited; the models it held are gone."""


@dataclass(frozen=True)
class BaseInfo:
    """What the service reads of a remote model's base (`TrainingModel.base.spec`)."""

    spec: ModelSpec


class _Process:
    """One child process and the socket to it; one call at a time."""

    def __init__(self, config: EngineConfig, index: int) -> None:
        self.index = index
        self.models = 0  # live models placed here (affinity)
        # Models `placement()` chose this process for, not yet created (a heuristic: one whose
        # creation is cancelled before it runs stays counted until the next creation here).
        self.placed = 0
        self.busy = 0  # calls in progress or waiting for the pipe (sampling placement)
        # Requests that free state here (["drop", model handle] for models the service let go,
        # see `_release`; ["sample_drop", key] for paused samples it gave up on), sent before
        # the next call: they may be noted while a call holds the lock.
        self.released: list[list[Any]] = []
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair()
        # A second socket, one way: "pause your sliced work" (`preempt`), read between tokens.
        self._preempt, their_preempt = socket.socketpair()
        self._preempt.setblocking(False)
        # A plain interpreter running this module (not multiprocessing's spawn, which would
        # re-import the parent's __main__: a user's script, pytest).
        fds = [theirs.fileno(), their_preempt.fileno()]
        argv = [sys.executable, "-m", __name__, *map(str, fds), str(config.seed)]
        argv.append(str(config.intra_op_threads or 0))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_SOURCE_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        self._process = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        their_preempt.close()
        self._conn = Connection(ours.detach())

    @property
    def pid(self) -> int:
        return self._process.pid

    def preempt(self) -> None:
        """Ask the sliced work running here to pause at its next step (never blocks)."""
        with contextlib.suppress(OSError):  # full (a request is pending anyway) or closed
            self._preempt.send(b"!")

    def call(self, request: list[Any]) -> Any:
        self.busy += 1
        try:
            with self._lock:
                try:
                    while self.released:
                        ipc.send(self._conn, self.released.pop())
                        ipc.receive(self._conn)
                    ipc.send(self._conn, request)
                    reply = ipc.receive(self._conn)
                except (EOFError, OSError) as exc:
                    raise EngineProcessDied(
                        f"engine process {self.index} exited (code {self._process.poll()})"
                    ) from exc
        finally:
            self.busy -= 1
        if isinstance(reply, dict) and "error" in reply:
            ipc.raise_error(reply)
        return reply

    def close(self) -> None:
        with self._lock:
            self._conn.close()  # the child's receive ends: it exits
            self._preempt.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)


class EngineProcesses:
    """`Engine`'s interface over `count` engine processes."""

    def __init__(self, config: EngineConfig | None = None, count: int = 2) -> None:
        if count < 1:
            raise ValueError(f"engine processes: need at least 1, got {count}")
        self.config = config or EngineConfig()
        self._bound = threading.local()  # .process: the one this thread feeds (bind_worker)
        self._processes = [_Process(self.config, i) for i in range(count)]
        for process in self._processes:  # they start side by side; each says when it is ready
            process.call(["ping"])
        self._handles = itertools.count(1)
        self._placement = threading.Lock()

    @property
    def count(self) -> int:
        return len(self._processes)

    def models_held(self) -> list[int]:
        """How many models each process holds now (models the service let go are dropped
        first)."""
        return [process.call(["ping"]) for process in self._processes]

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    @staticmethod
    def catalog() -> list[ModelSpec]:
        return list(load_catalog().values())

    def bind_worker(self, worker: int) -> None:
        """Make the calling thread feed process `worker` (mod the count): `EnginePool`'s `bind`.
        Samples and new models from this thread then run there."""
        self._bound.process = self._processes[worker % len(self._processes)]

    def preempt(self, worker: int) -> None:
        """`EnginePool`'s `preempt`: sliced work in process `worker` pauses at its next step."""
        self._processes[worker % len(self._processes)].preempt()

    def placement(self) -> int:
        """The process a new model should live in: the fewest models, counting those placed
        but not yet created. Queue its creation for that process's worker."""
        with self._placement:
            process = min(self._processes, key=lambda p: (p.models + p.placed, p.index))
            process.placed += 1
            return process.index

    def affinity(self, model: object) -> int | None:
        """The worker that must run ops on `model` (its process), None for any."""
        return model._process.index if isinstance(model, RemoteModel) else None

    def create_model(
        self, base_model: str, lora: LoraConfig, lora_seed: int | None, model_key: str
    ) -> RemoteModel:
        get_spec(base_model)  # UnknownBaseModelError here, as the in-process engine raises it
        return self._place(["create", base_model, lora, lora_seed, model_key])

    def model_from_checkpoint(self, checkpoint: Checkpoint) -> RemoteModel:
        return self._place(["from_checkpoint", checkpoint])

    def sample(self, base_model: str, weights: Adapter, spec: SampleSpec) -> SampleResult:
        process = self._fed_or(lambda p: (p.busy, p.index))
        result: SampleResult = process.call(["sample", base_model, dict(weights), spec])
        return result

    def sample_sliced(
        self, base_model: str, weights: Adapter, spec: SampleSpec, slice_seconds: float
    ) -> SampleResult | Unfinished[SampleResult]:
        """`Engine.sample_sliced` in an engine process: a paused sample waits there, so its next
        slice must run on that process's worker (`Unfinished.affinity`)."""
        process = self._fed_or(lambda p: (p.busy, p.index))
        request = ["sample_sliced", base_model, dict(weights), spec, slice_seconds]
        return self._slice(process, process.call(request), slice_seconds)

    def _slice(
        self, process: _Process, reply: Any, slice_seconds: float
    ) -> SampleResult | Unfinished[SampleResult]:
        if not isinstance(reply, dict):
            result: SampleResult = reply
            return result
        key = reply["paused"]
        return Unfinished(
            lambda: self._slice(
                process, process.call(["sample_resume", key, slice_seconds]), slice_seconds
            ),
            process.index,
            lambda: process.released.append(["sample_drop", key]),
        )

    def close(self) -> None:
        for process in self._processes:
            process.close()

    def _fed_or(self, rank: Callable[[_Process], tuple[int, int]]) -> _Process:
        """The process this thread feeds (a pool worker's), else the lowest-ranked one."""
        bound: _Process | None = getattr(self._bound, "process", None)
        return bound or min(self._processes, key=rank)

    def _place(self, request: list[Any]) -> RemoteModel:
        with self._placement:
            process = self._fed_or(lambda p: (p.models + p.placed, p.index))
            process.placed = max(process.placed - 1, 0)  # placement() reserved it
            process.models += 1
        handle = next(self._handles)
        try:
            base_model, lora, lora_seed = process.call([request[0], handle, *request[1:]])
        except BaseException:
            process.models -= 1
            raise
        return RemoteModel(process, handle, get_spec(base_model), lora, lora_seed)


class RemoteModel:
    """A `TrainingModel` that lives in an engine process: the same methods, as calls."""

    def __init__(
        self, process: _Process, handle: int, spec: ModelSpec, lora: LoraConfig, lora_seed: int
    ) -> None:
        self.base = BaseInfo(spec)
        self.lora = lora
        self.lora_seed = lora_seed
        self._process = process
        self._handle = handle
        # Freed with its handle: the process drops the model, and its place counts no more.
        weakref.finalize(self, _release, process, handle)

    @property
    def vocab_size(self) -> int:
        return self.base.spec.vocab_size

    def forward_backward(
        self,
        data: Sequence[DatumInput],
        loss_fn: str,
        loss_fn_config: Mapping[str, ConfigValue] | None = None,
        forward_only: bool = False,
    ) -> ForwardBackwardResult:
        args = (list(data), loss_fn, loss_fn_config, forward_only)
        result: ForwardBackwardResult = self._call("forward_backward", *args)
        return result

    def forward_backward_per_datum(
        self, data: Sequence[DatumInput], datum_loss: DatumLoss, forward_only: bool = False
    ) -> ForwardBackwardResult:
        loss = getattr(datum_loss, "__self__", None)
        if not isinstance(loss, CompiledCustomLoss) or loss.source is None:
            raise TypeError("an engine process runs only uploaded custom losses per datum")
        args = (list(data), loss.source, forward_only)
        result: ForwardBackwardResult = self._call("forward_backward_custom", *args)
        return result

    def has_gradient(self) -> bool:
        result: bool = self._call("has_gradient")
        return result

    def optim_step(self, adam: AdamConfig) -> dict[str, float]:
        metrics: dict[str, float] = self._call("optim_step", adam)
        return metrics

    def weights(self) -> Adapter:
        weights: Adapter = self._call("weights")
        return weights

    def optimizer_state(self) -> OptimizerState:
        state: OptimizerState = self._call("optimizer_state")
        return state

    def load(self, weights: Mapping[str, Tensor], optimizer: OptimizerState | None) -> None:
        self._call("load", dict(weights), optimizer)

    def digest(self, include_optimizer: bool = False) -> str:
        result: str = self._call("digest", include_optimizer)
        return result

    def _call(self, method: str, *args: object) -> Any:
        return self._process.call(["call", self._handle, method, *args])


def _release(process: _Process, handle: int) -> None:
    # Runs whenever the garbage collector frees a RemoteModel, possibly inside a call on this
    # very process (its lock held): so it only notes the handle, and the next call drops it.
    process.models -= 1
    process.released.append(["drop", handle])


# ----- the child ------------------------------------------------------------------------------


@dataclass
class _State:
    """What an engine process holds."""

    engine: Engine
    preempted: Callable[[], bool]  # whether the server asked sliced work to pause
    models: dict[int, TrainingModel] = field(default_factory=dict)
    losses: dict[str, DatumLoss] = field(default_factory=dict)  # compiled, by their source
    paused: dict[int, Unfinished[SampleResult]] = field(default_factory=dict)  # samples
    next_paused: int = 0


def _serve(
    conn: Connection, preempt: socket.socket, seed: int, intra_op_threads: int | None
) -> None:
    """An engine process: answer calls until the socket closes."""
    # Below the server's own priority: when engine work fills every core, the front end (and a
    # client on the same machine) still gets a core at once to accept and queue new requests;
    # nothing else competes, so the engine loses no throughput.
    with contextlib.suppress(OSError):
        os.nice(ENGINE_NICENESS)
    preempt.setblocking(False)

    def preempted() -> bool:  # one non-blocking read per generated token
        try:
            return bool(preempt.recv(4096))
        except BlockingIOError:
            return False

    state = _State(Engine(EngineConfig(seed=seed, intra_op_threads=intra_op_threads)), preempted)
    while True:
        try:
            request = ipc.receive(conn)
        except (EOFError, OSError):
            return
        try:
            reply = _answer(state, request)
        except Exception as exc:  # the caller raises it; this process goes on
            reply = ipc.error_message(exc)
        try:
            ipc.send(conn, reply)
        except TypeError as exc:  # an error attribute the format cannot carry
            ipc.send(conn, ipc.error_message(RuntimeError(str(exc))))
        except OSError:  # the server is gone
            return


def _answer(state: _State, request: list[Any]) -> Any:
    engine, models, losses = state.engine, state.models, state.losses
    kind = request[0]
    if kind == "call":
        _, handle, method, *args = request
        model = models[handle]
        if method == "forward_backward_custom":
            data, source, forward_only = args
            return model.forward_backward_per_datum(data, _loss(losses, source), forward_only)
        bound: Callable[..., Any] = getattr(model, _METHODS[method])
        return bound(*args)
    if kind == "sample":
        _, base_model, weights, spec = request
        return engine.sample(base_model, weights, spec)
    if kind in ("sample_sliced", "sample_resume"):
        if kind == "sample_sliced":
            _, base_model, weights, spec, seconds = request
            value = engine.sample_sliced(base_model, weights, spec, seconds, state.preempted)
        else:
            value = state.paused.pop(request[1]).resume()
        if not isinstance(value, Unfinished):
            return value
        state.next_paused += 1
        state.paused[state.next_paused] = value
        return {"paused": state.next_paused}
    if kind == "sample_drop":
        paused = state.paused.pop(request[1], None)
        if paused is not None:
            paused.drop()
        return None
    if kind in ("create", "from_checkpoint"):
        handle = request[1]
        if kind == "create":
            model = engine.create_model(*request[2:])
        else:
            model = engine.model_from_checkpoint(request[2])
        models[handle] = model
        return [model.base.spec.name, model.lora, model.lora_seed]
    if kind == "drop":
        models.pop(request[1], None)
        return None
    if kind == "ping":  # ready (sent first), and how many models it holds
        return len(models)
    raise ValueError(f"unknown engine request {kind!r}")


# What a RemoteModel may call by name (nothing else of a model is reachable from a message).
_METHODS = {
    name: name
    for name in (
        "forward_backward",
        "has_gradient",
        "optim_step",
        "weights",
        "optimizer_state",
        "load",
        "digest",
    )
}


def _loss(losses: dict[str, DatumLoss], source: CustomLossSource) -> DatumLoss:
    from mock_server.engine.custom_loss.compiler import compile_custom_loss

    # The graph is JSON as uploaded; the limits a dataclass of numbers.
    key = json.dumps([source.name, source.inputs, source.graph, repr(source.limits)])
    loss = losses.pop(key, None)
    if loss is None:
        compiled = compile_custom_loss(source.name, source.inputs, source.graph, source.limits)
        loss = compiled.as_datum_loss()
    losses[key] = loss  # most recently used last
    while len(losses) > _COMPILED_LOSSES_KEPT:
        del losses[next(iter(losses))]
    return loss


_COMPILED_LOSSES_KEPT = 64


ENGINE_NICENESS = 5  # added to an engine process's nice value (lower priority)
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding mock_server/

if __name__ == "__main__":
    fd, preempt_fd, seed, threads = (int(arg) for arg in sys.argv[1:5])
    _serve(Connection(fd), socket.socket(fileno=preempt_fd), seed, threads or None)
