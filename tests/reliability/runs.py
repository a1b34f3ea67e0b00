"""The custom-loss training run the reliability tests interrupt, and how they compare results.

One deterministic run, written against `tinker_ref` (same surface as the official SDK): a
pairwise custom loss over per-datum logprobs (the DPO shape: chosen minus rejected), with
`forward_backward_custom` then `optim_step` per step. A test executes the steps itself so it
can crash or fault the server between (or during) any two of them; `reference_weights` runs the
same steps against an undisturbed in-process server, and weights are compared bit for bit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import tinker_ref
from mock_server.embedded import serve
from tests.support.training import datum
from tinker_ref import types

BASE_MODEL = "tinker-ref/tiny-bytes"
ADAM = types.AdamParams(learning_rate=2e-2, beta1=0.9, beta2=0.95, eps=1e-8)
LORA_SEED = 11


def batch(step: int, size: int = 4, length: int = 12) -> list[types.Datum]:
    """`size` datums (an even number: chosen/rejected pairs), different for every step."""
    return [
        datum([(step * 31 + index * 7 + position * 3) % 250 for position in range(length)])
        for index in range(size)
    ]


def pairwise_loss(
    data: list[types.Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """-logsigmoid(sum chosen - sum rejected) over consecutive pairs: needs real per-datum
    logprobs in input order, so a reordered or duplicated result changes the weights."""
    sums = torch.stack([lp.sum() for lp in logprobs])
    margins = sums[0::2] - sums[1::2]
    return -torch.nn.functional.logsigmoid(0.1 * margins).sum(), {"margin": margins.mean()}


def weights_digest(checkpoint_dir: Path) -> str:
    """sha256 over the adapter tensors of a saved checkpoint (name, dtype, shape, bytes)."""
    tensors = load_file(str(checkpoint_dir / "adapter.safetensors"))
    return digest_tensors(tensors)


def digest_tensors(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def checkpoint_dir(data_dir: Path, tinker_path: str) -> Path:
    """`tinker://<model>/<kind>/<name>` -> its directory (service/checkpoints.py layout)."""
    model, kind, name = tinker_path.removeprefix("tinker://").split("/")
    return data_dir / "checkpoints" / model.replace(":", "~") / kind / name


def train_steps(training: Any, steps: list[list[types.Datum]]) -> None:
    for data in steps:
        training.forward_backward_custom(data, pairwise_loss).result(timeout=120)
        training.optim_step(ADAM).result(timeout=120)


def reference_digest(steps: list[list[types.Datum]], tmp_path: Path) -> str:
    """The weights after `steps` on an undisturbed in-process server (seed 0, fresh state)."""
    with serve(data_dir=tmp_path / "reference") as server:
        client = tinker_ref.ServiceClient(base_url=server.url, api_key="tml-reference")
        try:
            training = client.create_lora_training_client(
                base_model=BASE_MODEL, rank=4, seed=LORA_SEED
            ).result(timeout=60)
            train_steps(training, steps)
            path = training.save_state("final").result(timeout=60).path
        finally:
            client.close()
        return weights_digest(checkpoint_dir(tmp_path / "reference", path))
