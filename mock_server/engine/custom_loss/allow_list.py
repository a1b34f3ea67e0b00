"""The allow-list of uploaded custom losses: what a graph node may call, with which literals,
and how each call's result size is bounded before it runs.

Owns (spec LOSS-15): the operation families (`ALLOW_LIST`), the
attributes `getattr` may read (`ATTRIBUTES`), the named constants an argument may be
(`CONSTANTS`: dtypes, the cpu device, layouts, memory formats, non-finite floats), and the
lookup tables the compiler resolves call targets in (`FUNCTIONS`, `METHODS`). Call targets are
literal names from this file, resolved once at import; nothing from a graph is ever looked up
with `getattr` on a module. Not owned: decoding a graph (`compiler`), running one
(`interpreter`).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import torch
from torch import Tensor

# How a call's result size is bounded before it runs (`interpreter._Run.check_size`):
#   "broadcast": at most the broadcast of its tensor arguments' shapes (computed, no torch call);
#   "receiver":  at most its first tensor argument (views, casts, sorts, *_like); checked after;
#   "meta":      run first on the meta device (shapes only, ~0.1-0.5 ms) and checked;
#   "factory":   like "meta", and refused when the size cannot be known (it comes from values);
#   "none":      makes no tensor from sizes (attributes, Python math).
SizeRule = Literal["broadcast", "receiver", "meta", "factory", "none"]


@dataclass(frozen=True)
class Family:
    size: SizeRule
    functions: str = ""  # qualified names exactly as the SDK sends them (torch.fx's naming)
    methods: str = ""  # torch.Tensor method names
    strings: str | None = None  # regex every str argument must match; None: no str arguments
    inplace_arg: int | None = None  # position of an `inplace` parameter (must stay False)


_ELEMENTWISE = "exp exp2 log log2 log10 log1p expm1 sigmoid tanh relu sqrt rsqrt abs neg negative \
square sign reciprocal floor ceil round trunc isfinite isnan isinf logical_not logical_and \
logical_or nan_to_num xlogy logaddexp add sub mul div pow minimum maximum where clamp clip \
clamp_min clamp_max eq ne lt le gt ge"
_REDUCTIONS = "sum mean prod amax amin max min logsumexp cumsum all any argmax argmin \
count_nonzero std var"
_INDEXING = "gather take_along_dim index_select masked_select"
_VIEWS = "reshape flatten squeeze unsqueeze transpose permute movedim unbind chunk narrow select \
flip"


def _qualify(module: str, names: str) -> str:
    return " ".join(f"{module}.{name}" for name in names.split())


ALLOW_LIST: Final[dict[str, Family]] = {
    # fx records Python syntax on traced values as operator calls: `a * b`, `-x`, `a < b`,
    # `~mask`, on tensors and on ints read from shapes. No shifts, no setitem, no in-place
    # forms; `_check_python_operands` guards the pure-Python cases.
    "operators": Family(
        "broadcast",
        functions=_qualify(
            "operator",
            "add sub mul truediv floordiv mod pow neg pos abs lt le gt ge eq ne and_ or_ xor "
            "invert",
        ),
    ),
    # `x[i]`, `x[mask]`, `x[:, idx]` and picking target columns: advanced indexing can
    # broadcast index tensors, so sizes are checked on meta.
    "indexing": Family(
        "meta",
        functions="operator.getitem " + _qualify("torch", _INDEXING),
        methods=_INDEXING,
    ),
    # `x.shape[0]`, `x.dtype`, `x.T`, `topk(...).values`: see `ATTRIBUTES` for who has what.
    "attributes": Family("none", functions="getattr", strings=r"[A-Za-z_]+"),
    # Per-token math on logprobs, ratios, advantages and masks: the body of every loss.
    # `div(rounding_mode=)` is the one string.
    "elementwise": Family(
        "broadcast",
        functions=_qualify("torch", _ELEMENTWISE),
        methods=_ELEMENTWISE + " masked_fill",
        strings="trunc|floor",
    ),
    # torch.nn.functional activations; F.logsigmoid and F.softplus trace as torch._C._nn.*.
    "activations": Family("broadcast", functions="torch._C._nn.log_sigmoid torch._C._nn.softplus"),
    "relu": Family("broadcast", functions="torch.nn.functional.relu", inplace_arg=1),
    # Normalisation over the K candidates of [T, K] logprobs (distillation, KL to a target).
    "softmax": Family(
        "broadcast",
        functions="torch.softmax torch.log_softmax torch.nn.functional.softmax "
        "torch.nn.functional.log_softmax",
        methods="softmax log_softmax",
    ),
    # Reduce tokens (and candidates) to the per-datum scalar loss and metrics.
    "reductions": Family(
        "broadcast", functions=_qualify("torch", _REDUCTIONS), methods=_REDUCTIONS + " norm"
    ),
    # Reference losses written with torch.nn.functional; elementwise with reduction="none".
    "nn_losses": Family(
        "broadcast",
        functions=_qualify(
            "torch.nn.functional",
            "mse_loss smooth_l1_loss kl_div binary_cross_entropy_with_logits",
        ),
        strings="none|mean|sum|batchmean",
    ),
    # The top candidates, ranks.
    "ordering": Family(
        "receiver", functions=_qualify("torch", "topk sort argsort"), methods="topk sort argsort"
    ),
    # Views and copies that never grow: reshape [T] <-> [T, 1], transpose [T, K], sizes.
    "views": Family(
        "receiver",
        functions=_qualify("torch", _VIEWS) + " torch.functional.split",
        methods=_VIEWS + " size dim numel view view_as reshape_as t contiguous clone detach split "
        "is_floating_point",
    ),
    # Views and joins that can grow (expand, broadcast_to, stack, cat).
    "expansion": Family(
        "meta",
        functions="torch.broadcast_to torch.stack torch.cat torch.concat",
        methods="expand expand_as broadcast_to",
    ),
    # Sums of products over tokens or candidates.
    "contractions": Family(
        "meta",
        functions="operator.matmul torch.matmul torch.dot torch.outer torch.functional.einsum",
        methods="matmul dot outer",
        strings=r"[A-Za-z.,\->\s]{1,64}",  # an einsum equation
    ),
    # Casts to the allowed dtypes, on the cpu.
    "conversions": Family(
        "receiver", methods="to float double long int bool type type_as cpu", strings="cpu"
    ),
    # Constants shaped like an input (masks, baselines).
    "like_factories": Family(
        "receiver", functions=_qualify("torch", "zeros_like ones_like full_like"), strings="cpu"
    ),
    # Constants sized by ints from a shape. No `empty*`: uninitialised memory would leak
    # server state into a loss.
    "factories": Family(
        "factory",
        functions=_qualify("torch", "zeros ones full arange"),
        methods="new_zeros new_ones new_full new_tensor",
        strings="cpu",
    ),
    # Python-number math on sizes, e.g. `loss / math.sqrt(x.shape[0])`.
    "math": Family(
        "none",
        functions=_qualify(
            "math",
            "sqrt log log2 log10 log1p exp expm1 pow fabs floor ceil isfinite isnan isinf",
        ),
    ),
}

# getattr's attribute -> the receiver it may be read from. Nothing that reaches storage,
# autograd state (`.data`, `.grad`, `.grad_fn`) or a bound method.
ATTRIBUTES: Final[dict[str, str]] = {
    **dict.fromkeys(("shape", "dtype", "ndim", "device", "T", "mT"), "tensor"),
    **dict.fromkeys(("is_floating_point", "is_signed", "is_complex"), "dtype"),
    **dict.fromkeys(("values", "indices"), "result"),  # torch.return_types of max, topk, sort
}
DTYPES: Final = {
    "float32": torch.float32,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
CONSTANTS: Final[dict[str, dict[str, object]]] = {
    "dtype": dict(DTYPES),
    "device": {"cpu": torch.device("cpu")},
    "layout": {"strided": torch.strided},
    "memory_format": {
        "contiguous_format": torch.contiguous_format,
        "preserve_format": torch.preserve_format,
    },
    "float": {"inf": math.inf, "-inf": -math.inf, "nan": math.nan},
}
MAX_INT: Final = 2**63  # JSON int literals and Python ints a node makes stay within int64
MAX_INT_EXPONENT: Final = 64  # `int ** int` beyond this is refused before it runs


def _read_attribute(receiver: object, name: str) -> object:
    kind = ATTRIBUTES.get(name)
    allowed = (
        (kind == "tensor" and isinstance(receiver, Tensor))
        or (kind == "dtype" and isinstance(receiver, torch.dtype))
        or (kind == "result" and type(receiver).__module__ == "torch.return_types")
    )
    if not allowed:
        raise TypeError(f"cannot read .{name} of a {type(receiver).__name__}")
    return getattr(receiver, name)


@dataclass(frozen=True)
class Op:
    target: str
    fn: Callable[..., Any]
    family: Family
    strings: re.Pattern[str] | None


def _resolve_function(qualified: str) -> Callable[..., Any]:
    if qualified == "getattr":
        return _read_attribute
    root, *path = qualified.split(".")
    value: Any = {"torch": torch, "math": math, "operator": operator}[root]
    for part in path:  # literal names from `ALLOW_LIST`, never from a graph
        value = getattr(value, part)
    return value  # type: ignore[no-any-return]


def _build_tables() -> tuple[dict[str, Op], dict[str, Op]]:
    functions: dict[str, Op] = {}
    methods: dict[str, Op] = {}
    for family in ALLOW_LIST.values():
        strings = None if family.strings is None else re.compile(family.strings)
        for name in family.functions.split():
            functions[name] = Op(name, _resolve_function(name), family, strings)
        for name in family.methods.split():
            methods[name] = Op(name, getattr(torch.Tensor, name), family, strings)
    return functions, methods


FUNCTIONS, METHODS = _build_tables()
