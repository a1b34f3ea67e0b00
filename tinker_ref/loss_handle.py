"""`ServiceClient.create_custom_loss`: a per-datum loss traced with torch.fx, as SDK 0.38 does.

    def neg_ll(logprobs, weights):
        loss = -(logprobs * weights).sum()
        return loss, {"custom/neg_ll:sum": loss}

    handle = service.create_custom_loss(neg_ll, {"logprobs": 1, "weights": 1}).result()
    training.forward_backward_custom(data, handle)

The function runs once per datum and the losses are summed. It takes `logprobs` first, then one
tensor per `loss_fn_inputs` key it reads; `input_ranks` gives each parameter's rank (0 scalar,
1 `[T]`, 2 `[T, K]`). It is traced here and checked against the SDK's rules (torch and math only,
no tensor-valued branching, no modules, no captured tensors, no `.item()`; metrics named
`custom/<name>:sum|mean`), so a loss tinker_ref accepts is one the SDK accepts.

Where the server says `custom_loss_server_side`, the traced graph is uploaded
(`create_custom_loss`, encoded node for node exactly as the SDK encodes it) and the handle carries
the server's `loss_id`: `forward_backward_custom` then sends one `forward_backward` with loss
`"custom"`. Otherwise the handle runs client-side through the usual two-pass custom loss, the
traced graph standing in for the callable (metrics reduced by their suffix).
"""

from __future__ import annotations

import builtins
import hashlib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, TypeAlias

from tinker_ref.types import Datum
from tinker_ref.types.custom_loss import (
    CustomLossGraph,
    CustomLossInput,
    CustomLossInputRank,
    CustomLossNode,
)

if TYPE_CHECKING:
    import torch
    import torch.fx

__all__ = [
    "LossHandle",
    "PerDatumLossFn",
    "check_loss_inputs",
    "encode_graph",
    "run_loss_handle",
    "trace_loss",
]

# (logprobs, *the loss_fn_inputs it reads) -> (scalar loss, {"custom/<name>:sum|mean": tensor})
PerDatumLossFn: TypeAlias = Callable[
    Concatenate["torch.Tensor", ...], tuple["torch.Tensor", Mapping[str, "torch.Tensor"]]
]

_ALLOWED_MODULES = ("torch", "math", "operator", "_operator")  # `_operator`: fx's arithmetic
_METRIC_KEY = re.compile(r"custom/[a-z0-9_./-]{1,64}:(sum|mean)")
_INPUT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_MAX_INPUTS = 16  # parameters, logprobs included
_HOST_METHODS = frozenset({"item", "numpy", "tolist"})  # leave torch: not traceable data


@dataclass(frozen=True)
class LossHandle:
    """A loss made by `ServiceClient.create_custom_loss`; pass it to `forward_backward_custom`.

    Attributes:
        name: The loss function's name.
        inputs: Its inputs with their ranks: `logprobs` first, then the `loss_fn_inputs` keys
            it reads, in its parameters' order.
        session_id: The session that created it; only that session's clients can use it.
        graph: The traced function (torch.fx), what runs client-side.
        loss_id: The server's id once uploaded (then it runs on the server); None: it runs
            client-side.
    """

    name: str
    inputs: tuple[CustomLossInput, ...]  # logprobs first, then the loss_fn_inputs it reads
    session_id: str  # only clients of this session can use it
    graph: torch.fx.GraphModule = field(repr=False, compare=False)  # what runs
    loss_id: str | None = None  # the server's id once uploaded; None: runs client-side

    @property
    def key(self) -> str:
        """A digest of the traced code and inputs, so a session creates each loss once."""
        digest = hashlib.sha256(self.graph.code.encode())
        digest.update(repr(tuple((i.name, i.rank) for i in self.inputs)).encode())
        return digest.hexdigest()

    @property
    def input_names(self) -> tuple[str, ...]:
        """The `loss_fn_inputs` keys the loss reads, in order (`logprobs` not included)."""
        return tuple(loss_input.name for loss_input in self.inputs[1:])


def trace_loss(
    fn: PerDatumLossFn, input_ranks: Mapping[str, CustomLossInputRank], session_id: str
) -> LossHandle:
    """Trace `fn`, or raise ValueError saying which rule it breaks."""
    try:
        import torch.fx
    except ImportError as exc:  # pragma: no cover - torch is a dependency of tinker-ref
        raise ImportError("PyTorch is not installed. Cannot create a custom loss.") from exc
    inputs = _inputs(fn, input_ranks)
    try:
        graph = torch.fx.symbolic_trace(fn)
    except Exception as exc:
        raise ValueError(
            f"create_custom_loss: {_name(fn)} cannot be traced by torch.fx: {exc}. Custom losses "
            "cannot branch on tensor values or call libraries other than torch and math."
        ) from exc
    _check_graph(_name(fn), graph)
    return LossHandle(name=_name(fn), inputs=inputs, session_id=session_id, graph=graph)


