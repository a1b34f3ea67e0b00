"""One custom-loss training run, written once for the official SDK 0.38 *and* for tinker_ref.

    python client_scenario.py official|tinker_ref http|grpc BASE_URL_OR_TARGET

The only difference between the two clients is the import (`import tinker` vs
`import tinker_ref as tinker`) — which is itself part of what is tested: tinker_ref mirrors the
official training surface. The run: a reference forward, three steps of a DPO-style pairwise
loss (negative weights for the rejected completions; metrics with a tensor value and a
non-string key), each followed by a pipelined `optim_step`, one step of a [T,K] distribution loss,
one built-in `cross_entropy` step, then a forward on fresh probe data. Prints one JSON line with
every step's metrics and the probe logprobs (JSON floats round-trip exactly, so the caller can
compare bit for bit). Runs inside the official SDK's virtualenv as well, so it imports nothing
from this repository.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

BASE_MODEL = "tinker-ref/tiny-bytes"
BETA = 0.5
ADAM = {"learning_rate": 2e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8}


def main(sdk: str, transport: str, address: str) -> dict[str, Any]:
    if sdk == "official":
        import tinker

        service = tinker.ServiceClient(base_url=address, api_key="tml-scenario")
    else:
        import tinker_ref as tinker  # type: ignore[no-redef]

        service = tinker.ServiceClient(
            base_url=address, api_key="tml-scenario", transport=transport
        )
    types = tinker.types

    def datum(prompt: bytes, completion: bytes) -> Any:
        tokens = list(prompt + completion)
        weights = [0.0] * (len(prompt) - 1) + [1.0] * len(completion)
        return types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
        )

    pairs = [
        (b"Q: cat? A: ", b"meow", b"woof"),
        (b"Q: dog? A: ", b"woof", b"moo"),
        (b"Q: cow? A: ", b"moo!", b"quack"),
    ]
    dpo_data = [datum(p, c) for p, chosen, rejected in pairs for c in (chosen, rejected)]

    def completion_logprob(data: Any, logprobs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [
            (lp * d.loss_fn_inputs["weights"].to_torch()).sum()
            for d, lp in zip(data, logprobs, strict=True)
        ]

    training = service.create_lora_training_client(base_model=BASE_MODEL, rank=4, seed=7).result()
    reference = training.forward(dpo_data, "cross_entropy").result()
    reference_sums = [
        float((out["logprobs"].to_torch() * d.loss_fn_inputs["weights"].to_torch()).sum())
        for out, d in zip(reference.loss_fn_outputs, dpo_data, strict=True)
    ]

    def dpo_loss(data: Any, logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict[Any, Any]]:
        sums = completion_logprob(data, logprobs)
        margins = torch.stack(
            [
                (sums[i] - reference_sums[i]) - (sums[i + 1] - reference_sums[i + 1])
                for i in range(0, len(sums), 2)
            ]
        )
        loss = -torch.nn.functional.logsigmoid(BETA * margins).mean()
        accuracy = (margins > 0).float().mean()
        return loss, {"margin": margins.mean(), 7: accuracy, "pairs": len(margins)}

    metrics: list[dict[str, float]] = []
    raw_types: list[dict[str, str]] = []  # what the client returned, before JSON normalisation

    def keep(raw: dict[Any, Any]) -> None:
        raw_types.append({str(k): f"{type(k).__name__}:{type(v).__name__}" for k, v in raw.items()})
        metrics.append({str(k): float(v) for k, v in raw.items()})

    for _ in range(3):
        fb = training.forward_backward_custom(dpo_data, dpo_loss)
        step = training.optim_step(types.AdamParams(**ADAM))  # before fb resolves: pipelined
        keep(fb.result().metrics)
        step.result()

    # [T, K] targets: K candidate next tokens per position, with a target distribution over them.
    prompt = list(b"abcabcabc")
    candidates = [[t, (t + 1) % 256, (t + 2) % 256] for t in prompt[1:]]
    distribution = torch.tensor([[0.7, 0.2, 0.1]] * len(candidates))
    tk_datum = types.Datum(
        model_input=types.ModelInput.from_ints(prompt[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_torch(torch.tensor(candidates)),
            "weights": types.TensorData.from_torch(distribution),
        },
    )

    def distribution_loss(
        data: Any, logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert logprobs[0].shape == (len(candidates), 3), logprobs[0].shape
        loss = -(distribution * logprobs[0]).sum()
        return loss, {"positions": float(logprobs[0].shape[0])}

    fb = training.forward_backward_custom([tk_datum], distribution_loss)
    step = training.optim_step(types.AdamParams(**ADAM))
    keep(fb.result().metrics)
    step.result()

    fb = training.forward_backward(dpo_data[::2], "cross_entropy")
    step = training.optim_step(types.AdamParams(**ADAM))
    keep(fb.result().metrics)
    step.result()

    probe = [datum(b"Q: bird? A: ", b"tweet"), datum(b"the cat ", b"sat")]
    probe_out = training.forward(probe, "cross_entropy").result()
    return {
        "metrics": metrics,
        "metric_types": raw_types,
        "probe_logprobs": [out["logprobs"].tolist() for out in probe_out.loss_fn_outputs],
        "model_id": training.model_id,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
