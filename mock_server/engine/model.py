"""The tiny causal language model behind every catalogue entry (pure torch, float32, CPU).

One pre-norm-free transformer block, small enough to train in milliseconds and expressive
enough that real tasks learn:

    x_t  = E[tok_t] + sinusoid(t)                       # (T, D)
    h    = x + Attn(x)          causal softmax attention, one head, projections q,k,v,o
    h    = h + W2 tanh(W1 h)    MLP
    z    = rmsnorm(h)                                   # (T, D)
    logp = log_softmax(z U + (z A_U) B_U + b)           # (T, V), never materialised

Frozen base weights (E, q, k, v, o, W1, W2, U) are drawn from a generator seeded by
sha256(base-model name | server seed). Trainable adapters follow LoRA: every adapted weight
W gets W + A B with A (in, r) random from the LoRA seed and B (r, out) zero, so a fresh model
computes exactly the base model. The unembedding adapter also owns a bias b (zero at start).
`LoraConfig.train_attn / train_mlp / train_unembed` choose which adapters exist.

Causality: position t only reads tokens <= t. The vocabulary projection is evaluated in
chunks by a custom autograd function that recomputes each chunk's softmax in backward, so a
152k-token vocabulary costs O(T * chunk) memory instead of O(T * V).

Everything here is a pure function of (base, adapter, tokens): training, `forward_only`,
sampling and prompt logprobs all call `target_logprobs`, which is why a sampler snapshot
reproduces training logprobs bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mock_server.engine.catalog import ModelSpec

Adapter = dict[str, Tensor]  # parameter name -> tensor; names below

# Adapted base weights per LoraConfig switch. Each gets "<name>.lora_a" and "<name>.lora_b".
ATTN_WEIGHTS = ("wq", "wk", "wv", "wo")
MLP_WEIGHTS = ("w1", "w2")
UNEMBED_BIAS = "unembed.bias"
VOCAB_CHUNK = 16384  # vocabulary columns per chunk of the output projection


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 32
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True


@dataclass(frozen=True)
class BaseWeights:
    """Frozen weights of one (base model, server seed); shared read-only by all its models."""

    spec: ModelSpec
    embed: Tensor  # (V, D)
    wq: Tensor  # (D, D)
    wk: Tensor  # (D, D)
    wv: Tensor  # (D, D)
    wo: Tensor  # (D, D)
    w1: Tensor  # (D, F)
    w2: Tensor  # (F, D)
    unembed: Tensor  # (D, V)

    def weight(self, name: str) -> Tensor:
        return getattr(self, name)  # type: ignore[no-any-return]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and machines (unlike hash())."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def init_base_weights(spec: ModelSpec, server_seed: int) -> BaseWeights:
    g = torch.Generator().manual_seed(derive_seed(spec.name, server_seed))
    d, f, v = spec.d_model, spec.d_mlp, spec.vocab_size

    def normal(*shape: int, std: float) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    return BaseWeights(
        spec=spec,
        embed=normal(v, d, std=1.0),
        wq=normal(d, d, std=d**-0.5),
        wk=normal(d, d, std=d**-0.5),
        wv=normal(d, d, std=d**-0.5),
        wo=normal(d, d, std=d**-0.5),
        w1=normal(d, f, std=d**-0.5),
        w2=normal(f, d, std=f**-0.5),
        # z is RMS-normalised (|z| ~ sqrt(D)), so logits have std ~2: a peaked base distribution.
        unembed=normal(d, v, std=2.0 * d**-0.5),
    )


def adapted_weights(lora: LoraConfig) -> tuple[str, ...]:
    names: tuple[str, ...] = ()
    if lora.train_attn:
        names += ATTN_WEIGHTS
    if lora.train_mlp:
        names += MLP_WEIGHTS
    if lora.train_unembed:
        names += ("unembed",)
    return names


def init_adapter(base: BaseWeights, lora: LoraConfig, lora_seed: int) -> Adapter:
    """Fresh LoRA adapters: A random, B zero, bias zero. Names sorted for a stable order."""
    g = torch.Generator().manual_seed(derive_seed("lora", lora_seed))
    adapter: Adapter = {}
    for name in adapted_weights(lora):
        fan_in, fan_out = base.weight(name).shape
        adapter[f"{name}.lora_a"] = torch.randn(fan_in, lora.rank, generator=g) * fan_in**-0.5
        adapter[f"{name}.lora_b"] = torch.zeros(lora.rank, fan_out)
    if lora.train_unembed:
        adapter[UNEMBED_BIAS] = torch.zeros(base.spec.vocab_size)
    return dict(sorted(adapter.items()))


def _linear(x: Tensor, base: BaseWeights, adapter: Adapter, name: str) -> Tensor:
    y = x @ base.weight(name)
    lora_a = adapter.get(f"{name}.lora_a")
    if lora_a is not None:
        y = y + (x @ lora_a) @ adapter[f"{name}.lora_b"]
    return y


def _positions(length: int, width: int) -> Tensor:
    """Sinusoidal position codes (length, width); row t does not depend on `length`."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    angles = pos * freq  # (T, D/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, width)


