"""Data builders and gradient helpers shared by the engine tests (tests/unit, tests/property).

Owns what lets a test state its fact in a few lines:
- models: one shared `Engine` per test process, fresh / "warm" models, bit-identical twins, and
  the SGD-emulating Adam configuration of spec OPT-3;
- data: `Batch` (random model inputs and targets on a test model, seeded) and the hypothesis
  strategy `batches` that draws one;
- the custom-loss path as the SDK runs it (spec CL-1, CL-2, CL-7), engine-side:
  a forward_only cross-entropy pass with zero weights, client autograd, then cross-entropy with
  `weights = -dC/dlogprobs`; and the reference it must equal, direct autograd of C through
  `mock_server.engine.model.target_logprobs` on a detached copy of the adapters (spec DET-4);
- `same_bits`: two result trees (tensors, dataclasses, containers) equal, tensors byte for byte;
- `determinism_trace` (a short run as exact strings) and `run_python` (fresh interpreters, run
  concurrently), for the determinism and memory tests.

Import as `tests.support.engine_data` with the repo root on sys.path (`python -m pytest` from
the root, as `make test` does). Not a test module and not engine code: nothing here asserts
engine semantics except the `assert_*` helpers, which only compare tensors.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from mock_server.engine import (
    AdamConfig,
    DatumInput,
    Engine,
    EngineConfig,
    ForwardBackwardResult,
    LoraConfig,
    SampleSpec,
    TrainingModel,
    derive_seed,
)
from mock_server.engine.model import target_logprobs

TINY_64 = "tinker-ref/tiny-64"
TINY_512 = "tinker-ref/tiny-512"
TINY_BYTES = "tinker-ref/tiny-bytes"
QWEN3_8B = "Qwen/Qwen3-8B"
TEST_MODELS = (TINY_64, TINY_512)

SMALL_LORA = LoraConfig(rank=4)
REPO_ROOT = Path(__file__).resolve().parents[2]

Grads = dict[str, Tensor]  # adapter parameter name -> gradient (zeros where .grad is None)
CustomLoss = Callable[[Sequence[Tensor]], Tensor]  # per-datum logprobs -> scalar loss


# ----- models -----


@functools.cache
def shared_engine() -> Engine:
    """One engine per test process (server seed 0). Its base weights are read-only and shared.

    The default EngineConfig pins torch to one intra-op thread for the whole process.
    """
    return Engine(EngineConfig(seed=0))


def fresh_model(
    base_model: str = TINY_64, lora_seed: int = 7, lora: LoraConfig = SMALL_LORA
) -> TrainingModel:
    """A new model: LoRA A random, LoRA B and the unembedding bias zero."""
    return shared_engine().create_model(base_model, lora, lora_seed, model_key="test")


def warm_model(
    base_model: str = TINY_64, lora_seed: int = 7, lora: LoraConfig = SMALL_LORA
) -> TrainingModel:
    """A model one AdamW step from its initialisation, with a fresh optimizer and no gradient.

    On a fresh model every LoRA B is zero, so every LoRA A gets an exactly-zero gradient and
    half the adapter goes untested; one step on fixed data makes every adapter non-zero. The
    Adam state is then dropped, so the test's first optim_step is step 1 as on a new model.
    """
    model = fresh_model(base_model, lora_seed, lora)
    batch = make_batch(seed=lora_seed, vocab_size=model.vocab_size, lengths=(6, 4, 5))
    model.forward_backward(batch.datums(weights=batch.ones()), "cross_entropy")
    model.optim_step(AdamConfig(learning_rate=1e-2))
    model.load(model.weights(), None)
    return model


def twin(model: TrainingModel) -> TrainingModel:
    """An independent model with bit-identical adapters and Adam state, and no gradient."""
    copy = TrainingModel(model.base, model.lora, model.lora_seed)
    copy.load(model.weights(), model.optimizer_state())
    return copy


def sgd_like_adam(eta: float, eps: float = 1e6) -> AdamConfig:
    """AdamW whose first step is ~SGD (spec OPT-3): beta1 = 0, lr = eps * eta.

    Step 1: m = g, v_hat = g^2, so the step is -lr * g / (|g| + eps) = -eta * g * eps / (|g| + eps),
    i.e. -eta * g to a relative error of |g| / eps per element. Unlike default Adam, which
    divides by |g| and so hides any constant factor on the gradient, this exposes scale bugs.
    """
    return AdamConfig(learning_rate=eps * eta, beta1=0.0, beta2=0.95, eps=eps)


# ----- data -----


@dataclass(frozen=True)
class Batch:
    """Random datums on one test model: model-input tokens and their targets, plus a seed."""

    seed: int
    vocab_size: int
    tokens: tuple[Tensor, ...]  # per datum (N_i,) int64
    targets: tuple[Tensor, ...]  # per datum (N_i,) or (N_i, K) int64

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_tokens(self) -> int:
        return sum(t.shape[0] for t in self.tokens)

    def floats(self, salt: str, low: float = -1.0, high: float = 1.0) -> list[Tensor]:
        """Per datum float32 uniform in [low, high), shaped like its targets; seeded by salt."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, salt))
        return [torch.rand(t.shape, generator=g) * (high - low) + low for t in self.targets]

    def ones(self) -> list[Tensor]:
        return [torch.ones(t.shape) for t in self.targets]

    def zeros(self) -> list[Tensor]:
        return [torch.zeros(t.shape) for t in self.targets]

    def datums(self, **inputs: Sequence[Tensor]) -> list[DatumInput]:
        """DatumInputs with target_tokens plus one tensor per datum for each keyword."""
        return [
            DatumInput(
                tokens,
                {"target_tokens": targets} | {key: value[i] for key, value in inputs.items()},
            )
            for i, (tokens, targets) in enumerate(zip(self.tokens, self.targets, strict=True))
        ]

    def permuted(self, order: Sequence[int]) -> Batch:
        return replace(
            self,
            tokens=tuple(self.tokens[i] for i in order),
            targets=tuple(self.targets[i] for i in order),
        )


