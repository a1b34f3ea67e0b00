"""The compiler of uploaded custom losses: a `create_custom_loss` request -> `CompiledCustomLoss`.

Owns (spec LOSS-15): decoding the `CustomLossGraph` (format 1) that SDK
0.38 traces with `torch.fx` — its name, declared inputs, node envelope and encoded
arguments — and validating all of it before any run: every call target is looked up in the
allow-list, literals are checked against what each operation accepts, in-place forms and
`out=` are refused, and the graph's size is capped (`CustomLossLimits`: node count, nesting
depth, literal count). Each call node becomes a `Step`, each value it frees after its last use
noted, so the interpreter keeps no more alive than fx's generated code would. Not owned: the
allow-list itself (`allow_list`), running (`interpreter`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from mock_server.engine.custom_loss.allow_list import (
    ATTRIBUTES,
    CONSTANTS,
    FUNCTIONS,
    MAX_INT,
    METHODS,
)
from mock_server.engine.custom_loss.interpreter import (
    CompiledCustomLoss,
    CustomLossError,
    CustomLossLimits,
    CustomLossSource,
    Ref,
    SliceOf,
    Step,
)

_INPUT_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_NODE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_KWARG_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_METRIC_KEY: Final = re.compile(r"custom/[a-z0-9_./-]{1,64}:(sum|mean)")
_MAX_INPUTS: Final = 16
_NODE_KEYS: Final = frozenset({"op", "name", "target", "args", "kwargs"})


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Decoder:
    """Turns encoded graph arguments into templates: Python values with `Ref`s for nodes."""

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
            if abs(enc) >= MAX_INT:
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
            return Ref(self.names[body])
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
                if not (part is None or isinstance(part, int | Ref)):
                    raise CustomLossError(f"{where}[{i}]", f"slice bound {_short(part)}")
            return SliceOf(*parts)
        if kind == "ellipsis" and body is True:
            return ...
        if kind == "dict":
            raise CustomLossError(where, "a dict is only accepted as the output's metrics")
        table = CONSTANTS.get(kind)
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


def _compile_call(node: Mapping[str, Any], index: int, decoder: _Decoder) -> Step:
    where = f"graph.nodes[{index}]"
    op_kind, target, name = node["op"], node["target"], node["name"]
    is_method = op_kind == "call_method"
    op = (METHODS if is_method else FUNCTIONS).get(target)
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
    if is_method and not (args and isinstance(args[0], Ref)):
        raise CustomLossError(f"{where}.args", f"{label}: a method call needs a node receiver")
    if target == "getattr" and (
        len(args) != 2 or kwargs or not (isinstance(args[1], str) and args[1] in ATTRIBUTES)
    ):
        raise CustomLossError(
            f"{where}.args",
            f"{label}: getattr reads one of {', '.join(ATTRIBUTES)}, got {_short(args[1:])}",
        )
    return Step(index, label, op, is_method, args, kwargs)


def _compile_output(
    node: Mapping[str, Any], index: int, decoder: _Decoder
) -> tuple[Ref, dict[str, Ref]]:
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
    if not isinstance(loss, Ref):
        raise CustomLossError(f"{where}[0][0]", f"the loss must be a tensor node; {expected}")
    metrics_enc = returned[1]
    if not (isinstance(metrics_enc, dict) and set(metrics_enc) == {"dict"}):
        raise CustomLossError(f"{where}[0][1]", f"the metrics must be a dict; {expected}")
    if not isinstance(metrics_enc["dict"], dict):
        raise CustomLossError(f"{where}[0][1].dict", "expected an object")
    metrics: dict[str, Ref] = {}
    for key, enc in metrics_enc["dict"].items():
        field = f"{where}[0][1].dict[{key!r}]"
        if not (isinstance(key, str) and _METRIC_KEY.fullmatch(key)):
            raise CustomLossError(field, "metric keys match custom/[a-z0-9_./-]{1,64}:(sum|mean)")
        ref = decoder.decode(enc, field, index, None)
        if not isinstance(ref, Ref):
            raise CustomLossError(field, f"metric {key!r} must be a tensor node")
        metrics[key] = ref
    return loss, metrics


def _refs(template: object) -> list[int]:
    if isinstance(template, Ref):
        return [template.index]
    if isinstance(template, list | tuple):
        return [i for item in template for i in _refs(item)]
    if isinstance(template, dict):
        return [i for item in template.values() for i in _refs(item)]
    if isinstance(template, SliceOf):
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
    steps: list[Step] = []
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
    compiled = CompiledCustomLoss(name, declared, steps, loss, metrics, len(nodes), limits)
    compiled.source = CustomLossSource(name, inputs, graph, limits)
    return compiled