def check_loss_inputs(handle: LossHandle, data: Sequence[Datum]) -> None:
    """ValueError unless every datum has each input the loss reads, at its declared rank
    (`logprobs` is shaped like the datum's `target_tokens`)."""
    logprobs, *inputs = handle.inputs
    for index, datum in enumerate(data):
        for loss_input, key in [(logprobs, "target_tokens"), *((x, x.name) for x in inputs)]:
            if key not in datum.loss_fn_inputs:
                raise ValueError(
                    f"datum[{index}] has no loss_fn_inputs[{key!r}], which loss "
                    f"{handle.name!r} takes"
                )
            shape = datum.loss_fn_inputs[key].shape
            rank = 1 if shape is None else len(shape)
            if rank != loss_input.rank:
                raise ValueError(
                    f"datum[{index}] loss_fn_inputs[{key!r}] has rank {rank}, but loss "
                    f"{handle.name!r} declared {loss_input.name} with rank {loss_input.rank}"
                )


def encode_graph(handle: LossHandle) -> CustomLossGraph:
    """The traced graph as plain data, node for node (the server decides what it allows)."""
    from torch.fx.node import _get_qualified_name

    nodes = []
    for node in handle.graph.graph.nodes:
        if node.op == "call_function":
            target = _get_qualified_name(node.target)  # type: ignore[arg-type]
            if target.startswith("_operator."):  # the wire names the public module
                target = "operator." + target.removeprefix("_operator.")
        else:
            target = str(node.target)
        nodes.append(
            CustomLossNode(
                op=node.op,
                name=node.name,
                target=target,
                args=[_encode_arg(handle.name, arg) for arg in node.args],
                kwargs={key: _encode_arg(handle.name, arg) for key, arg in node.kwargs.items()},
            )
        )
    return CustomLossGraph(nodes=nodes)