def make_batch(seed: int, vocab_size: int, lengths: Sequence[int], k: int | None = None) -> Batch:
    """Uniform random token ids; targets are (N,) or, with k, (N, k)."""
    g = torch.Generator().manual_seed(derive_seed("batch", seed))
    tokens = tuple(torch.randint(0, vocab_size, (n,), generator=g) for n in lengths)
    shapes = [(n,) if k is None else (n, k) for n in lengths]
    targets = tuple(torch.randint(0, vocab_size, shape, generator=g) for shape in shapes)
    return Batch(seed, vocab_size, tokens, targets)


def batches(
    vocab_size: int,
    *,
    min_datums: int = 1,
    max_datums: int = 4,
    max_len: int = 8,
    k: int | None = None,
    even: bool = False,
) -> st.SearchStrategy[Batch]:
    """Small random batches; `even` forces an even datum count (preference pairs)."""
    counts = st.integers(min_datums, max_datums)
    if even:
        counts = counts.map(lambda n: n + n % 2)
    lengths = counts.flatmap(lambda n: st.lists(st.integers(1, max_len), min_size=n, max_size=n))
    return st.builds(
        make_batch,
        seed=st.integers(0, 2**32 - 1),
        vocab_size=st.just(vocab_size),
        lengths=lengths,
        k=st.just(k),
    )


def twins_and_batch(
    base_model: str, data: st.DataObject, **batch_options: Any
) -> tuple[TrainingModel, TrainingModel, Batch]:
    """A `warm_model`, its `twin` and a batch drawn from `batches(vocab_size, **batch_options)`:
    the setup of a test that runs the same model two ways and compares the two."""
    model = warm_model(base_model)
    other = twin(model)
    return model, other, data.draw(batches(model.vocab_size, **batch_options))


# ----- gradients and the custom-loss path -----


def grads(model: TrainingModel) -> Grads:
    """A copy of every adapter gradient (zeros where none has been accumulated)."""
    return {
        name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for name, p in model.adapter.items()
    }


def forward_logprobs(model: TrainingModel, batch: Batch) -> list[Tensor]:
    """The custom path's forward phase: cross_entropy, forward_only, zero weights (spec CL-2)."""
    result = model.forward_backward(
        batch.datums(weights=batch.zeros()), "cross_entropy", forward_only=True
    )
    return [out["logprobs"] for out in result.loss_fn_outputs]


def custom_loss_backward(
    model: TrainingModel, batch: Batch, loss_fn: CustomLoss
) -> tuple[Tensor, ForwardBackwardResult]:
    """forward_backward_custom engine-side: returns (C at the forward logprobs, backward result)."""
    logprobs = [lp.clone().requires_grad_(True) for lp in forward_logprobs(model, batch)]
    loss = loss_fn(logprobs)
    dloss_dlogprobs = torch.autograd.grad(loss, logprobs)
    weights = [-g for g in dloss_dlogprobs]
    result = model.forward_backward(batch.datums(weights=weights), "cross_entropy")
    return loss.detach(), result


def direct_autograd_grads(model: TrainingModel, batch: Batch, loss_fn: CustomLoss) -> Grads:
    """The reference: d loss_fn / d adapters by autograd straight through target_logprobs."""
    adapter = {name: p.detach().clone().requires_grad_(True) for name, p in model.adapter.items()}
    logprobs = [
        target_logprobs(model.base, adapter, tokens, targets)
        for tokens, targets in zip(batch.tokens, batch.targets, strict=True)
    ]
    loss_fn(logprobs).backward()  # type: ignore[no-untyped-call]
    return {
        name: p.grad if p.grad is not None else torch.zeros_like(p) for name, p in adapter.items()
    }


