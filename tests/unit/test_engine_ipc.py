"""The engine processes' message format (mock_server/engine/ipc.py): every tree it may carry
comes back equal, tensors bit for bit; nothing outside its allow-lists is built or sent."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mock_server.engine import ipc
from mock_server.engine.errors import InvalidInputError, UnknownBaseModelError
from mock_server.engine.model import LoraConfig
from mock_server.engine.training import DatumInput, ForwardBackwardResult
from tests.support.engine_data import same_bits


@pytest.fixture
def pipe() -> Iterator[tuple[Connection, Connection]]:
    left, right = socket.socketpair()
    ends = Connection(left.detach()), Connection(right.detach())
    yield ends
    for end in ends:
        end.close()


def _round_trip(pipe: tuple[Connection, Connection], message: object) -> Any:
    ipc.send(pipe[0], message)
    return ipc.receive(pipe[1])


DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.bool]


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    seed = draw(st.integers(0, 2**32 - 1))
    values = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 100
    return values.to(dtype)


scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8)
scalars |= st.floats(allow_nan=False)  # NaN != NaN; tensors carry NaNs (below)
trees = st.recursive(
    scalars | tensors(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(tree=trees)
def test_every_tree_comes_back_equal_with_tensors_bit_for_bit(tree: object) -> None:
    left, right = socket.socketpair()
    sender, receiver = Connection(left.detach()), Connection(right.detach())
    try:
        ipc.send(sender, tree)
        assert same_bits(tree, ipc.receive(receiver))
    finally:
        sender.close()
        receiver.close()


def test_engine_dataclasses_come_back_as_themselves_and_tensors_are_writable(
    pipe: tuple[Connection, Connection],
) -> None:
    nan = torch.tensor([float("nan"), -0.0, float("inf")])
    message = [
        LoraConfig(rank=3, train_mlp=False),
        DatumInput(torch.arange(4), {"target_tokens": torch.arange(1, 5), "weights": nan}),
        ForwardBackwardResult([{"logprobs": torch.zeros(0)}], {"loss:sum": 1.5}),
    ]
    lora, datum, result = _round_trip(pipe, message)
    assert lora == LoraConfig(rank=3, train_mlp=False)
    assert isinstance(datum, DatumInput) and same_bits(datum.loss_fn_inputs["weights"], nan)
    assert isinstance(result, ForwardBackwardResult) and result.metrics == {"loss:sum": 1.5}
    datum.tokens.add_(1)  # its own memory: writable, and no other tensor changes
    assert datum.tokens.tolist() == [1, 2, 3, 4]
    assert datum.loss_fn_inputs["target_tokens"].tolist() == [1, 2, 3, 4]


def test_a_value_outside_the_format_is_refused_when_sent(
    pipe: tuple[Connection, Connection],
) -> None:
    with pytest.raises(TypeError, match="cannot carry a object"):
        ipc.send(pipe[0], [1, object()])
    with pytest.raises(TypeError, match="cannot carry a set"):
        ipc.send(pipe[0], {1, 2})


def test_a_header_naming_a_class_outside_the_allow_list_builds_nothing(
    pipe: tuple[Connection, Connection],
) -> None:
    for name in ("Popen", "function", "OptimizerStateX"):
        header = json.dumps({"dataclass": name, "fields": {}}).encode()
        pipe[0].send_bytes(len(header).to_bytes(4, "little") + header)
        with pytest.raises(KeyError, match=name):
            ipc.receive(pipe[1])


def test_errors_keep_their_class_and_attributes_and_others_become_remote_errors() -> None:
    for error in (
        InvalidInputError("data[0].weights", "must be finite"),
        UnknownBaseModelError("no/such", ["a", "b"]),
    ):
        with pytest.raises(type(error)) as raised:
            ipc.raise_error(json.loads(json.dumps(ipc.error_message(error))))
        assert vars(raised.value) == vars(error) and str(raised.value) == str(error)
    with pytest.raises(ipc.RemoteError, match="ZeroDivisionError: division by zero"):
        ipc.raise_error(ipc.error_message(ZeroDivisionError("division by zero")))