def run_loss_handle(
    handle: LossHandle, data: Sequence[Datum], logprobs_list: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Run the traced loss per datum and sum; `:mean` metrics are divided by the datum count."""
    import torch

    total: Any = None
    sums: dict[str, float] = {}
    for datum, logprobs in zip(data, logprobs_list, strict=True):
        inputs = [datum.loss_fn_inputs[name].to_torch() for name in handle.input_names]
        loss, metrics = handle.graph(logprobs, *inputs)
        if loss.ndim != 0:
            raise ValueError(
                f"loss {handle.name!r} must return a scalar loss, got shape {tuple(loss.shape)}"
            )
        total = loss if total is None else total + loss
        for key, value in metrics.items():
            number = value.detach().item() if isinstance(value, torch.Tensor) else value
            sums[key] = sums.get(key, 0.0) + float(number)
    metrics_out = {k: v / len(data) if k.endswith(":mean") else v for k, v in sums.items()}
    return total, metrics_out


# ----- checks -------------------------------------------------------------------------------------


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _inputs(
    fn: Callable[..., Any], input_ranks: Mapping[str, CustomLossInputRank]
) -> tuple[CustomLossInput, ...]:
    name = _name(fn)
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].name != "logprobs":
        raise ValueError(
            f"create_custom_loss: {name} must take logprobs as its first parameter, followed "
            "by the loss_fn_inputs it reads, e.g. def loss(logprobs, advantages)"
        )
    if len(params) > _MAX_INPUTS:
        raise ValueError(
            f"create_custom_loss: {name} takes {len(params)} parameters; a custom loss "
            f"takes at most {_MAX_INPUTS}, logprobs included"
        )
    for param in params:
        if not _INPUT_NAME.fullmatch(param.name):
            raise ValueError(
                f"create_custom_loss: {name} parameter {param.name!r} must be a lowercase "
                "name of letters, digits and underscores"
            )
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            raise ValueError(
                f"create_custom_loss: {name} parameter {param.name!r} must be a plain "
                "positional parameter; *args, **kwargs and keyword-only parameters are not "
                "supported"
            )
        if param.default is not param.empty:
            raise ValueError(
                f"create_custom_loss: {name} parameter {param.name!r} has a default; every "
                "parameter after logprobs names a required loss_fn_inputs key"
            )
    names = [param.name for param in params]
    if set(input_ranks) != set(names):
        raise ValueError(
            f"create_custom_loss: input_ranks must give a rank for each parameter of "
            f"{name} ({', '.join(names)}), got {sorted(input_ranks)}"
        )
    for key, rank in input_ranks.items():
        if rank not in (0, 1, 2):
            raise ValueError(f"create_custom_loss: {key} has rank {rank!r}; ranks are 0, 1, 2")
    if input_ranks["logprobs"] == 0:
        raise ValueError("create_custom_loss: logprobs has rank 1 ([T]) or 2 ([T, K])")
    return tuple(CustomLossInput(name=n, rank=input_ranks[n]) for n in names)


def _check_graph(name: str, graph: torch.fx.GraphModule) -> None:
    import torch

    for node in graph.graph.nodes:
        if node.op == "call_function":
            module = getattr(node.target, "__module__", None) or ""
            if node.target is not builtins.getattr and module.split(".")[0] not in (
                _ALLOWED_MODULES
            ):
                what = getattr(node.target, "__qualname__", node.target)
                raise ValueError(
                    f"create_custom_loss: {name} calls {what!r} from "
                    f"{module or 'an unknown module'!r}; custom losses may only call torch "
                    "and math"
                )
        elif node.op == "call_method":
            method = str(node.target)
            if not hasattr(torch.Tensor, method):
                raise ValueError(
                    f"create_custom_loss: {name} calls method {method!r}, which is not a "
                    "torch.Tensor method"
                )
            if method == "backward":
                raise ValueError(
                    f"create_custom_loss: {name} calls backward(); return the loss and "
                    "forward_backward_custom runs the backward pass"
                )
            if method in _HOST_METHODS:
                raise ValueError(
                    f"create_custom_loss: {name} calls {method}(), which leaves torch; keep "
                    "every value, metrics included, as a tensor"
                )
        elif node.op == "call_module":
            raise ValueError(
                f"create_custom_loss: {name} calls module {node.target!r}; custom losses cannot "
                "use torch.nn modules, only functions such as torch.nn.functional"
            )
        elif node.op == "get_attr":
            raise ValueError(
                f"create_custom_loss: {name} captures a tensor ({node.target!r}); a custom loss "
                "may only read logprobs and the loss_fn_inputs it names"
            )
        elif node.op == "output":
            _check_output(name, node.args[0])


def _check_output(name: str, output: Any) -> None:
    import torch.fx

    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise ValueError(f"create_custom_loss: {name} must return (loss, metrics)")
    if not isinstance(output[0], torch.fx.Node):  # a traced tensor is a graph node
        raise ValueError(
            f"create_custom_loss: {name} must return its loss as a torch.Tensor, got {output[0]!r}"
        )
    metrics = output[1]
    if not isinstance(metrics, dict):
        raise ValueError(f"create_custom_loss: {name} must return its metrics as a dict")
    for key, value in metrics.items():
        if not (isinstance(key, str) and _METRIC_KEY.fullmatch(key)):
            raise ValueError(
                f"create_custom_loss: {name} metric {key!r} must be named custom/<name>:sum or "
                "custom/<name>:mean in lowercase; the suffix says how it combines across datums"
            )
        if not isinstance(value, torch.fx.Node):
            raise ValueError(
                f"create_custom_loss: {name} metric {key!r} must be a torch.Tensor, got {value!r}"
            )


def _encode_arg(name: str, arg: Any) -> Any:
    """One fx argument as JSON: scalars as themselves, anything else as a one-key object."""
    import torch
    import torch.fx

    if isinstance(arg, torch.fx.Node):
        return {"ref": arg.name}
    if isinstance(arg, float) and not math.isfinite(arg):
        return {"float": str(arg)}
    if arg is None or isinstance(arg, (bool, int, float, str)):
        return arg
    if isinstance(arg, list):
        return [_encode_arg(name, a) for a in arg]
    if isinstance(arg, tuple):
        return {"tuple": [_encode_arg(name, a) for a in arg]}
    if isinstance(arg, dict) and all(isinstance(key, str) for key in arg):
        return {"dict": {key: _encode_arg(name, a) for key, a in arg.items()}}
    if isinstance(arg, slice):
        return {"slice": [_encode_arg(name, a) for a in (arg.start, arg.stop, arg.step)]}
    if arg is Ellipsis:
        return {"ellipsis": True}
    constants: dict[type, str] = {
        torch.dtype: "dtype",
        torch.device: "device",
        torch.layout: "layout",
        torch.memory_format: "memory_format",
    }
    kind = constants.get(type(arg))
    if kind is not None:
        return {kind: str(arg).removeprefix("torch.")}
    raise ValueError(
        f"create_custom_loss: {name} passes a {type(arg).__name__} argument, which a custom "
        "loss cannot send to the server"
    )