def hidden_states(base: BaseWeights, adapter: Adapter, tokens: Tensor) -> Tensor:
    """RMS-normalised final hidden states (T, D) for int64 tokens (T,)."""
    length, width = tokens.shape[0], base.spec.d_model
    x = base.embed[tokens] + _positions(length, width)  # (T, D)
    q = _linear(x, base, adapter, "wq")
    k = _linear(x, base, adapter, "wk")
    v = _linear(x, base, adapter, "wv")
    scores = (q @ k.T) * width**-0.5  # (T, T)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    attn = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v  # (T, D)
    h = x + _linear(attn, base, adapter, "wo")
    h = h + _linear(torch.tanh(_linear(h, base, adapter, "w1")), base, adapter, "w2")
    return h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + 1e-6)


class _VocabProjection:
    """The output projection logits = z U + u B + b, evaluated one vocabulary slice at a time.

    z and u are joined into one (T, D+r) input and U, B into one (D+r, V) weight so each chunk
    is a single addmm (bias folded in) rather than two matmuls and two full-size adds.
    """

    def __init__(
        self,
        z: Tensor,
        u: Tensor | None,
        lora_b: Tensor | None,
        bias: Tensor | None,
        unembed: Tensor,
    ) -> None:
        if u is not None and lora_b is not None:
            self.inputs = torch.cat([z, u], dim=1)  # (T, D+r)
            self.weight = torch.cat([unembed, lora_b], dim=0)  # (D+r, V)
        else:
            self.inputs, self.weight = z, unembed
        self.bias = bias if bias is not None else torch.zeros(unembed.shape[1])
        self.vocab = unembed.shape[1]

    def chunks(self) -> list[slice]:
        return [
            slice(s, min(s + VOCAB_CHUNK, self.vocab)) for s in range(0, self.vocab, VOCAB_CHUNK)
        ]

    def logits(self, cols: slice) -> Tensor:
        return torch.addmm(self.bias[cols], self.inputs, self.weight[:, cols])  # (T, C)

    def log_normaliser(self) -> Tensor:
        """logsumexp over the whole vocabulary, (T,), by an online max/sum over chunks."""
        rows = self.inputs.shape[0]
        running_max = torch.full((rows,), float("-inf"))
        running_sum = torch.zeros(rows)
        for cols in self.chunks():
            chunk = self.logits(cols)
            new_max = torch.maximum(running_max, chunk.amax(dim=1))
            chunk.sub_(new_max[:, None]).exp_()
            running_sum = running_sum * torch.exp(running_max - new_max) + chunk.sum(dim=1)
            running_max = new_max
        return running_max + torch.log(running_sum)

    def target_logits(self, targets: Tensor) -> Tensor:
        """Logits at target ids, (T, K) for int64 targets (T, K)."""
        columns = self.weight.T[targets]  # (T, K, D+r)
        return torch.einsum("tj,tkj->tk", self.inputs, columns) + self.bias[targets]


