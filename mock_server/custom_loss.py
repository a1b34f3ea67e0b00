"""Uploaded custom losses: validate the graph `create_custom_loss` sends, then run it per datum.

Owns (spec LOSS-15): decoding the
`CustomLossGraph` (format 1) that SDK 0.38 traces with `torch.fx`, the allow-list of operations
such a graph may call, and the interpreter that runs a compiled graph on ONE datum. Not owned:
storing losses per session, mapping `CustomLossError` to HTTP statuses, summing datums and
backpropagating (`TrainingModel.forward_backward_per_datum`, via `as_datum_loss()`).

Security model. The graph is untrusted data; nothing in it ever becomes code.
- No eval/exec, imports or pickle. Call targets are looked up in `_ALLOW_LIST`, whose literal
  names are resolved once at import; methods run as `torch.Tensor.<name>(receiver, ...)` and
  only on a tensor. `getattr` reads fixed (receiver type, attribute) pairs: no `.data`,
  `.grad`, storage or dunders.
- Nothing mutates: no in-place methods, `out=` is refused and `inplace=` must be a literal
  False, so a loss cannot write into logprobs, the datum's inputs or any server tensor.
- Literals are data: JSON scalars, strings an operation explicitly takes (einsum equations,
  `reduction=`, attribute names, "cpu"), slices, and dtypes/devices/layouts/memory formats from
  small lists (cpu only). No randomness, no uninitialised memory (`empty*` would leak server
  memory into metrics), no host conversions (`item`, `tolist`, `numpy`), no `backward`.
- Resources (`CustomLossLimits`): node count, nesting depth and literal count are capped when
  compiling. When running, every call whose result could outgrow its inputs is bounded BEFORE
  it runs (each allow-list family says how: the broadcast of its tensor arguments, computed in
  Python, or a dry run on the meta device, which computes shapes without memory), so no single
  allocation exceeds `max_tensor_elements`; every result is then checked (tensor size, elements
  made per datum, int magnitude, sequence and string length), and Python integer powers and
  sequence or string repetition are refused before they run. CPU time is bounded only by node
  count times per-call cost; a front end should bound request time.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import torch
from torch import Tensor

from mock_server.engine.errors import InvalidInputError
from mock_server.engine.training import DatumLoss, DatumLossResult

__all__ = ["CompiledCustomLoss", "CustomLossError", "CustomLossLimits", "compile_custom_loss"]


class CustomLossError(InvalidInputError):
    """A custom loss is malformed or not allowed (at upload), or failed on a datum (at run time).

    `field` is a path into the request (`graph.nodes[4].target`, `inputs[1].rank`, ...) and the
    message names the node, so a client sees which line of its loss is at fault.
    """


@dataclass(frozen=True)
class CustomLossLimits:
    max_nodes: int = 10_000  # graph nodes, placeholders and output included
    max_arg_depth: int = 32  # nesting of encoded arguments ({"tuple": [[...]]} is 3 levels)
    max_literals: int = 200_000  # encoded values in the whole graph (bounds literal lists)
    max_tensor_elements: int = 1 << 24  # elements of any one tensor a node makes (64 MiB f32)
    max_total_elements: int = 1 << 28  # elements of all tensors one datum's run makes
    max_sequence_length: int = 1 << 16  # length of a tuple or list a node makes


# ----- the allow-list -----------------------------------------------------------------------


# How a call's result size is bounded before it runs (`_Run.check_size`):
#   "broadcast": at most the broadcast of its tensor arguments' shapes (computed, no torch call);
#   "receiver":  at most its first tensor argument (views, casts, sorts, *_like); checked after;
#   "meta":      run first on the meta device (shapes only, ~0.1-0.5 ms) and checked;
#   "factory":   like "meta", and refused when the size cannot be known (it comes from values);
#   "none":      makes no tensor from sizes (attributes, Python math).
_SizeRule = Literal["broadcast", "receiver", "meta", "factory", "none"]


@dataclass(frozen=True)
class _Family:
    size: _SizeRule
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


_ALLOW_LIST: Final[dict[str, _Family]] = {
    # fx records Python syntax on traced values as operator calls: `a * b`, `-x`, `a < b`,
    # `~mask`, on tensors and on ints read from shapes. No shifts, no setitem, no in-place
    # forms; `_check_python_operands` guards the pure-Python cases.
    "operators": _Family(
        "broadcast",
        functions=_qualify(
            "operator",
            "add sub mul truediv floordiv mod pow neg pos abs lt le gt ge eq ne and_ or_ xor "
            "invert",
        ),
    ),
    # `x[i]`, `x[mask]`, `x[:, idx]` and picking target columns: advanced indexing can
    # broadcast index tensors, so sizes are checked on meta.
    "indexing": _Family(
        "meta",
        functions="operator.getitem " + _qualify("torch", _INDEXING),
        methods=_INDEXING,
    ),
    # `x.shape[0]`, `x.dtype`, `x.T`, `topk(...).values`: see `_ATTRIBUTES` for who has what.
    "attributes": _Family("none", functions="getattr", strings=r"[A-Za-z_]+"),
    # Per-token math on logprobs, ratios, advantages and masks: the body of every loss.
    # `div(rounding_mode=)` is the one string.
    "elementwise": _Family(
        "broadcast",
        functions=_qualify("torch", _ELEMENTWISE),
        methods=_ELEMENTWISE + " masked_fill",
        strings="trunc|floor",
    ),
    # torch.nn.functional activations; F.logsigmoid and F.softplus trace as torch._C._nn.*.
    "activations": _Family("broadcast", functions="torch._C._nn.log_sigmoid torch._C._nn.softplus"),
    "relu": _Family("broadcast", functions="torch.nn.functional.relu", inplace_arg=1),
    # Normalisation over the K candidates of [T, K] logprobs (distillation, KL to a target).
    "softmax": _Family(
        "broadcast",
        functions="torch.softmax torch.log_softmax torch.nn.functional.softmax "
        "torch.nn.functional.log_softmax",
        methods="softmax log_softmax",
    ),
    # Reduce tokens (and candidates) to the per-datum scalar loss and metrics.
    "reductions": _Family(
        "broadcast", functions=_qualify("torch", _REDUCTIONS), methods=_REDUCTIONS + " norm"
    ),
    # Reference losses written with torch.nn.functional; elementwise with reduction="none".
    "nn_losses": _Family(
        "broadcast",
        functions=_qualify(
            "torch.nn.functional",
            "mse_loss smooth_l1_loss kl_div binary_cross_entropy_with_logits",
        ),
        strings="none|mean|sum|batchmean",
    ),
    # The top candidates, ranks.
    "ordering": _Family(
        "receiver", functions=_qualify("torch", "topk sort argsort"), methods="topk sort argsort"
    ),
    # Views and copies that never grow: reshape [T] <-> [T, 1], transpose [T, K], sizes.
    "views": _Family(
        "receiver",
        functions=_qualify("torch", _VIEWS) + " torch.functional.split",
        methods=_VIEWS + " size dim numel view view_as reshape_as t contiguous clone detach split "
        "is_floating_point",
    ),
    # Views and joins that can grow (expand, broadcast_to, stack, cat).
    "expansion": _Family(
        "meta",
        functions="torch.broadcast_to torch.stack torch.cat torch.concat",
        methods="expand expand_as broadcast_to",
    ),
    # Sums of products over tokens or candidates.
    "contractions": _Family(
        "meta",
        functions="operator.matmul torch.matmul torch.dot torch.outer torch.functional.einsum",
        methods="matmul dot outer",
        strings=r"[A-Za-z.,\->\s]{1,64}",  # an einsum equation
    ),
    # Casts to the allowed dtypes, on the cpu.
    "conversions": _Family(
        "receiver", methods="to float double long int bool type type_as cpu", strings="cpu"
    ),
    # Constants shaped like an input (masks, baselines).
    "like_factories": _Family(
        "receiver", functions=_qualify("torch", "zeros_like ones_like full_like"), strings="cpu"
    ),
    # Constants sized by ints from a shape. No `empty*`: uninitialised memory would leak
    # server state into a loss.
    "factories": _Family(
        "factory",
        functions=_qualify("torch", "zeros ones full arange"),
        methods="new_zeros new_ones new_full new_tensor",
        strings="cpu",
    ),
    # Python-number math on sizes, e.g. `loss / math.sqrt(x.shape[0])`.
    "math": _Family(
        "none",
        functions=_qualify(
            "math",
            "sqrt log log2 log10 log1p exp expm1 pow fabs floor ceil isfinite isnan isinf",
        ),
    ),
}

# getattr's attribute -> the receiver it may be read from. Nothing that reaches storage,
# autograd state (`.data`, `.grad`, `.grad_fn`) or a bound method.
_ATTRIBUTES: Final[dict[str, str]] = {
    **dict.fromkeys(("shape", "dtype", "ndim", "device", "T", "mT"), "tensor"),
    **dict.fromkeys(("is_floating_point", "is_signed", "is_complex"), "dtype"),
    **dict.fromkeys(("values", "indices"), "result"),  # torch.return_types of max, topk, sort
}
_DTYPES: Final = {
    "float32": torch.float32,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
_CONSTANTS: Final[dict[str, dict[str, object]]] = {
    "dtype": dict(_DTYPES),
    "device": {"cpu": torch.device("cpu")},
    "layout": {"strided": torch.strided},
    "memory_format": {
        "contiguous_format": torch.contiguous_format,
        "preserve_format": torch.preserve_format,
    },
    "float": {"inf": math.inf, "-inf": -math.inf, "nan": math.nan},
}
_MAX_INT: Final = 2**63  # JSON int literals and Python ints a node makes stay within int64
_MAX_INT_EXPONENT: Final = 64  # `int ** int` beyond this is refused before it runs
_META: Final = torch.device("meta")


def _read_attribute(receiver: object, name: str) -> object:
    kind = _ATTRIBUTES.get(name)
    allowed = (
        (kind == "tensor" and isinstance(receiver, Tensor))
        or (kind == "dtype" and isinstance(receiver, torch.dtype))
        or (kind == "result" and type(receiver).__module__ == "torch.return_types")
    )
    if not allowed:
        raise TypeError(f"cannot read .{name} of a {type(receiver).__name__}")
    return getattr(receiver, name)


@dataclass(frozen=True)
class _Op:
    target: str
    fn: Callable[..., Any]
    family: _Family
    strings: re.Pattern[str] | None


def _resolve_function(qualified: str) -> Callable[..., Any]:
    if qualified == "getattr":
        return _read_attribute
    root, *path = qualified.split(".")
    value: Any = {"torch": torch, "math": math, "operator": operator}[root]
    for part in path:  # literal names from `_ALLOW_LIST`, never from a graph
        value = getattr(value, part)
    return value  # type: ignore[no-any-return]


def _build_tables() -> tuple[dict[str, _Op], dict[str, _Op]]:
    functions: dict[str, _Op] = {}
    methods: dict[str, _Op] = {}
    for family in _ALLOW_LIST.values():
        strings = None if family.strings is None else re.compile(family.strings)
        for name in family.functions.split():
            functions[name] = _Op(name, _resolve_function(name), family, strings)
        for name in family.methods.split():
            methods[name] = _Op(name, getattr(torch.Tensor, name), family, strings)
    return functions, methods


_FUNCTIONS, _METHODS = _build_tables()

# ----- decoding and validation -------------------------------------------------------------

_INPUT_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_NODE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_KWARG_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_METRIC_KEY: Final = re.compile(r"custom/[a-z0-9_./-]{1,64}:(sum|mean)")
_MAX_INPUTS: Final = 16
_NODE_KEYS: Final = frozenset({"op", "name", "target", "args", "kwargs"})


@dataclass(frozen=True)
class _Ref:
    index: int  # the node whose value this is


@dataclass(frozen=True)
class _SliceOf:
    start: object
    stop: object
    step: object


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Decoder:
    """Turns encoded graph arguments into templates: Python values with `_Ref`s for nodes."""

    def __init__(self, names: Mapping[str, int], limits: CustomLossLimits) -> None:
        self.names = names
        self.limits = limits
        self.literals = 0

    def decode(
        self, enc: object, where: str, node: int, strings: re.Pattern[str] | None, depth: int = 0
    ) -> object:
        self.literals += 1
        if self.literals > self.limits.max_literals:
            raise CustomLossError("graph", f"more than {self.limits.max_literals} encoded values")
        if depth > self.limits.max_arg_depth:
            raise CustomLossError(where, f"nested deeper than {self.limits.max_arg_depth} levels")
        if enc is None or isinstance(enc, bool | float):
            return enc
        if isinstance(enc, int):
            if abs(enc) >= _MAX_INT:
                raise CustomLossError(where, f"integer {_short(enc)} is outside int64")
            return enc
        if isinstance(enc, str):
            if strings is None or not strings.fullmatch(enc):
                raise CustomLossError(where, f"string {_short(enc)} is not an accepted argument")
            return enc
        if isinstance(enc, list):
            return [
                self.decode(item, f"{where}[{i}]", node, strings, depth + 1)
                for i, item in enumerate(enc)
            ]
        if isinstance(enc, dict):
            if len(enc) != 1:
                raise CustomLossError(
                    where, f"expected a one-key object, got keys {sorted(map(str, enc))}"
                )
            ((kind, body),) = enc.items()
            return self._decode_object(kind, body, f"{where}.{kind}", node, strings, depth)
        raise CustomLossError(where, f"not a JSON value: {type(enc).__name__}")

    def _decode_object(
        self,
        kind: str,
        body: object,
        where: str,
        node: int,
        strings: re.Pattern[str] | None,
        depth: int,
    ) -> object:
        if kind == "ref":
            if not isinstance(body, str) or body not in self.names:
                raise CustomLossError(where, f"refers to unknown node {_short(body)}")
            if self.names[body] >= node:
                raise CustomLossError(
                    where, f"refers to node {body!r}, which does not come before this one"
                )
            return _Ref(self.names[body])
        if kind == "tuple" and isinstance(body, list):
            items = (
                self.decode(item, f"{where}[{i}]", node, strings, depth + 1)
                for i, item in enumerate(body)
            )
            return tuple(items)
        if kind == "slice" and isinstance(body, list) and len(body) == 3:
            parts = [
                self.decode(p, f"{where}[{i}]", node, None, depth + 1) for i, p in enumerate(body)
            ]
            for i, part in enumerate(parts):
                if not (part is None or isinstance(part, int | _Ref)):
                    raise CustomLossError(f"{where}[{i}]", f"slice bound {_short(part)}")
            return _SliceOf(*parts)
        if kind == "ellipsis" and body is True:
            return ...
        if kind == "dict":
            raise CustomLossError(where, "a dict is only accepted as the output's metrics")
        table = _CONSTANTS.get(kind)
        if table is not None and isinstance(body, str) and body in table:
            return table[body]
        if table is not None:
            raise CustomLossError(
                where, f"{_short(body)} is not accepted; accepted: {', '.join(table)}"
            )
        raise CustomLossError(where, f"unknown encoding {_short(kind)} (body {_short(body)})")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 256 or not name.isprintable():
        raise CustomLossError("name", f"expected 1-256 printable characters, got {_short(name)}")
    return name


def _check_inputs(inputs: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= _MAX_INPUTS:
        raise CustomLossError("inputs", f"expected a list of 1 to {_MAX_INPUTS} inputs")
    declared: list[tuple[str, int]] = []
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or set(item) != {"name", "rank"}:
            raise CustomLossError(f"inputs[{i}]", 'expected {"name": ..., "rank": ...}')
        name, rank = item["name"], item["rank"]
        if not isinstance(name, str) or not _INPUT_NAME.fullmatch(name):
            raise CustomLossError(
                f"inputs[{i}].name", f"{_short(name)} must match [a-z_][a-z0-9_]{{0,63}}"
            )
        if any(name == seen for seen, _ in declared):
            raise CustomLossError(f"inputs[{i}].name", f"{name!r} is declared twice")
        if (i == 0) != (name == "logprobs"):
            raise CustomLossError(f"inputs[{i}].name", "logprobs must be the first input, once")
        allowed = (1, 2) if i == 0 else (0, 1, 2)
        if type(rank) is not int or rank not in allowed:
            raise CustomLossError(
                f"inputs[{i}].rank", f"{name} has rank {_short(rank)}; expected one of {allowed}"
            )
        declared.append((name, rank))
    return tuple(declared)


def _check_envelope(graph: object, limits: CustomLossLimits) -> list[dict[str, Any]]:
    if not isinstance(graph, dict) or set(graph) != {"format", "nodes"}:
        raise CustomLossError("graph", 'expected {"format": 1, "nodes": [...]}')
    if type(graph["format"]) is not int or graph["format"] != 1:
        raise CustomLossError("graph.format", f"expected 1, got {_short(graph['format'])}")
    nodes = graph["nodes"]
    if not isinstance(nodes, list):
        raise CustomLossError("graph.nodes", "expected a list")
    if len(nodes) > limits.max_nodes:
        raise CustomLossError("graph.nodes", f"{len(nodes)} nodes; the limit is {limits.max_nodes}")
    for i, node in enumerate(nodes):
        where = f"graph.nodes[{i}]"
        if not isinstance(node, dict) or not {"op", "name", "target"} <= set(node) <= _NODE_KEYS:
            raise CustomLossError(
                where, f"expected keys {sorted(_NODE_KEYS)} (args, kwargs optional)"
            )
        for key in ("op", "name", "target"):
            if not isinstance(node[key], str):
                raise CustomLossError(
                    f"{where}.{key}", f"expected a string, got {_short(node[key])}"
                )
        if not _NODE_NAME.fullmatch(node["name"]):
            raise CustomLossError(f"{where}.name", f"{_short(node['name'])} is not a node name")
        if not isinstance(node.get("args", []), list):
            raise CustomLossError(f"{where}.args", "expected a list")
        kwargs = node.get("kwargs", {})
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise CustomLossError(f"{where}.kwargs", "expected an object")
    return nodes


@dataclass(frozen=True)
class _Step:
    """One call node, compiled: its operation and argument templates."""

    index: int  # position in graph.nodes, and in the run's value list
    label: str  # "node 'mul' (operator.mul)", for messages
    op: _Op
    is_method: bool
    args: tuple[object, ...]
    kwargs: dict[str, object]
    frees: tuple[int, ...] = ()  # values whose last use is this step

    @property
    def field(self) -> str:
        return f"graph.nodes[{self.index}]"


def _compile_call(node: Mapping[str, Any], index: int, decoder: _Decoder) -> _Step:
    where = f"graph.nodes[{index}]"
    op_kind, target, name = node["op"], node["target"], node["name"]
    is_method = op_kind == "call_method"
    op = (_METHODS if is_method else _FUNCTIONS).get(target)
    label = f"node {name!r} ({target})"
    if op is None:
        kind = "torch.Tensor method" if is_method else "function"
        raise CustomLossError(
            f"{where}.target", f"{label}: {kind} {_short(target)} is not in the allow-list"
        )
    args = tuple(
        decoder.decode(arg, f"{where}.args[{i}]", index, op.strings)
        for i, arg in enumerate(node.get("args", []))
    )
    kwargs: dict[str, object] = {}
    for key, enc in node.get("kwargs", {}).items():
        if not _KWARG_NAME.fullmatch(key) or key in ("out", "pin_memory"):
            raise CustomLossError(f"{where}.kwargs", f"{label}: keyword {_short(key)} is refused")
        kwargs[key] = decoder.decode(enc, f"{where}.kwargs.{key}", index, op.strings)
    inplace_arg = op.family.inplace_arg
    if "inplace" in kwargs and kwargs["inplace"] is not False:
        raise CustomLossError(f"{where}.kwargs.inplace", f"{label}: in-place calls are refused")
    if inplace_arg is not None and len(args) > inplace_arg and args[inplace_arg] is not False:
        raise CustomLossError(
            f"{where}.args[{inplace_arg}]", f"{label}: in-place calls are refused"
        )
    if is_method and not (args and isinstance(args[0], _Ref)):
        raise CustomLossError(f"{where}.args", f"{label}: a method call needs a node receiver")
    if target == "getattr" and (
        len(args) != 2 or kwargs or not (isinstance(args[1], str) and args[1] in _ATTRIBUTES)
    ):
        raise CustomLossError(
            f"{where}.args",
            f"{label}: getattr reads one of {', '.join(_ATTRIBUTES)}, got {_short(args[1:])}",
        )
    return _Step(index, label, op, is_method, args, kwargs)


def _compile_output(
    node: Mapping[str, Any], index: int, decoder: _Decoder
) -> tuple[_Ref, dict[str, _Ref]]:
    where = f"graph.nodes[{index}].args"
    args = node.get("args", [])
    expected = 'the output must be (loss, {"custom/<name>:sum|mean": tensor})'
    if node["target"] != "output" or node.get("kwargs", {}) or len(args) != 1:
        raise CustomLossError(f"graph.nodes[{index}]", expected)
    returned = args[0]
    if isinstance(returned, dict) and set(returned) == {"tuple"}:
        returned = returned["tuple"]  # fx keeps `return a, b` a tuple; a list return stays a list
    if not (isinstance(returned, list) and len(returned) == 2):
        raise CustomLossError(f"{where}[0]", expected)
    loss = decoder.decode(returned[0], f"{where}[0][0]", index, None)
    if not isinstance(loss, _Ref):
        raise CustomLossError(f"{where}[0][0]", f"the loss must be a tensor node; {expected}")
    metrics_enc = returned[1]
    if not (isinstance(metrics_enc, dict) and set(metrics_enc) == {"dict"}):
        raise CustomLossError(f"{where}[0][1]", f"the metrics must be a dict; {expected}")
    if not isinstance(metrics_enc["dict"], dict):
        raise CustomLossError(f"{where}[0][1].dict", "expected an object")
    metrics: dict[str, _Ref] = {}
    for key, enc in metrics_enc["dict"].items():
        field = f"{where}[0][1].dict[{key!r}]"
        if not (isinstance(key, str) and _METRIC_KEY.fullmatch(key)):
            raise CustomLossError(field, "metric keys match custom/[a-z0-9_./-]{1,64}:(sum|mean)")
        ref = decoder.decode(enc, field, index, None)
        if not isinstance(ref, _Ref):
            raise CustomLossError(field, f"metric {key!r} must be a tensor node")
        metrics[key] = ref
    return loss, metrics


def _refs(template: object) -> list[int]:
    if isinstance(template, _Ref):
        return [template.index]
    if isinstance(template, list | tuple):
        return [i for item in template for i in _refs(item)]
    if isinstance(template, dict):
        return [i for item in template.values() for i in _refs(item)]
    if isinstance(template, _SliceOf):
        return _refs((template.start, template.stop, template.step))
    return []


def compile_custom_loss(
    name: str,
    inputs: list[dict[str, Any]],
    graph: dict[str, Any],
    limits: CustomLossLimits | None = None,
) -> CompiledCustomLoss:
    """Validate a `create_custom_loss` request's name, inputs and graph, all before any run.

    Raises `CustomLossError` naming the field (and node) at fault.
    """
    limits = limits or CustomLossLimits()
    name = _check_name(name)
    declared = _check_inputs(inputs)
    nodes = _check_envelope(graph, limits)
    names: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node["name"] in names:
            raise CustomLossError(
                f"graph.nodes[{index}].name", f"node name {node['name']!r} is used twice"
            )
        names[node["name"]] = index
    placeholders = [i for i, node in enumerate(nodes) if node["op"] == "placeholder"]
    if placeholders != list(range(len(declared))):
        raise CustomLossError(
            "graph.nodes",
            f"expected {len(declared)} placeholders first ({', '.join(n for n, _ in declared)}), "
            f"got placeholders at {placeholders}",
        )
    for index, (input_name, _) in enumerate(declared):
        node = nodes[index]
        if node["target"] != input_name:
            raise CustomLossError(
                f"graph.nodes[{index}].target",
                f"placeholder {index} is {_short(node['target'])}, but inputs[{index}] is "
                f"{input_name!r}",
            )
        if node.get("args") or node.get("kwargs"):
            raise CustomLossError(f"graph.nodes[{index}]", "a placeholder takes no default")
    if not nodes or nodes[-1]["op"] != "output":
        raise CustomLossError("graph.nodes", "the last node must be the output")
    decoder = _Decoder(names, limits)
    steps: list[_Step] = []
    for index in range(len(declared), len(nodes) - 1):
        node = nodes[index]
        op_kind = node["op"]
        if op_kind in ("get_attr", "call_module"):
            raise CustomLossError(
                f"graph.nodes[{index}].op",
                f"node {node['name']!r}: {op_kind} is refused; a custom loss may only read "
                "logprobs and its inputs, and call functions and tensor methods",
            )
        if op_kind == "output":
            raise CustomLossError(
                f"graph.nodes[{index}].op",
                f"node {node['name']!r}: only the last node is the output",
            )
        if op_kind not in ("call_function", "call_method"):
            raise CustomLossError(
                f"graph.nodes[{index}].op", f"node {node['name']!r}: unknown op {_short(op_kind)}"
            )
        steps.append(_compile_call(node, index, decoder))
    loss, metrics = _compile_output(nodes[-1], len(nodes) - 1, decoder)
    # Free each value after its last use, an unused one at once (as fx's generated code does);
    # the outputs are kept.
    kept = {loss.index, *(ref.index for ref in metrics.values())}
    last_use = {ref: step.index for step in steps for ref in _refs((step.args, step.kwargs))}
    for step in steps:
        if step.index not in last_use:
            last_use[step.index] = step.index
    frees: dict[int, list[int]] = {}
    for ref, user in last_use.items():
        if ref not in kept:
            frees.setdefault(user, []).append(ref)
    steps = [replace(step, frees=tuple(frees.get(step.index, ()))) for step in steps]
    return CompiledCustomLoss(name, declared, steps, loss, metrics, len(nodes), limits)


# ----- running ------------------------------------------------------------------------------


def _fill(template: object, values: Sequence[object]) -> object:
    if isinstance(template, _Ref):
        return values[template.index]
    if isinstance(template, list):
        return [_fill(item, values) for item in template]
    if isinstance(template, tuple):
        return tuple(_fill(item, values) for item in template)
    if isinstance(template, _SliceOf):
        return slice(*(_fill(p, values) for p in (template.start, template.stop, template.step)))
    return template


def _to_meta(value: object) -> object:
    if isinstance(value, Tensor):
        return value.detach().to(_META)
    if isinstance(value, torch.device):
        return _META
    if isinstance(value, list):
        return [_to_meta(item) for item in value]
    if isinstance(value, tuple) and not isinstance(value, torch.Size):
        return tuple(_to_meta(item) for item in value)
    return value


def _is_basic_index(index: object) -> bool:
    """Ints, slices of ints, None and ... only: indexing that makes a view, never a copy."""
    items = index if isinstance(index, tuple) else (index,)
    return all(
        item is None
        or item is ...
        or type(item) is int
        or (
            isinstance(item, slice)
            and all(p is None or type(p) is int for p in (item.start, item.stop, item.step))
        )
        for item in items
    )


def _broadcast_elements(shapes: Sequence[torch.Size]) -> int | None:
    """Elements of the broadcast of `shapes`, or None where they do not broadcast."""
    elements = 1
    for axis in range(1, max(len(shape) for shape in shapes) + 1):
        sizes = {shape[-axis] for shape in shapes if len(shape) >= axis} - {1}
        if len(sizes) > 1:
            return None
        elements *= sizes.pop() if sizes else 1
    return elements


def _tensors(value: object) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for item in value for t in _tensors(item)]
    return []


class _Run:
    """Resource accounting for one datum's run."""

    def __init__(self, limits: CustomLossLimits) -> None:
        self.limits = limits
        self.elements = 0

    def check_size(self, step: _Step, args: Sequence[object], kwargs: dict[str, object]) -> None:
        """Refuse a call whose result would exceed the size limit, before it runs."""
        rule = step.op.family.size
        if rule in ("none", "receiver"):
            return
        if rule == "broadcast":
            shapes = [v.shape for v in (*args, *kwargs.values()) if isinstance(v, Tensor)]
            if len(shapes) < 2:
                return  # no larger than its one tensor, which was checked when it was made
            elements = _broadcast_elements(shapes)
            if elements is not None:
                self._check_size(step, elements)
                return
            # not broadcastable: let the meta run find out what the call does
        elif step.op.target == "operator.getitem" and (
            not isinstance(args[0], Tensor) or _is_basic_index(args[1])
        ):
            return  # a tuple's element, or a view no larger than the tensor it indexes
        self._dry_run(step, args, kwargs)

    def _dry_run(self, step: _Step, args: Sequence[object], kwargs: dict[str, object]) -> None:
        factory = step.op.family.size == "factory"
        meta_args = [_to_meta(arg) for arg in args]
        meta_kwargs = {key: _to_meta(value) for key, value in kwargs.items()}
        if factory:
            meta_kwargs["device"] = _META
        try:
            with torch.no_grad():
                shaped = step.op.fn(*meta_args, **meta_kwargs)
        except Exception as error:
            if factory:  # its size depends on tensor values: it cannot be bounded
                raise CustomLossError(
                    step.field,
                    f"{step.label}: result size not known before running "
                    f"({type(error).__name__}); size a new tensor with ints such as x.shape[0]",
                ) from error
            return  # data-dependent (x[mask]): bounded by its inputs, checked afterwards
        for tensor in _tensors(shaped):
            self._check_size(step, tensor.numel())

    def _check_size(self, step: _Step, elements: int) -> None:
        if elements > self.limits.max_tensor_elements:
            raise CustomLossError(
                step.field,
                f"{step.label} makes a tensor of {elements} elements; the limit is "
                f"{self.limits.max_tensor_elements}",
            )

    def check_result(self, step: _Step, value: object) -> None:
        if isinstance(value, Tensor):
            self._check_size(step, value.numel())
            if value.dtype not in _DTYPES.values() or value.device.type != "cpu":
                raise CustomLossError(
                    step.field, f"{step.label} made a {value.dtype} tensor on {value.device}"
                )
            self.elements += value.numel()
            if self.elements > self.limits.max_total_elements:
                raise CustomLossError(
                    step.field,
                    f"{step.label}: the loss made more than {self.limits.max_total_elements} "
                    "tensor elements for one datum",
                )
        elif isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= _MAX_INT:
                raise CustomLossError(step.field, f"{step.label} made an int outside int64")
        elif isinstance(value, list | tuple | str):
            if len(value) > self.limits.max_sequence_length:
                raise CustomLossError(
                    step.field, f"{step.label} made a sequence of {len(value)} items"
                )
            if not isinstance(value, str):
                for item in value:
                    self.check_result(step, item)
        elif not (
            value is None or isinstance(value, float | bool | str | torch.dtype | torch.device)
        ):
            raise CustomLossError(
                step.field, f"{step.label} made a {type(value).__name__}, which a loss cannot use"
            )


