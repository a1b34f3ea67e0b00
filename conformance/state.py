"""The trained state after a case, as a fingerprint that holds on every CPU.

Why not a hash. A sha256 of the final adapter weights and Adam state catches every wrong update,
but it also catches every last-bit difference of rounding, and rounding differs between CPUs:
ATen picks scalar, AVX2 or AVX-512 kernels (and MKL its own code paths) per machine, so the same
run ends on different bits on an AVX2 laptop, an AVX-512 server and an ARM Mac while every
result agrees to ~1e-6. Expectations stored in the repo are therefore compared with a tolerance;
bits are compared only between two runs in one process (a fault case and its fault-free twin,
see `runner.judge_twins`).

What it is. For each tensor of the model's trainable state — every adapter weight
(`wq.lora_a`), both Adam moments (`wq.lora_a.exp_avg`, `wq.lora_a.exp_avg_sq`) — three numbers

    [ ‖x‖₂,  ⟨x, s₁⟩/√n,  ⟨x, s₂⟩/√n ]

where s₁, s₂ ∈ {−1, +1}ⁿ are fixed sign vectors drawn from SHAKE-256 of the tensor's name (the
same on every machine; no RNG kernel involved), plus Adam's step count (`wq.lora_a.step`) as an
exact integer. The norms see a scaled update (a gradient applied twice doubles the first moment
and quadruples the second, though Adam's step barely changes); the projections see a change of
direction that keeps the norm (an update with the opposite sign on a zero-initialised LoRA B).

Tolerance. Each number may differ by `STATE_TOLERANCE × ‖x‖₂` of the expected tensor: by
Cauchy–Schwarz |⟨δ, s⟩/√n| ≤ ‖δ‖₂, so this bounds the relative change of the tensor seen in
each direction. Measured on one AVX-512 machine over all cases, running under
ATEN_CPU_CAPABILITY=default, avx2 and avx512: the largest relative change of any tensor between
kernel paths was 7.9e-6, so 1e-4 leaves a >10x margin; an update applied twice, with another
value or not at all moves the trained tensors by 1e-1 to 1e0 of their norm
(tests/conformance/test_state_fingerprint.py checks it for every case that trains).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import torch

STATE_TOLERANCE = 1e-4  # relative to the expected tensor's L2 norm (see the module docstring)
_FLOOR = 1e-20  # exact zeros (an untouched moment) stay exact on every kernel path
_DIGITS = 9  # significant digits stored: far below the tolerance, stable text
_PROJECTIONS = 2
_SHOWN = 5  # moved tensors named in a message

Fingerprint = dict[str, Any]  # tensor name -> [norm, projections...] (float) or step count (int)


def _signs(name: str, count: int, index: int) -> torch.Tensor:
    """A fixed ±1 vector of `count` entries for projection `index` of tensor `name`."""
    raw = hashlib.shake_256(f"{name}#{index}".encode()).digest((count + 7) // 8)
    bytes_ = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)
    bits = (bytes_.unsqueeze(1) >> torch.arange(8)) & 1  # (bytes, 8)
    return bits.flatten()[:count].to(torch.float64) * 2 - 1


def _round(value: float) -> float:
    return float(f"{value:.{_DIGITS}g}")


def fingerprint(tensors: Mapping[str, torch.Tensor]) -> Fingerprint:
    """The fingerprint of named state tensors (weights, `<name>.exp_avg`, `<name>.exp_avg_sq`,
    `<name>.step`), keys sorted."""
    result: Fingerprint = {}
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        if name.endswith(".step"):
            result[name] = int(tensor.item())
            continue
        flat = tensor.to(torch.float64).flatten()  # float64 sums: no rounding worth the name
        scale = math.sqrt(max(flat.numel(), 1))
        numbers = [float(flat.norm())]
        numbers += [
            float(flat @ _signs(name, flat.numel(), i)) / scale for i in range(_PROJECTIONS)
        ]
        result[name] = [_round(x) for x in numbers]
    return result


def _allowed(expected: list[float], tolerance: float) -> float:
    return tolerance * abs(expected[0]) + _FLOOR


def tensor_deviation(expected: Any, got: Any, tolerance: float = STATE_TOLERANCE) -> float:
    """How far one tensor's entry moved, in units of its allowed deviation (<= 1: within
    tolerance); `inf` for a changed step count or an entry of another shape."""
    if isinstance(expected, int) or isinstance(got, int):
        return 0.0 if expected == got else math.inf
    if not isinstance(got, list) or len(got) != len(expected):
        return math.inf
    allowed = _allowed(expected, tolerance)
    return float(max(abs(g - e) for e, g in zip(expected, got, strict=True)) / allowed)


def deviation(expected: Fingerprint, got: Fingerprint, tolerance: float = STATE_TOLERANCE) -> float:
    """The largest `tensor_deviation` over all tensors (`inf` when the names differ)."""
    if set(expected) != set(got):
        return math.inf
    return max((tensor_deviation(expected[n], got[n], tolerance) for n in expected), default=0.0)


def compare(
    where: str,
    expected: Fingerprint,
    got: Fingerprint | None,
    tolerance: float = STATE_TOLERANCE,
) -> list[str]:
    """Failures of `got` against `expected`: one line naming the tensors that moved beyond the
    tolerance, with expected vs got for the worst ones."""
    if got is None:
        return [f"{where}: expected a trained model's state, got no model (none was created)"]
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        return [
            f"{where}: expected the tensors {sorted(expected)}, got {sorted(got)} "
            f"(missing {missing}, unexpected {extra}) — the model has other adapters"
        ]
    moved = sorted(
        ((tensor_deviation(expected[n], got[n], tolerance), n) for n in expected), reverse=True
    )
    moved = [(d, n) for d, n in moved if d > 1]
    if not moved:
        return []
    shown = "; ".join(
        f"{name}: expected {expected[name]}, got {got[name]}"
        + ("" if math.isinf(dev) else f" ({dev:.3g}x the allowed {tolerance:g} of its norm)")
        for dev, name in moved[:_SHOWN]
    )
    more = f" and {len(moved) - _SHOWN} more" if len(moved) > _SHOWN else ""
    return [
        f"{where}: the trained state moved beyond tolerance in {len(moved)} tensor(s) — an "
        f"update was applied with another value, twice, or not at all: {shown}{more}"
    ]


def trains(expected: Fingerprint) -> bool:
    """Whether the state shows at least one applied optimizer step."""
    return any(name.endswith(".step") and value >= 1 for name, value in expected.items())
