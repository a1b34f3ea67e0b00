"""A benchmark client process: one training client, timed steps on command.

    python step_worker.py official|tinker_ref http|grpc ADDRESS MODEL DATUMS TOKENS [WARMUP]

Runs inside the official SDK's virtualenv as well as ours, so it imports nothing from this
repository; the two clients differ only in the import. At start it creates a LoRA training
client and a deterministic batch (DATUMS x TOKENS byte tokens), warms up (by default one step
of each op; WARMUP=0 skips it, for the memory run whose steps take long), then prints `ready`.
Each stdin line `{"op": "custom"|"builtin", "steps": N}` runs N steps and prints
`{"seconds": [...], "cpu_seconds": [...]}`: per step, wall-clock time and this client process's
CPU time (all threads: the cost of the client itself, whatever the server takes). A step is
`forward_backward_custom` with a mean-NLL loss (op "custom") or `forward_backward` with
`cross_entropy` weights 1/N (op "builtin"), each followed by `optim_step`; both compute the same
gradient.
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
    training = service.create_lora_training_client(base_model=model, rank=8, seed=0).result()
    adam = types.AdamParams(learning_rate=1e-4)

    def step(op: str) -> tuple[float, float]:
        started, cpu_started = time.perf_counter(), time.process_time()
        if op == "custom":
            fb = training.forward_backward_custom(batch, mean_nll)
        else:
            fb = training.forward_backward(builtin, "cross_entropy")
        optim = training.optim_step(adam)  # pipelined, as training loops do
        fb.result()
        optim.result()
        return time.perf_counter() - started, time.process_time() - cpu_started

    if warmup:
        step("custom")
        step("builtin")
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        timings = [step(command["op"]) for _ in range(int(command["steps"]))]
        wall, cpu = zip(*timings, strict=True)
        print(json.dumps({"seconds": wall, "cpu_seconds": cpu}), flush=True)


if __name__ == "__main__":
    sdk, transport, address, model, datums, tokens = sys.argv[1:7]
    warmup = sys.argv[7] != "0" if len(sys.argv) > 7 else True
    main(sdk, transport, address, model, int(datums), int(tokens), warmup)