def _check_python_operands(step: _Step, args: Sequence[object]) -> None:
    """Refuse the Python-level operations whose cost grows with operand values."""
    target = step.op.target
    if not target.startswith("operator."):
        return
    if any(isinstance(arg, str) for arg in args):
        raise TypeError("strings are not operands")
    if any(isinstance(arg, list | tuple) for arg in args) and target not in (
        "operator.getitem",
        "operator.add",
        "operator.eq",
        "operator.ne",
    ):
        raise TypeError("sequences only support indexing, + and ==")
    if target == "operator.pow" and len(args) == 2:
        base, exponent = args
        if (
            type(base) is int
            and type(exponent) is int
            and exponent > _MAX_INT_EXPONENT
            and abs(base) > 1
        ):
            raise OverflowError(f"int power with exponent {exponent} > {_MAX_INT_EXPONENT}")


class CompiledCustomLoss:
    """A validated custom loss. Call it on one datum: `(loss, metrics) = loss(logprobs, inputs)`."""

    def __init__(
        self,
        name: str,
        inputs: tuple[tuple[str, int], ...],
        steps: Sequence[_Step],
        loss: _Ref,
        metrics: Mapping[str, _Ref],
        node_count: int,
        limits: CustomLossLimits,
    ) -> None:
        self.name = name
        self._inputs = inputs  # ("logprobs", rank), then (loss_fn_inputs key, rank) in order
        self._steps = tuple(steps)
        self._loss = loss
        self._metrics = dict(metrics)
        self._node_count = node_count
        self._limits = limits

    @property
    def input_names(self) -> tuple[str, ...]:
        """The `loss_fn_inputs` keys the loss reads, in parameter order (logprobs excluded)."""
        return tuple(name for name, _ in self._inputs[1:])

    @property
    def input_ranks(self) -> dict[str, int]:
        """Declared rank of each parameter, `logprobs` (= target_tokens' rank) first."""
        return dict(self._inputs)

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return tuple(self._metrics)

    def check_datum(self, index: int, loss_fn_inputs: Mapping[str, Tensor]) -> None:
        """Raise unless datum `index` has target_tokens at logprobs' rank and every input at
        its declared rank (what the SDK's `check_loss_inputs` checks on the client)."""
        (_, logprobs_rank), *rest = self._inputs
        for key, rank in [("target_tokens", logprobs_rank), *rest]:
            self._check_tensor(f"data[{index}].loss_fn_inputs.{key}", loss_fn_inputs.get(key), rank)

    @staticmethod
    def _check_tensor(field: str, value: object, rank: int) -> Tensor:
        if value is None:
            raise CustomLossError(field, f"missing; the loss reads it with rank {rank}")
        if not isinstance(value, Tensor):
            raise CustomLossError(field, f"expected a tensor, got a {type(value).__name__}")
        if value.dim() != rank:
            raise CustomLossError(field, f"has rank {value.dim()}; the loss declared rank {rank}")
        return value

    def __call__(
        self, logprobs: Tensor, inputs: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the graph on one datum: `logprobs` is shaped like its target_tokens ([T] or
        [T, K]); `inputs` are its loss_fn_inputs. Returns (scalar loss, scalar metrics)."""
        values: list[object] = [None] * self._node_count
        values[0] = self._check_tensor("logprobs", logprobs, self._inputs[0][1])
        for index, (name, rank) in enumerate(self._inputs[1:], start=1):
            values[index] = self._check_tensor(f"loss_fn_inputs.{name}", inputs.get(name), rank)
        run = _Run(self._limits)
        for step in self._steps:
            args = tuple(_fill(arg, values) for arg in step.args)
            kwargs = {key: _fill(value, values) for key, value in step.kwargs.items()}
            try:
                if step.is_method and not isinstance(args[0], Tensor):
                    raise TypeError(f"the receiver is a {type(args[0]).__name__}, not a tensor")
                _check_python_operands(step, args)
                run.check_size(step, args, kwargs)
                result = step.op.fn(*args, **kwargs)
            except CustomLossError:
                raise
            except Exception as error:
                raise CustomLossError(
                    step.field, f"{step.label} failed: {type(error).__name__}: {_first_line(error)}"
                ) from error
            run.check_result(step, result)
            values[step.index] = result
            for index in step.frees:
                values[index] = None
        return self._outputs(values)

    def _outputs(self, values: Sequence[object]) -> tuple[Tensor, dict[str, Tensor]]:
        loss = values[self._loss.index]
        if not (isinstance(loss, Tensor) and loss.dim() == 0 and loss.is_floating_point()):
            got = (
                f"a {loss.dtype} tensor of shape {list(loss.shape)}"
                if isinstance(loss, Tensor)
                else type(loss).__name__
            )
            raise CustomLossError(
                "graph.output.loss", f"loss {self.name!r} must be a floating scalar, got {got}"
            )
        metrics: dict[str, Tensor] = {}
        for key, ref in self._metrics.items():
            value = values[ref.index]
            if not (isinstance(value, Tensor) and value.numel() == 1):
                got = (
                    f"shape {list(value.shape)}"
                    if isinstance(value, Tensor)
                    else type(value).__name__
                )
                raise CustomLossError(
                    f"graph.output.metrics[{key!r}]", f"must be a one-element tensor, got {got}"
                )
            metrics[key] = value if value.dim() == 0 else value.reshape(())
        return loss, metrics

    def as_datum_loss(self) -> DatumLoss:
        """This loss as `TrainingModel.forward_backward_per_datum`'s per-datum callable."""

        def datum_loss(logprobs: Tensor, inputs: Mapping[str, Tensor]) -> DatumLossResult:
            loss, metrics = self(logprobs, inputs)
            return DatumLossResult(loss, {}, metrics)

        return datum_loss


def _first_line(error: Exception, limit: int = 300) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