class _TargetLogprobs(torch.autograd.Function):
    """log_softmax(z U + u B + b)[t, targets[t, k]] without materialising (T, V) logits."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        u: Tensor | None,
        lora_b: Tensor | None,
        bias: Tensor | None,
        unembed: Tensor,
        targets: Tensor,
    ) -> Tensor:
        proj = _VocabProjection(z, u, lora_b, bias, unembed)
        log_normaliser = proj.log_normaliser()  # (T,)
        ctx.save_for_backward(z, u, lora_b, bias, unembed, targets, log_normaliser)
        return proj.target_logits(targets) - log_normaliser[:, None]  # (T, K)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        z, u, lora_b, bias, unembed, targets, log_normaliser = ctx.saved_tensors
        need_inputs = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        need_b, need_bias = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        proj = _VocabProjection(z, u, lora_b, bias, unembed)
        # d logp[t,k] / d logits[t,v] = [v == target[t,k]] - softmax[t,v].
        # Target part first (a gather), then the softmax part chunk by chunk.
        grad_inputs = torch.einsum("tk,tkj->tj", grad_out, proj.weight.T[targets])  # (T, D+r)
        flat_targets = targets.reshape(-1)
        grad_b = torch.zeros_like(lora_b) if need_b else None
        if grad_b is not None:
            per_target = (u[:, None, :] * grad_out[:, :, None]).reshape(-1, u.shape[1])  # (T*K, r)
            grad_b.index_add_(1, flat_targets, per_target.T)
        grad_bias = torch.zeros_like(bias) if need_bias else None
        if grad_bias is not None:
            grad_bias.index_add_(0, flat_targets, grad_out.reshape(-1))
        neg_row_weight = -grad_out.sum(dim=1, keepdim=True)  # (T, 1)
        for cols in proj.chunks():
            grad_logits = (
                proj.logits(cols).sub_(log_normaliser[:, None]).exp_().mul_(neg_row_weight)
            )
            if need_inputs:
                grad_inputs.addmm_(grad_logits, proj.weight[:, cols].T)
            if grad_b is not None:
                grad_b[:, cols] += u.T @ grad_logits
            if grad_bias is not None:
                grad_bias[cols] += grad_logits.sum(dim=0)
        width = z.shape[1]
        grad_z = grad_inputs[:, :width] if ctx.needs_input_grad[0] else None
        grad_u = grad_inputs[:, width:] if ctx.needs_input_grad[1] else None
        return grad_z, grad_u, grad_b, grad_bias, None, None


def target_logprobs(base: BaseWeights, adapter: Adapter, tokens: Tensor, targets: Tensor) -> Tensor:
    """log p(targets | prefix) for one sequence: tokens (T,), targets (T,) or (T, K) -> same shape.

    Position t scores the token that follows tokens[: t + 1].
    """
    z = hidden_states(base, adapter, tokens)
    lora_a = adapter.get("unembed.lora_a")
    u = z @ lora_a if lora_a is not None else None  # (T, r)
    targets_2d = targets if targets.dim() == 2 else targets[:, None]
    logprobs: Tensor = _TargetLogprobs.apply(  # type: ignore[no-untyped-call]
        z, u, adapter.get("unembed.lora_b"), adapter.get(UNEMBED_BIAS), base.unembed, targets_2d
    )
    return logprobs if targets.dim() == 2 else logprobs[:, 0]


class OutputHead:
    """The output projection of a frozen adapter snapshot, joined once: next-token logits cost
    one (1, D+r) x (D+r, V) product per token instead of re-joining U and B (a copy of the
    whole (D+r, V) weight) at every step. For the sampler, whose weights do not change."""

    def __init__(self, base: BaseWeights, adapter: Adapter) -> None:
        self.lora_a = adapter.get("unembed.lora_a")
        lora_b, bias = adapter.get("unembed.lora_b"), adapter.get(UNEMBED_BIAS)
        unembed = base.unembed
        self.weight = unembed if lora_b is None else torch.cat([unembed, lora_b], dim=0)
        self.bias = bias if bias is not None else torch.zeros(unembed.shape[1])

    def next_token_logits(self, base: BaseWeights, adapter: Adapter, tokens: Tensor) -> Tensor:
        """Full next-token logits (V,) after `tokens`."""
        z = hidden_states(base, adapter, tokens)[-1:]  # (1, D)
        inputs = z if self.lora_a is None else torch.cat([z, z @ self.lora_a], dim=1)
        return torch.addmm(self.bias, inputs, self.weight)[0]


def topk_logprobs(
    base: BaseWeights, adapter: Adapter, tokens: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """The k most likely next tokens at every position: ids (T, k) int64, logprobs (T, k)."""
    z = hidden_states(base, adapter, tokens)
    lora_a = adapter.get("unembed.lora_a")
    proj = _VocabProjection(
        z,
        z @ lora_a if lora_a is not None else None,
        adapter.get("unembed.lora_b"),
        adapter.get(UNEMBED_BIAS),
        base.unembed,
    )
    log_normaliser = proj.log_normaliser()
    best_values = torch.empty(z.shape[0], 0)
    best_ids = torch.empty(z.shape[0], 0, dtype=torch.int64)
    for cols in proj.chunks():
        chunk = proj.logits(cols)
        ids = torch.arange(cols.start, cols.stop).expand_as(chunk)
        values = torch.cat([best_values, chunk], dim=1)
        all_ids = torch.cat([best_ids, ids], dim=1)
        best_values, order = values.topk(min(k, values.shape[1]), dim=1)
        best_ids = all_ids.gather(1, order)
    return best_ids, best_values - log_normaliser[:, None]