def assert_grads_equal(actual: Grads, expected: Grads) -> None:
    """Bitwise equality, parameter by parameter."""
    assert actual.keys() == expected.keys()
    for name in expected:
        a, e = actual[name], expected[name]
        assert torch.equal(a, e), f"{name}: max |diff| {(a - e).abs().max().item():.3g}"


def assert_grads_close(actual: Grads, expected: Grads, rtol: float) -> None:
    """|actual - expected| <= rtol * max|expected| elementwise, per parameter (scale-aware)."""
    assert actual.keys() == expected.keys()
    for name in expected:
        a, e = actual[name], expected[name]
        bound = rtol * max(e.abs().max().item(), 1e-30)
        diff = (a - e).abs().max().item()
        assert diff <= bound, f"{name}: max |diff| {diff:.3g} > {bound:.3g}"


def some_gradient_is_nonzero(g: Grads) -> bool:
    return any(bool(t.ne(0).any()) for t in g.values())


# ----- determinism traces -----


def same_bits(a: Any, b: Any) -> bool:
    """Equal trees of tensors, engine dataclasses, dicts (same key order), lists and tuples
    (same type) and plain values; tensors equal in dtype, shape and every byte (so NaN equals
    the same NaN, and -0.0 differs from 0.0)."""
    if isinstance(a, Tensor):
        if not (isinstance(b, Tensor) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        flat_a, flat_b = a.detach().contiguous().view(-1), b.detach().contiguous().view(-1)
        return bool(
            flat_a.numel() == 0 or torch.equal(flat_a.view(torch.uint8), flat_b.view(torch.uint8))
        )
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(same_bits(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_bits, a, b))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and same_bits(vars(a), vars(b))
    return type(a) is type(b) and bool(a == b)


def _hex(t: Tensor) -> str:
    return t.detach().contiguous().numpy().tobytes().hex()


def determinism_trace(
    engine: Engine,
    base_model: str,
    steps: int = 3,
    lengths: Sequence[int] = (5, 7, 3),
    sample_tokens: int = 6,
) -> dict[str, object]:
    """Everything a client can observe from a short run, as exact strings (float bits in hex).

    Per step: a cross_entropy and a ppo forward_backward, AdamW with clipping and weight decay.
    Then a seeded sample with prompt logprobs, and the adapter + Adam state digest.
    """
    model = engine.create_model(base_model, LoraConfig(rank=8), None, model_key="determinism")
    metrics: list[str] = []
    logprobs: list[str] = []
    for step in range(steps):
        batch = make_batch(step, model.vocab_size, lengths)
        ce = model.forward_backward(batch.datums(weights=batch.floats("w")), "cross_entropy")
        learner = [out["logprobs"] for out in ce.loss_fn_outputs]
        sampler = [lp - d for lp, d in zip(learner, batch.floats("drift", -0.3, 0.3), strict=True)]
        ppo = model.forward_backward(
            batch.datums(logprobs=sampler, advantages=batch.floats("adv")), "ppo"
        )
        optim = model.optim_step(
            AdamConfig(learning_rate=1e-2, weight_decay=0.01, grad_clip_norm=1.0)
        )
        for m in (ce.metrics, ppo.metrics, optim):
            metrics += [f"{key}={float(value).hex()}" for key, value in sorted(m.items())]
        logprobs += [_hex(lp) for lp in learner]
    prompt = make_batch(99, model.vocab_size, (4,)).tokens[0]
    sample = engine.sample(
        base_model,
        model.weights(),
        SampleSpec(
            prompt, seed=5, num_samples=2, max_tokens=sample_tokens, top_p=0.9, prompt_logprobs=True
        ),
    )
    return {
        "metrics": metrics,
        "logprobs": logprobs,
        "samples": [
            [s.tokens, [float(x).hex() for x in s.logprobs], s.stop_reason]
            for s in sample.sequences
        ],
        "prompt_logprobs": _hex(sample.prompt_logprobs)
        if sample.prompt_logprobs is not None
        else "",
        "digest": model.digest(include_optimizer=True),
    }


# ----- subprocesses -----


def run_python(*codes: str, timeout: float = 240) -> list[dict[str, Any]]:
    """Run each code string in its own fresh interpreter at the repo root, all concurrently.

    Each must print one JSON object as its last stdout line; returns them in order.
    """
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for code in codes
    ]
    results = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, stderr[-4000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results
