"""The interpreter of compiled custom losses, and the resource guard of each run.

Owns: `CompiledCustomLoss` (a validated graph, called on ONE datum: `(loss, metrics) =
loss(logprobs, inputs)`), the program it runs (`Step`s whose argument templates hold `Ref`s to
earlier values), `CustomLossError`, and the run-time half of `CustomLossLimits` (`_Run`: sizes
bounded before a call, results checked after; the package docstring says how). Not owned:
building a program (`compiler`), summing datums and backpropagating
(`TrainingModel.forward_backward_per_datum`, via `as_datum_loss()`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import Tensor

from mock_server.engine.custom_loss.allow_list import DTYPES, MAX_INT, MAX_INT_EXPONENT, Op
from mock_server.engine.errors import InvalidInputError
from mock_server.engine.training import DatumLoss, DatumLossResult

_META: Final = torch.device("meta")


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


# ----- the program: steps whose argument templates refer to earlier values -----


@dataclass(frozen=True)
class Ref:
    index: int  # the node whose value this is


@dataclass(frozen=True)
class SliceOf:
    """A slice whose bounds may be `Ref`s (`x[:n]` with `n` read from a shape)."""

    start: object
    stop: object
    step: object


@dataclass(frozen=True)
class Step:
    """One call node, compiled: its operation and argument templates."""

    index: int  # position in graph.nodes, and in the run's value list
    label: str  # "node 'mul' (operator.mul)", for messages
    op: Op
    is_method: bool
    args: tuple[object, ...]
    kwargs: dict[str, object]
    frees: tuple[int, ...] = ()  # values whose last use is this step

    @property
    def field(self) -> str:
        return f"graph.nodes[{self.index}]"


# ----- running -----


def _fill(template: object, values: Sequence[object]) -> object:
    if isinstance(template, Ref):
        return values[template.index]
    if isinstance(template, list):
        return [_fill(item, values) for item in template]
    if isinstance(template, tuple):
        return tuple(_fill(item, values) for item in template)
    if isinstance(template, SliceOf):
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

    def check_size(self, step: Step, args: Sequence[object], kwargs: dict[str, object]) -> None:
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

    def _dry_run(self, step: Step, args: Sequence[object], kwargs: dict[str, object]) -> None:
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

    def _check_size(self, step: Step, elements: int) -> None:
        if elements > self.limits.max_tensor_elements:
            raise CustomLossError(
                step.field,
                f"{step.label} makes a tensor of {elements} elements; the limit is "
                f"{self.limits.max_tensor_elements}",
            )

    def check_result(self, step: Step, value: object) -> None:
        if isinstance(value, Tensor):
            self._check_size(step, value.numel())
            if value.dtype not in DTYPES.values() or value.device.type != "cpu":
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
            if abs(value) >= MAX_INT:
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


def _check_python_operands(step: Step, args: Sequence[object]) -> None:
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
            and exponent > MAX_INT_EXPONENT
            and abs(base) > 1
        ):
            raise OverflowError(f"int power with exponent {exponent} > {MAX_INT_EXPONENT}")


@dataclass(frozen=True)
class CustomLossSource:
    """What a loss was compiled from (`compile_custom_loss`'s arguments, as uploaded): an
    engine process (`mock_server/engine/processes.py`) compiles its own copy from it."""

    name: str
    inputs: list[dict[str, Any]]
    graph: dict[str, Any]
    limits: CustomLossLimits


class CompiledCustomLoss:
    """A validated custom loss. Call it on one datum: `(loss, metrics) = loss(logprobs, inputs)`."""

    source: CustomLossSource | None = None  # set by compile_custom_loss

    def __init__(
        self,
        name: str,
        inputs: tuple[tuple[str, int], ...],
        steps: Sequence[Step],
        loss: Ref,
        metrics: Mapping[str, Ref],
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
        return self._datum_loss

    def _datum_loss(self, logprobs: Tensor, inputs: Mapping[str, Tensor]) -> DatumLossResult:
        loss, metrics = self(logprobs, inputs)
        return DatumLossResult(loss, {}, metrics)


def _first_line(error: Exception, limit: int = 300) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
