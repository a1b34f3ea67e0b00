"""Names the SDK gives to plain values of the wire: ids, loss names, kinds, error categories.

`ModelID` and `RequestID` are `str` (as in SDK 0.38); the `Literal` aliases list the values the
SDK 0.38 types accept. `loss_fn` strings are not checked against `LossFnType` on the client: the
server decides which losses it offers (the mock answers a 4xx naming an unknown one).
"""

from __future__ import annotations

import enum
from typing import Literal, TypeAlias

from tinker_ref.types.tensor_data import TensorData

__all__ = [
    "LossFnInputs",
    "LossFnOutput",
    "LossFnType",
    "ModelID",
    "RequestErrorCategory",
    "RequestID",
    "SamplingClientKind",
]

ModelID: TypeAlias = str  # "<session_id>:train:<model_seq_id>"
RequestID: TypeAlias = str  # a future's id, from the POST that submitted it

LossFnType: TypeAlias = Literal[
    "cross_entropy",
    "importance_sampling",
    "ppo",
    "cispo",
    "dro",
    "gspo",
    "stable_reinforce",
    "custom",
]
LossFnInputs: TypeAlias = dict[str, TensorData]
LossFnOutput: TypeAlias = dict[str, TensorData]

# `snapshot` freezes the weights at the save; `inflight` publishes weights that this training
# model's inflight samplers share and adopt as later inflight saves publish newer ones.
SamplingClientKind: TypeAlias = Literal["snapshot", "inflight"]


class RequestErrorCategory(enum.StrEnum):
    """Who a failed future's error is attributed to (`RequestFailedError.category`)."""

    Unknown = "unknown"
    Server = "server"
    User = "user"
