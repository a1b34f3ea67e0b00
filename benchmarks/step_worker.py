"""A benchmark client process: one training client, timed steps on command.

    python step_worker.py official|tinker_ref http|grpc ADDRESS MODEL DATUMS TOKENS [WARMUP]

Runs inside the official SDK's virtualenv as well as ours, so it imports nothing from this
repository; the two clients differ only in the import. At start it creates a LoRA training
client and a deterministic batch (DATUMS x TOKENS byte tokens), warms up (by default one step
of each op; WARMUP=0 skips it, for the memory run whose steps take long), then prints `ready`.
DATUMS=0 makes no training client (a worker for the "sample" and "fresh_model" ops only).
Each stdin line `{"op": "custom"|"builtin", "steps": N}` runs N steps and prints
`{"seconds": [...], "cpu_seconds": [...]}`: per step, wall-clock time and this client process's
CPU time (all threads: the cost of the client itself, whatever the server takes). A step is
`forward_backward_custom` with a mean-NLL loss (op "custom") or `forward_backward` with
`cross_entropy` weights 1/N (op "builtin"), each followed by `optim_step`; both compute the same
gradient. Two more ops:

- `{"op": "sample", "steps": N, "samples": S, "tokens": T}`: N calls of `sample` (S samples of
  up to T tokens each, temperature 1, a fixed seed per call) on a sampling client of MODEL's
  base weights; the answer also has `"tokens"`: the tokens generated per call (a sequence ends
  early when it draws the end-of-sequence token).
- `{"op": "fresh_model", "steps": N}`: N times, a new ServiceClient (so a new session) creates
  a LoRA training client of MODEL and calls `get_info`; timed from the first call to the
  answer (create_session + create_model + get_info), then the client is closed.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import torch


def mean_nll(data: Any, logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    flat = torch.cat(logprobs)
    return -flat.mean(), {"tokens": float(flat.numel())}


def main(
    sdk: str, transport: str, address: str, model: str, datums: int, tokens: int, warmup: bool
) -> None:
    if sdk == "official":
        import tinker  # type: ignore[import-not-found]  # only in the official SDK's venv

        service = tinker.ServiceClient(base_url=address, api_key="tml-bench")
    else:
        import tinker_ref as tinker  # type: ignore[no-redef]

        service = tinker.ServiceClient(base_url=address, api_key="tml-bench", transport=transport)
    types = tinker.types

    def new_service() -> Any:
        if sdk == "official":
            return tinker.ServiceClient(base_url=address, api_key="tml-bench")
        return tinker.ServiceClient(base_url=address, api_key="tml-bench", transport=transport)

    rng = random.Random(0)
    batch = []
    builtin = []
    for _ in range(datums):
        ids = [rng.randrange(256) for _ in range(tokens + 1)]
        model_input = types.ModelInput.from_ints(ids[:-1])
        ones = {"target_tokens": ids[1:], "weights": [1.0] * tokens}
        batch.append(types.Datum(model_input=model_input, loss_fn_inputs=ones))
        mean = {"target_tokens": ids[1:], "weights": [1.0 / (datums * tokens)] * tokens}
        builtin.append(types.Datum(model_input=model_input, loss_fn_inputs=mean))
    training = (
        service.create_lora_training_client(base_model=model, rank=8, seed=0).result()
        if datums
        else None
    )
    adam = types.AdamParams(learning_rate=1e-4)
    sampler = None
    calls = 0

    def sample(samples: int, tokens: int) -> tuple[float, float, int]:
        nonlocal sampler, calls
        if sampler is None:
            sampler = service.create_sampling_client(base_model=model)
        calls += 1
        params = types.SamplingParams(max_tokens=tokens, temperature=1.0, seed=calls)
        prompt = types.ModelInput.from_ints([1, 2, 3, 4])
        started, cpu_started = time.perf_counter(), time.process_time()
        response = sampler.sample(prompt, samples, params).result()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return wall, cpu, sum(len(sequence.tokens) for sequence in response.sequences)

    def fresh_model() -> tuple[float, float]:
        fresh = new_service()
        started, cpu_started = time.perf_counter(), time.process_time()
        client = fresh.create_lora_training_client(base_model=model, rank=8, seed=0).result()
        client.get_info()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        close = getattr(fresh, "close", None)
        if close is not None:
            close()
        return wall, cpu

    def step(op: str) -> tuple[float, float]:
        if op == "fresh_model":
            return fresh_model()
        assert training is not None, "a training op needs DATUMS > 0"
        started, cpu_started = time.perf_counter(), time.process_time()
        if op == "custom":
            fb = training.forward_backward_custom(batch, mean_nll)
        else:
            fb = training.forward_backward(builtin, "cross_entropy")
        optim = training.optim_step(adam)  # pipelined, as training loops do
        fb.result()
        optim.result()
        return time.perf_counter() - started, time.process_time() - cpu_started

    if warmup and training is not None:
        step("custom")
        step("builtin")
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        steps = range(int(command["steps"]))
        if command["op"] == "sample":
            samples, tokens = int(command["samples"]), int(command["tokens"])
            wall, cpu, generated = zip(*(sample(samples, tokens) for _ in steps), strict=True)
            figures: dict[str, Any] = {"seconds": wall, "cpu_seconds": cpu, "tokens": generated}
        else:
            wall, cpu = zip(*(step(command["op"]) for _ in steps), strict=True)
            figures = {"seconds": wall, "cpu_seconds": cpu}
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    sdk, transport, address, model, datums, tokens = sys.argv[1:7]
    warmup = sys.argv[7] != "0" if len(sys.argv) > 7 else True
    main(sdk, transport, address, model, int(datums), int(tokens), warmup)
