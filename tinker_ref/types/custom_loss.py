"""The request records of `ServiceClient.create_custom_loss`: a traced loss as plain data.

`CustomLossGraph` is a `torch.fx` graph node for node (`tinker_ref/loss_handle.py` traces and
encodes it exactly as SDK 0.38 does); `CustomLossInput` names one input of the loss with its
rank (0 scalar, 1 `[T]`, 2 `[T, K]`), `logprobs` first. Nothing here is executable: the server
rebuilds the graph from its own allow-list (`mock_server/custom_loss.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from tinker_ref.types._records import Record

__all__ = [
    "CustomLossGraph",
    "CustomLossInput",
    "CustomLossInputRank",
    "CustomLossNode",
    "CustomLossNodeOp",
]

CustomLossInputRank: TypeAlias = Literal[0, 1, 2]
CustomLossNodeOp: TypeAlias = Literal[
    "placeholder", "get_attr", "call_function", "call_method", "call_module", "output"
]


@dataclass(frozen=True, kw_only=True)
class CustomLossInput(Record):
    name: str  # "logprobs" or a loss_fn_inputs key
    rank: CustomLossInputRank


@dataclass(frozen=True, kw_only=True)
class CustomLossNode(Record):
    op: CustomLossNodeOp
    name: str  # unique in the graph; later nodes refer to it as {"ref": name}
    target: str  # parameter name, qualified function name (torch.exp, operator.mul), method
    args: list[Any] = field(default_factory=list)  # encoded: {"ref"}, {"tuple"}, {"float"}, ...
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # args/kwargs are always sent, even empty (the SDK's model_dump keeps them).
        return {
            "op": self.op,
            "name": self.name,
            "target": self.target,
            "args": self.args,
            "kwargs": self.kwargs,
        }


@dataclass(frozen=True, kw_only=True)
class CustomLossGraph(Record):
    format: Literal[1] = 1
    nodes: list[CustomLossNode]

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "nodes": [node.to_json() for node in self.nodes]}
