"""mock_server.engine.custom_loss: upload-time validation, argument decoding, run-time errors and
resource limits, random compositions of allowed ops against direct torch, and the engine hook.

Graphs are written by hand in the SDK 0.38 encoding (the uploads of spec LOSS-15); what the
SDK's tracer really emits is pinned by tests/integration/test_custom_loss_vs_official_sdk.py.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.fx.node import _get_qualified_name

from mock_server.engine import InvalidInputError
from mock_server.engine.custom_loss import (
    CompiledCustomLoss,
    CustomLossError,
    CustomLossLimits,
    compile_custom_loss,
)
from mock_server.engine.custom_loss.allow_list import FUNCTIONS, METHODS
from mock_server.engine.custom_loss.compiler import _Decoder
from mock_server.engine.custom_loss.interpreter import _broadcast_elements, _fill
from tests.support.engine_data import (
    assert_grads_equal,
    direct_autograd_grads,
    forward_logprobs,
    grads,
    make_batch,
    some_gradient_is_nonzero,
    warm_model,
)
from tests.support.profiles import examples

pytestmark = pytest.mark.spec("LOSS-15")

Graph = dict[str, Any]
# 60 examples under the default profile (tests/conftest.py), scaled with the others.
_PROPERTY = settings(
    max_examples=examples(60),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ----- graph builders -----


def ref(name: str) -> dict[str, str]:
    return {"ref": name}


def placeholder(name: str) -> dict[str, Any]:
    return {"op": "placeholder", "name": name, "target": name, "args": [], "kwargs": {}}


def _node(
    op: str, name: str, target: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    return {"op": op, "name": name, "target": target, "args": list(args), "kwargs": kwargs}


def call(name: str, target: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return _node("call_function", name, target, args, kwargs)


def method(name: str, target: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return _node("call_method", name, target, args, kwargs)


def output(loss: str, metrics: dict[str, str] | None = None) -> dict[str, Any]:
    encoded = {key: ref(value) for key, value in (metrics or {}).items()}
    returned = {"tuple": [ref(loss), {"dict": encoded}]}
    return {"op": "output", "name": "output", "target": "output", "args": [returned], "kwargs": {}}


def graph(*nodes: dict[str, Any]) -> Graph:
    return {"format": 1, "nodes": list(nodes)}


INPUTS_LW = [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}]


def neg_ll_graph() -> Graph:
    """The example graph the SDK captured: -(logprobs*weights).sum(), two metrics."""
    return graph(
        placeholder("logprobs"),
        placeholder("weights"),
        call("mul", "operator.mul", ref("logprobs"), ref("weights")),
        method("sum_1", "sum", ref("mul")),
        call("neg", "operator.neg", ref("sum_1")),
        method("sum_2", "sum", ref("weights")),
        output("neg", {"custom/neg_ll:sum": "neg", "custom/tokens:mean": "sum_2"}),
    )


def one_op_graph(*body: dict[str, Any], loss: str | None = None) -> Graph:
    """logprobs, weights, the body, then loss = <last body node>.sum()."""
    last = body[-1]["name"]
    return graph(
        placeholder("logprobs"),
        placeholder("weights"),
        *body,
        method("loss", "sum", ref(last)),
        output(loss or "loss"),
    )


def compile_lw(g: Graph, limits: CustomLossLimits | None = None) -> CompiledCustomLoss:
    return compile_custom_loss("test_loss", copy.deepcopy(INPUTS_LW), g, limits)


def run_lw(g: Graph, logprobs: torch.Tensor, weights: torch.Tensor, **kw: Any) -> torch.Tensor:
    loss, _ = compile_lw(g, **kw)(logprobs, {"weights": weights})
    return loss


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern, so NaN payloads and -0.0 count in comparisons."""
    return t.detach().contiguous().view({4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_bitwise(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.equal(bits(actual), bits(expected)), f"{actual} != {expected}"


# ----- the happy path -----


def test_the_spec_example_computes_loss_and_metrics_of_the_direct_torch_expression() -> None:
    compiled = compile_lw(neg_ll_graph())
    logprobs = torch.tensor([-0.5, -1.25, -3.0], requires_grad=True)
    weights = torch.tensor([1.0, 0.0, 2.0])
    loss, metrics = compiled(logprobs, {"weights": weights, "target_tokens": torch.zeros(3)})

    assert_bitwise(loss, -(logprobs * weights).sum())
    assert metrics.keys() == {"custom/neg_ll:sum", "custom/tokens:mean"}
    assert_bitwise(metrics["custom/tokens:mean"], weights.sum())
    loss.backward()  # type: ignore[no-untyped-call]
    assert logprobs.grad is not None
    assert_bitwise(logprobs.grad, -weights)


def test_declared_inputs_are_exposed_for_datum_validation() -> None:
    compiled = compile_custom_loss(
        "kl",
        [{"name": "logprobs", "rank": 2}, {"name": "target", "rank": 2}, {"name": "w", "rank": 0}],
        graph(
            placeholder("logprobs"),
            placeholder("target"),
            placeholder("w"),
            method("s", "sum", ref("logprobs")),
            output("s"),
        ),
    )
    assert compiled.name == "kl"
    assert compiled.input_names == ("target", "w")
    assert compiled.input_ranks == {"logprobs": 2, "target": 2, "w": 0}
    assert compiled.metric_keys == ()


def test_a_list_return_and_renamed_placeholders_are_accepted_as_the_sdk_can_send_them() -> None:
    # fx renames a parameter called `input` to input_1; the target keeps the parameter name.
    renamed = placeholder("input_1") | {"target": "input"}
    g = graph(
        placeholder("logprobs"),
        renamed,
        call("mul", "operator.mul", ref("logprobs"), ref("input_1")),
        method("sum_1", "sum", ref("mul")),
        {
            "op": "output",
            "name": "output",
            "target": "output",
            "args": [[ref("sum_1"), {"dict": {}}]],
        },
    )
    compiled = compile_custom_loss(
        "f", [{"name": "logprobs", "rank": 1}, {"name": "input", "rank": 1}], g
    )
    loss, _ = compiled(torch.ones(2), {"input": torch.tensor([2.0, 3.0])})
    assert float(loss) == 5.0


def test_custom_loss_error_is_an_invalid_input_error_and_a_value_error() -> None:
    with pytest.raises(CustomLossError) as caught:
        compile_lw(graph())
    assert isinstance(caught.value, InvalidInputError)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(caught.value.field + ": ")


# ----- upload-time rejections -----


def _replace_node(index: int, node: dict[str, Any]) -> Graph:
    g = neg_ll_graph()
    g["nodes"][index] = node
    return g


def _with_args(index: int, *args: Any, **kwargs: Any) -> Graph:
    g = neg_ll_graph()
    g["nodes"][index]["args"] = list(args)
    g["nodes"][index]["kwargs"] = kwargs
    return g


# (case id, inputs, graph, field, words in the message)
REJECTED: list[tuple[str, Any, Any, str, str]] = [
    # inputs
    ("inputs not a list", {"logprobs": 1}, neg_ll_graph(), "inputs", "list"),
    ("no inputs", [], neg_ll_graph(), "inputs", "1 to 16"),
    (
        "17 inputs",
        [{"name": "logprobs", "rank": 1}] + [{"name": f"x{i}", "rank": 1} for i in range(16)],
        neg_ll_graph(),
        "inputs",
        "1 to 16",
    ),
    ("logprobs not first", INPUTS_LW[::-1], neg_ll_graph(), "inputs[0].name", "first"),
    (
        "logprobs rank 0",
        [{"name": "logprobs", "rank": 0}],
        neg_ll_graph(),
        "inputs[0].rank",
        "rank 0",
    ),
    (
        "rank 3",
        [INPUTS_LW[0], {"name": "weights", "rank": 3}],
        neg_ll_graph(),
        "inputs[1].rank",
        "(0, 1, 2)",
    ),
    (
        "rank true",
        [INPUTS_LW[0], {"name": "weights", "rank": True}],
        neg_ll_graph(),
        "inputs[1].rank",
        "True",
    ),
    (
        "uppercase name",
        [INPUTS_LW[0], {"name": "Weights", "rank": 1}],
        neg_ll_graph(),
        "inputs[1].name",
        "[a-z_]",
    ),
    (
        "65-char name",
        [INPUTS_LW[0], {"name": "w" * 65, "rank": 1}],
        neg_ll_graph(),
        "inputs[1].name",
        "[a-z_]",
    ),
    (
        "duplicate input",
        [INPUTS_LW[0], INPUTS_LW[1], INPUTS_LW[1]],
        neg_ll_graph(),
        "inputs[2].name",
        "twice",
    ),
    (
        "extra input key",
        [INPUTS_LW[0], {"name": "weights", "rank": 1, "dtype": "f"}],
        neg_ll_graph(),
        "inputs[1]",
        "rank",
    ),
    # envelope
    ("graph not an object", INPUTS_LW, [], "graph", "format"),
    ("graph extra key", INPUTS_LW, neg_ll_graph() | {"code": "x"}, "graph", "format"),
    ("format 2", INPUTS_LW, neg_ll_graph() | {"format": 2}, "graph.format", "expected 1"),
    ("format true", INPUTS_LW, neg_ll_graph() | {"format": True}, "graph.format", "expected 1"),
    ("nodes not a list", INPUTS_LW, {"format": 1, "nodes": {}}, "graph.nodes", "list"),
    ("node not an object", INPUTS_LW, _replace_node(2, "mul"), "graph.nodes[2]", "keys"),  # type: ignore[arg-type]
    (
        "node extra key",
        INPUTS_LW,
        _replace_node(2, neg_ll_graph()["nodes"][2] | {"meta": 1}),
        "graph.nodes[2]",
        "keys",
    ),
    (
        "node name not an identifier",
        INPUTS_LW,
        _replace_node(2, neg_ll_graph()["nodes"][2] | {"name": "a b"}),
        "graph.nodes[2].name",
        "not a node name",
    ),
    (
        "target not a string",
        INPUTS_LW,
        _replace_node(2, neg_ll_graph()["nodes"][2] | {"target": 3}),
        "graph.nodes[2].target",
        "string",
    ),
    (
        "args not a list",
        INPUTS_LW,
        _replace_node(2, neg_ll_graph()["nodes"][2] | {"args": {}}),
        "graph.nodes[2].args",
        "list",
    ),
    (
        "duplicate node name",
        INPUTS_LW,
        _replace_node(3, neg_ll_graph()["nodes"][3] | {"name": "mul"}),
        "graph.nodes[3].name",
        "'mul' is used twice",
    ),
    # placeholders and output
    (
        "too few placeholders",
        INPUTS_LW,
        graph(placeholder("logprobs"), method("s", "sum", ref("logprobs")), output("s")),
        "graph.nodes",
        "expected 2 placeholders",
    ),
    (
        "too many placeholders",
        INPUTS_LW[:1],
        neg_ll_graph(),
        "graph.nodes",
        "expected 1 placeholders",
    ),
    (
        "placeholder after a call",
        INPUTS_LW,
        graph(
            placeholder("logprobs"),
            method("s", "sum", ref("logprobs")),
            placeholder("weights"),
            output("s"),
        ),
        "graph.nodes",
        "placeholders at [0, 2]",
    ),
    (
        "placeholder names swapped",
        [INPUTS_LW[0], {"name": "mask", "rank": 1}],
        neg_ll_graph(),
        "graph.nodes[1].target",
        "inputs[1] is 'mask'",
    ),
    ("placeholder default", INPUTS_LW, _with_args(1, 1.0), "graph.nodes[1]", "default"),
    (
        "no output",
        INPUTS_LW,
        graph(*neg_ll_graph()["nodes"][:-1]),
        "graph.nodes",
        "last node must be the output",
    ),
    (
        "output twice",
        INPUTS_LW,
        graph(
            *neg_ll_graph()["nodes"][:3],
            output("mul") | {"name": "early"},
            *neg_ll_graph()["nodes"][3:],
        ),
        "graph.nodes[3].op",
        "only the last node",
    ),
    # op kinds
    (
        "get_attr",
        INPUTS_LW,
        _replace_node(2, {"op": "get_attr", "name": "c", "target": "_tensor_constant0"}),
        "graph.nodes[2].op",
        "get_attr is refused",
    ),
    (
        "call_module",
        INPUTS_LW,
        _replace_node(2, {"op": "call_module", "name": "m", "target": "linear"}),
        "graph.nodes[2].op",
        "call_module is refused",
    ),
    (
        "unknown op",
        INPUTS_LW,
        _replace_node(2, {"op": "call_lambda", "name": "m", "target": "x"}),
        "graph.nodes[2].op",
        "unknown op 'call_lambda'",
    ),
]

# Call targets outside the allow-list: (op, target, args).
REFUSED_TARGETS: list[tuple[str, str, list[Any]]] = [
    ("call_function", "os.system", ["ls"]),
    ("call_function", "builtins.eval", ["1"]),
    ("call_function", "builtins.getattr", [ref("logprobs"), "shape"]),
    ("call_function", "torch.load", ["/etc/passwd"]),
    ("call_function", "torch.save", [ref("logprobs"), "/tmp/x"]),
    ("call_function", "torch.empty_like", [ref("logprobs")]),
    ("call_function", "torch.rand_like", [ref("logprobs")]),
    ("call_function", "torch.nn.functional.dropout", [ref("logprobs")]),
    ("call_function", "torch.exp_", [ref("logprobs")]),
    ("call_function", "operator.setitem", [ref("logprobs"), 0, 1.0]),
    ("call_function", "operator.lshift", [1, 10_000]),
    ("call_function", "operator.iadd", [ref("logprobs"), 1.0]),
    ("call_function", "_operator.mul", [ref("logprobs"), 2.0]),
    ("call_function", "math.factorial", [100_000]),
    ("call_function", "torch.Tensor.add_", [ref("logprobs"), 1.0]),
    ("call_method", "backward", [ref("logprobs")]),
    ("call_method", "item", [ref("logprobs")]),
    ("call_method", "tolist", [ref("logprobs")]),
    ("call_method", "numpy", [ref("logprobs")]),
    ("call_method", "add_", [ref("logprobs"), 1.0]),
    ("call_method", "copy_", [ref("logprobs"), ref("weights")]),
    ("call_method", "data_ptr", [ref("logprobs")]),
    ("call_method", "untyped_storage", [ref("logprobs")]),
    ("call_method", "share_memory_", [ref("logprobs")]),
    ("call_method", "register_hook", [ref("logprobs")]),
    ("call_method", "new_empty", [ref("logprobs"), 3]),
    ("call_method", "cuda", [ref("logprobs")]),
    ("call_method", "__setitem__", [ref("logprobs"), 0, 1.0]),
    ("call_method", "__reduce_ex__", [ref("logprobs"), 2]),
]

# Encoded arguments the decoder refuses, each passed as mul's second argument.
BAD_ARGS: list[tuple[str, Any, str, str]] = [
    ("unknown ref", ref("nope"), ".args[1].ref", "unknown node 'nope'"),
    ("ref to a later node", ref("sum_2"), ".args[1].ref", "'sum_2', which does not come before"),
    ("ref to itself", ref("mul"), ".args[1].ref", "'mul', which does not come before"),
    ("ref not a string", {"ref": 3}, ".args[1].ref", "unknown node 3"),
    ("unknown encoding", {"lambda": "x: x"}, ".args[1].lambda", "unknown encoding 'lambda'"),
    ("two-key object", {"ref": "logprobs", "float": "inf"}, ".args[1]", "one-key object"),
    ("dtype float16", {"dtype": "float16"}, ".args[1].dtype", "'float16' is not accepted"),
    ("dtype complex", {"dtype": "complex64"}, ".args[1].dtype", "accepted: float32"),
    ("device cuda", {"device": "cuda"}, ".args[1].device", "'cuda' is not accepted"),
    ("device meta", {"device": "meta"}, ".args[1].device", "accepted: cpu"),
    ("sparse layout", {"layout": "sparse_coo"}, ".args[1].layout", "not accepted"),
    ("channels_last", {"memory_format": "channels_last"}, ".args[1].memory_format", "not accepted"),
    ("finite float string", {"float": "1e5"}, ".args[1].float", "accepted: inf, -inf, nan"),
    ("ellipsis false", {"ellipsis": False}, ".args[1].ellipsis", "unknown encoding"),
    ("two-part slice", {"slice": [1, 2]}, ".args[1].slice", "unknown encoding"),
    ("float slice bound", {"slice": [0.5, None, None]}, ".args[1].slice[0]", "slice bound 0.5"),
    ("dict argument", {"dict": {"a": 1}}, ".args[1].dict", "only accepted as the output"),
    ("string operand", "cuda", ".args[1]", "'cuda' is not an accepted argument"),
    ("int beyond int64", 2**63, ".args[1]", "outside int64"),
    ("negative int beyond int64", -(2**63), ".args[1]", "outside int64"),
    ("string in a tuple", {"tuple": [1, "x"]}, ".args[1].tuple[1]", "'x' is not an accepted"),
]


def _target_case(op: str, target: str, args: list[Any]) -> Graph:
    return _replace_node(2, {"op": op, "name": "mul", "target": target, "args": args, "kwargs": {}})


@pytest.mark.parametrize(
    ("inputs", "g", "field", "words"),
    [pytest.param(i, g, f, w, id=case) for case, i, g, f, w in REJECTED],
)
def test_malformed_requests_are_refused_naming_the_field(
    inputs: Any, g: Any, field: str, words: str
) -> None:
    with pytest.raises(CustomLossError) as caught:
        compile_custom_loss("test_loss", copy.deepcopy(inputs), copy.deepcopy(g))
    assert caught.value.field == field
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("op", "target", "args"), REFUSED_TARGETS, ids=[t for _, t, _ in REFUSED_TARGETS]
)
def test_targets_outside_the_allow_list_are_refused_naming_the_node(
    op: str, target: str, args: list[Any]
) -> None:
    with pytest.raises(CustomLossError) as caught:
        compile_lw(_target_case(op, target, args))
    assert caught.value.field == "graph.nodes[2].target"
    assert caught.value.message.startswith(f"node 'mul' ({target}): ")
    assert caught.value.message.endswith("is not in the allow-list")


def test_an_unknown_target_is_reported_with_its_node_kind_and_the_allow_list() -> None:
    with pytest.raises(CustomLossError) as caught:
        compile_lw(_target_case("call_method", "backward", [ref("logprobs")]))
    assert caught.value.field == "graph.nodes[2].target"
    assert caught.value.message == (
        "node 'mul' (backward): torch.Tensor method 'backward' is not in the allow-list"
    )


@pytest.mark.parametrize(
    ("encoded", "field_suffix", "words"), [b[1:] for b in BAD_ARGS], ids=[b[0] for b in BAD_ARGS]
)
def test_bad_argument_encodings_are_refused_naming_the_argument(
    encoded: Any, field_suffix: str, words: str
) -> None:
    with pytest.raises(CustomLossError) as caught:
        compile_lw(_with_args(2, ref("logprobs"), encoded))
    assert caught.value.field == "graph.nodes[2]" + field_suffix
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("node", "field", "words"),
    [
        (
            call("exp", "torch.exp", ref("logprobs"), out=ref("weights")),
            "graph.nodes[2].kwargs",
            "'out' is refused",
        ),
        (
            call("relu", "torch.nn.functional.relu", ref("logprobs"), inplace=True),
            "graph.nodes[2].kwargs.inplace",
            "in-place",
        ),
        (
            call("relu", "torch.nn.functional.relu", ref("logprobs"), True),
            "graph.nodes[2].args[1]",
            "in-place",
        ),
        (
            call("relu", "torch.nn.functional.relu", ref("logprobs"), ref("weights")),
            "graph.nodes[2].args[1]",
            "in-place",
        ),
        (
            call("relu", "torch.nn.functional.relu", ref("logprobs"), inplace=ref("weights")),
            "graph.nodes[2].kwargs.inplace",
            "in-place",
        ),
        (
            call("s", "torch.sum", ref("logprobs"), **{"a-b": 1}),
            "graph.nodes[2].kwargs",
            "'a-b' is refused",
        ),
        (method("t", "to", ref("logprobs"), "cuda"), "graph.nodes[2].args[1]", "'cuda'"),
        (
            method("t", "to", ref("logprobs"), device="cuda:0"),
            "graph.nodes[2].kwargs.device",
            "'cuda:0'",
        ),
        (
            method("t", "type", ref("logprobs"), "torch.cuda.FloatTensor"),
            "graph.nodes[2].args[1]",
            "not an accepted",
        ),
        (
            call("z", "torch.zeros", 3, device={"device": "cuda"}),
            "graph.nodes[2].kwargs.device.device",
            "'cuda'",
        ),
        (
            call(
                "e", "torch.functional.einsum", "i,i->;import os", ref("logprobs"), ref("logprobs")
            ),
            "graph.nodes[2].args[0]",
            "not an accepted",
        ),
        (
            call(
                "l",
                "torch.nn.functional.mse_loss",
                ref("logprobs"),
                ref("weights"),
                reduction="max",
            ),
            "graph.nodes[2].kwargs.reduction",
            "'max'",
        ),
        (method("s", "sum", 3.0), "graph.nodes[2].args", "needs a node receiver"),
        (method("s", "sum"), "graph.nodes[2].args", "needs a node receiver"),
        *[
            (
                call("g", "getattr", ref("logprobs"), *args),
                "graph.nodes[2].args",
                "getattr reads one of",
            )
            for args in (
                ("data",),
                ("grad",),
                ("__class__",),
                ("_base",),
                (ref("weights"),),
                (),
                ("shape", None),
            )
        ],
    ],
    ids=lambda value: value.get("target", "") if isinstance(value, dict) else None,
)
def test_calls_that_could_write_leave_the_cpu_or_read_internals_are_refused(
    node: dict[str, Any], field: str, words: str
) -> None:
    node = node | {"name": "mul"}
    with pytest.raises(CustomLossError) as caught:
        compile_lw(_replace_node(2, node))
    assert caught.value.field == field
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("returned", "field", "words"),
    [
        ({"tuple": [ref("neg")]}, "graph.nodes[6].args[0]", "(loss, {"),
        ({"tuple": [ref("neg"), {"dict": {}}, ref("neg")]}, "graph.nodes[6].args[0]", "(loss, {"),
        (ref("neg"), "graph.nodes[6].args[0]", "(loss, {"),
        ({"tuple": [1.0, {"dict": {}}]}, "graph.nodes[6].args[0][0]", "loss must be a tensor node"),
        ({"tuple": [ref("nope"), {"dict": {}}]}, "graph.nodes[6].args[0][0].ref", "unknown node"),
        (
            {"tuple": [ref("neg"), {"tuple": []}]},
            "graph.nodes[6].args[0][1]",
            "metrics must be a dict",
        ),
        (
            {"tuple": [ref("neg"), {"dict": []}]},
            "graph.nodes[6].args[0][1].dict",
            "expected an object",
        ),
        (
            {"tuple": [ref("neg"), {"dict": {"custom/X:sum": ref("neg")}}]},
            "graph.nodes[6].args[0][1].dict['custom/X:sum']",
            "custom/[a-z0-9_./-]",
        ),
        (
            {"tuple": [ref("neg"), {"dict": {"neg_ll:sum": ref("neg")}}]},
            "graph.nodes[6].args[0][1].dict['neg_ll:sum']",
            "custom/",
        ),
        (
            {"tuple": [ref("neg"), {"dict": {"custom/a:max": ref("neg")}}]},
            "graph.nodes[6].args[0][1].dict['custom/a:max']",
            "(sum|mean)",
        ),
        (
            {"tuple": [ref("neg"), {"dict": {"custom/" + "a" * 65 + ":sum": ref("neg")}}]},
            "graph.nodes[6].args[0][1].dict['custom/" + "a" * 65 + ":sum']",
            "{1,64}",
        ),
        (
            {"tuple": [ref("neg"), {"dict": {"custom/a:sum": 1.0}}]},
            "graph.nodes[6].args[0][1].dict['custom/a:sum']",
            "must be a tensor node",
        ),
    ],
)
def test_an_output_other_than_loss_and_metrics_is_refused(
    returned: Any, field: str, words: str
) -> None:
    g = neg_ll_graph()
    g["nodes"][6]["args"] = [returned]
    with pytest.raises(CustomLossError) as caught:
        compile_lw(g)
    assert caught.value.field == field
    assert words in caught.value.message


def test_output_keyword_arguments_or_a_renamed_target_are_refused() -> None:
    changes: list[dict[str, Any]] = [{"kwargs": {"x": 1}}, {"target": "return"}, {"args": []}]
    for change in changes:
        g = neg_ll_graph()
        g["nodes"][6] |= change
        with pytest.raises(CustomLossError) as caught:
            compile_lw(g)
        assert caught.value.field == "graph.nodes[6]"


def test_graph_size_nesting_and_literal_count_are_capped() -> None:
    with pytest.raises(CustomLossError) as caught:
        compile_lw(neg_ll_graph(), CustomLossLimits(max_nodes=6))
    assert (caught.value.field, caught.value.message) == (
        "graph.nodes",
        "7 nodes; the limit is 6",
    )

    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(CustomLossError) as caught:
        compile_lw(_with_args(2, ref("logprobs"), deep))
    assert "nested deeper than 32 levels" in caught.value.message
    assert caught.value.field.startswith("graph.nodes[2].args[1][0][0]")

    with pytest.raises(CustomLossError) as caught:
        compile_lw(
            _with_args(2, ref("logprobs"), list(range(50))), CustomLossLimits(max_literals=40)
        )
    assert (caught.value.field, caught.value.message) == ("graph", "more than 40 encoded values")


def test_the_default_node_cap_is_ten_thousand() -> None:
    body = [
        call(f"n{i}", "operator.neg", ref(f"n{i - 1}" if i else "logprobs")) for i in range(9995)
    ]
    compile_lw(one_op_graph(*body))  # 2 + 9995 + 2 = 9999 nodes
    body.append(call("n9995", "operator.neg", ref("n9994")))
    body.append(call("n9996", "operator.neg", ref("n9995")))
    with pytest.raises(CustomLossError, match="10001 nodes; the limit is 10000"):
        compile_lw(one_op_graph(*body))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("neg_ll", True),
        ("<lambda>", True),
        ("", False),
        ("a\nb", False),
        ("x" * 257, False),
        (3, False),
    ],
)
def test_the_loss_name_is_printable_text_of_at_most_256_characters(name: Any, ok: bool) -> None:
    if ok:
        assert compile_custom_loss(name, copy.deepcopy(INPUTS_LW), neg_ll_graph()).name == name
    else:
        with pytest.raises(CustomLossError) as caught:
            compile_custom_loss(name, copy.deepcopy(INPUTS_LW), neg_ll_graph())
        assert caught.value.field == "name"


# ----- fuzzing: a request is either compiled or refused with CustomLossError -----

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_encoded = st.recursive(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            2,
            0.5,
            {"float": "nan"},
            {"ellipsis": True},
            {"dtype": "int64"},
            {"device": "cpu"},
            ref("logprobs"),
            ref("weights"),
            ref("mul"),
            ref("neg"),
            "shape",
            "values",
            "cpu",
            "none",
            "i,i->",
            {"slice": [None, -1, None]},
        ]
    ),
    lambda inner: st.lists(inner, max_size=3) | inner.map(lambda x: {"tuple": [x]}),
    max_leaves=6,
)
_TARGETS = sorted(FUNCTIONS) + sorted(METHODS) + ["os.system", "getattr", "item"]


@given(name=_json, inputs=_json, g=_json)
@_PROPERTY
def test_random_json_is_refused_with_a_custom_loss_error(name: Any, inputs: Any, g: Any) -> None:
    for request in [
        (name, inputs, g),
        ("x", INPUTS_LW, g),
        ("x", INPUTS_LW, {"format": 1, "nodes": g}),
    ]:
        with pytest.raises(CustomLossError):
            compile_custom_loss(*request)


@given(
    op=st.sampled_from(["call_function", "call_method"]),
    target=st.sampled_from(_TARGETS),
    args=st.lists(_encoded, max_size=4),
    kwargs=st.dictionaries(
        st.sampled_from(["dim", "min", "inplace", "dtype", "x"]), _encoded, max_size=2
    ),
    shape=st.sampled_from([(3,), (1,), (0,)]),
)
@_PROPERTY
def test_a_random_call_compiles_and_runs_or_raises_only_custom_loss_errors(
    op: str, target: str, args: list[Any], kwargs: dict[str, Any], shape: tuple[int, ...]
) -> None:
    g = neg_ll_graph()
    g["nodes"].insert(
        4, {"op": op, "name": "fuzz", "target": target, "args": args, "kwargs": kwargs}
    )
    g["nodes"][5]["args"] = [ref("fuzz")]  # neg(fuzz): the loss depends on the fuzzed node
    try:
        compiled = compile_lw(g)
    except CustomLossError:
        return
    logprobs, weights = torch.full(shape, -0.5, requires_grad=True), torch.ones(shape)
    try:
        loss, _ = compiled(logprobs, {"weights": weights})
    except CustomLossError:
        return
    assert loss.dim() == 0 and loss.is_floating_point()
    assert torch.equal(weights, torch.ones(shape))  # nothing wrote into an input


# ----- argument decoding -----


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (None, None),
        (True, True),
        (-3, -3),
        (0.25, 0.25),
        ([1, [2.5, None]], [1, [2.5, None]]),
        ({"tuple": [1, {"tuple": []}]}, (1, ())),
        ({"slice": [None, -1, 2]}, slice(None, -1, 2)),
        ({"ellipsis": True}, ...),
        ({"float": "inf"}, math.inf),
        ({"float": "-inf"}, -math.inf),
        ({"dtype": "float32"}, torch.float32),
        ({"dtype": "float64"}, torch.float64),
        ({"dtype": "int64"}, torch.int64),
        ({"dtype": "int32"}, torch.int32),
        ({"dtype": "bool"}, torch.bool),
        ({"device": "cpu"}, torch.device("cpu")),
        ({"layout": "strided"}, torch.strided),
        ({"memory_format": "contiguous_format"}, torch.contiguous_format),
        ({"memory_format": "preserve_format"}, torch.preserve_format),
        (
            {"tuple": [{"ellipsis": True}, None, {"slice": [1, None, None]}]},
            (..., None, slice(1, None)),
        ),
    ],
)
def test_each_encoding_decodes_to_the_python_value_it_stands_for(
    encoded: Any, expected: Any
) -> None:
    decoder = _Decoder({"logprobs": 0}, CustomLossLimits())
    value = _fill(decoder.decode(encoded, "arg", node=1, strings=None), [])
    assert value == expected and type(value) is type(expected)


def test_nan_node_refs_and_slice_bounds_decode_as_encoded() -> None:
    decoder = _Decoder({"logprobs": 0, "weights": 1}, CustomLossLimits())
    assert math.isnan(_fill(decoder.decode({"float": "nan"}, "arg", 2, None), []))  # type: ignore[arg-type]
    with pytest.raises(CustomLossError, match="slice bound"):  # an int, None or a node
        decoder.decode({"slice": [ref("logprobs"), {"tuple": [1]}, None]}, "arg", 2, None)
    template = decoder.decode({"slice": [ref("logprobs"), None, ref("weights")]}, "arg", 2, None)
    assert _fill(template, ["a", "b"]) == slice("a", None, "b")
    template = decoder.decode({"tuple": [ref("weights"), [ref("logprobs")]]}, "arg", 2, None)
    assert _fill(template, ["a", "b"]) == ("b", ["a"])


def _checksum(t: torch.Tensor) -> torch.Tensor:
    """Position-sensitive float64 digest of a tensor's values and layout."""
    return t.to(torch.float64).flatten().cumsum(0).sum() + t.dim() * 1e6 + t.numel() * 1e9


X2 = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
W2 = torch.tensor([[0.5, 1.0, 2.0], [1.0, 0.0, 1.0]])

# (node "r" computed from logprobs = X2 and weights = W2, the torch expression it stands for)
DECODED_CALLS: list[tuple[dict[str, Any], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = [
    (
        call(
            "r",
            "operator.getitem",
            ref("logprobs"),
            {"tuple": [{"ellipsis": True}, None, {"slice": [None, None, 2]}]},
        ),
        lambda x, w: x[..., None, ::2],
    ),
    (
        call(
            "r",
            "operator.getitem",
            ref("logprobs"),
            {"tuple": [{"slice": [1, None, None]}, [0, 2, 2]]},
        ),
        lambda x, w: x[1:, [0, 2, 2]],
    ),
    (call("r", "operator.getitem", ref("logprobs"), ref("gt")), lambda x, w: x[w > 0.5]),
    (
        call("r", "torch.clamp", ref("logprobs"), min={"float": "-inf"}, max=2.0),
        lambda x, w: torch.clamp(x, min=-math.inf, max=2.0),
    ),
    (
        call("r", "torch.full_like", ref("logprobs"), {"float": "inf"}),
        lambda x, w: torch.full_like(x, math.inf),
    ),
    (method("r", "to", ref("logprobs"), {"dtype": "float64"}), lambda x, w: x.to(torch.float64)),
    (method("r", "to", ref("logprobs"), "cpu"), lambda x, w: x.to("cpu")),
    (
        method("r", "to", ref("logprobs"), device={"device": "cpu"}, dtype={"dtype": "int32"}),
        lambda x, w: x.to(device="cpu", dtype=torch.int32),
    ),
    (
        method("r", "sum", ref("logprobs"), {"tuple": [0, 1]}, dtype={"dtype": "int64"}),
        lambda x, w: x.sum((0, 1), dtype=torch.int64),
    ),
    (
        call(
            "r",
            "torch.zeros_like",
            ref("logprobs"),
            layout={"layout": "strided"},
            memory_format={"memory_format": "contiguous_format"},
            dtype={"dtype": "bool"},
        ),
        lambda x, w: torch.zeros_like(x, dtype=torch.bool),
    ),
    (
        call("r", "torch.stack", [ref("logprobs"), ref("weights")], -1),
        lambda x, w: torch.stack([x, w], -1),
    ),
    (
        call("r", "torch.functional.einsum", "tk,tk->t", ref("logprobs"), ref("weights")),
        lambda x, w: torch.einsum("tk,tk->t", x, w),
    ),
    (
        call("r", "torch.div", ref("logprobs"), 4, rounding_mode="floor"),
        lambda x, w: torch.div(x, 4, rounding_mode="floor"),
    ),
    (
        call(
            "r", "torch.nn.functional.softmax", ref("logprobs"), dim=-1, _stacklevel=3, dtype=None
        ),
        lambda x, w: F.softmax(x, dim=-1),
    ),
    (
        call("r", "torch.nn.functional.kl_div", ref("logprobs"), ref("weights"), reduction="none"),
        lambda x, w: F.kl_div(x, w, reduction="none"),
    ),
    (call("r", "torch.nn.functional.relu", ref("logprobs"), inplace=False), lambda x, w: F.relu(x)),
    (
        method("r", "new_full", ref("logprobs"), {"tuple": [2]}, 7.0),
        lambda x, w: x.new_full((2,), 7.0),
    ),
    (
        method("r", "new_tensor", ref("logprobs"), [[1.0, 2.0]]),
        lambda x, w: x.new_tensor([[1.0, 2.0]]),
    ),
    (
        call("r", "torch.arange", 5, dtype={"dtype": "float32"}),
        lambda x, w: torch.arange(5, dtype=torch.float32),
    ),
    (call("r", "torch.zeros", 2, 3, device="cpu"), lambda x, w: torch.zeros(2, 3, device="cpu")),
]


@pytest.mark.parametrize(
    ("node", "expected"), DECODED_CALLS, ids=[n["target"] for n, _ in DECODED_CALLS]
)
def test_decoded_arguments_reach_the_call_as_the_sdk_encoded_them(
    node: dict[str, Any], expected: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> None:
    nodes = [placeholder("logprobs"), placeholder("weights")]
    if ref("gt") in node["args"]:  # the boolean mask case
        nodes.append(call("gt", "operator.gt", ref("weights"), 0.5))
    nodes += [
        node,
        method("r64", "to", ref("r"), {"dtype": "float64"}),
        method("flat", "flatten", ref("r64")),
        method("cum", "cumsum", ref("flat"), 0),
        method("digest", "sum", ref("cum")),
        method("n", "numel", ref("r")),
        method("d", "dim", ref("r")),
        call("dn", "operator.mul", ref("d"), 1e6),
        call("nn", "operator.mul", ref("n"), 1e9),
        call("a", "operator.add", ref("digest"), ref("dn")),
        call("loss", "operator.add", ref("a"), ref("nn")),
        output("loss"),
    ]
    inputs = [{"name": "logprobs", "rank": 2}, {"name": "weights", "rank": 2}]
    loss, _ = compile_custom_loss("decode", inputs, graph(*nodes))(X2, {"weights": W2})
    assert_bitwise(loss, _checksum(expected(X2, W2)))


@given(
    index=st.lists(
        st.one_of(
            st.integers(-3, 2),
            st.none(),
            st.tuples(
                st.none() | st.integers(-4, 4),
                st.none() | st.integers(-4, 4),
                st.none() | st.integers(1, 3),
            ),
            st.just(...),
        ),
        max_size=4,
    ),
    as_tuple=st.booleans(),
)
@_PROPERTY
def test_random_indexing_decodes_to_the_same_selection_as_python_indexing(
    index: list[Any], as_tuple: bool
) -> None:
    def encode(item: Any) -> Any:
        if isinstance(item, tuple):
            return {"slice": list(item)}
        return {"ellipsis": True} if item is ... else item

    def python(item: Any) -> Any:
        return slice(*item) if isinstance(item, tuple) else item

    encoded = (
        {"tuple": [encode(i) for i in index]} if as_tuple or len(index) != 1 else encode(index[0])
    )
    key = tuple(python(i) for i in index) if as_tuple or len(index) != 1 else python(index[0])
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4).mul(1.5).requires_grad_(True)
    g = graph(
        placeholder("logprobs"),
        call("sel", "operator.getitem", ref("logprobs"), encoded),
        method("loss", "sum", ref("sel")),
        output("loss"),
    )
    compiled = compile_custom_loss("index", [{"name": "logprobs", "rank": 2}], g)
    try:
        expected = x[key].sum()
    except (IndexError, TypeError, ValueError, RuntimeError):
        with pytest.raises(CustomLossError) as caught:
            compiled(x, {})
        assert caught.value.field == "graph.nodes[1]"
        return
    loss, _ = compiled(x, {})
    assert_bitwise(loss, expected)
    (expected_grad,) = torch.autograd.grad(expected, x)
    (grad,) = torch.autograd.grad(loss, x)
    assert_bitwise(grad, expected_grad)  # which elements were selected, and how often


# ----- run-time errors -----


def _run_error(
    g: Graph, logprobs: torch.Tensor, weights: torch.Tensor, **limits: int
) -> CustomLossError:
    compiled = compile_lw(g, CustomLossLimits(**limits))
    with pytest.raises(CustomLossError) as caught:
        compiled(logprobs, {"weights": weights})
    return caught.value


def test_a_shape_error_inside_torch_names_the_node() -> None:
    error = _run_error(neg_ll_graph(), torch.zeros(3), torch.zeros(4))
    assert error.field == "graph.nodes[2]"
    assert error.message.startswith("node 'mul' (operator.mul) failed: RuntimeError: The size of")


def test_a_loss_that_is_not_a_floating_scalar_is_refused() -> None:
    not_reduced = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        call("mul", "operator.mul", ref("logprobs"), ref("weights")),
        output("mul"),
    )
    integer = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        method("n", "numel", ref("logprobs")),
        output("n"),
    )
    int_tensor = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        method("l", "long", ref("logprobs")),
        method("s", "sum", ref("l")),
        output("s"),
    )
    for g, got in [
        (not_reduced, "a torch.float32 tensor of shape [3]"),
        (integer, "int"),
        (int_tensor, "a torch.int64 tensor of shape []"),
    ]:
        error = _run_error(g, torch.zeros(3), torch.ones(3))
        assert error.field == "graph.output.loss"
        assert error.message == f"loss 'test_loss' must be a floating scalar, got {got}"


def test_a_metric_that_is_not_a_one_element_tensor_is_refused() -> None:
    for body, got in [
        ([method("m", "numel", ref("logprobs"))], "int"),
        ([call("m", "operator.mul", ref("logprobs"), 2.0)], "shape [3]"),
    ]:
        g = graph(
            placeholder("logprobs"),
            placeholder("weights"),
            *body,
            method("s", "sum", ref("logprobs")),
            output("s", {"custom/m:mean": "m"}),
        )
        error = _run_error(g, torch.zeros(3), torch.ones(3))
        assert error.field == "graph.output.metrics['custom/m:mean']"
        assert error.message == f"must be a one-element tensor, got {got}"


def test_a_one_element_metric_comes_back_as_a_scalar() -> None:
    g = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        method("m", "sum", ref("logprobs"), {"tuple": [0]}, keepdim=True),
        method("s", "sum", ref("logprobs")),
        output("s", {"custom/m:sum": "m"}),
    )
    _, metrics = compile_lw(g)(torch.ones(3), {"weights": torch.ones(3)})
    assert metrics["custom/m:sum"].shape == ()


def test_missing_inputs_and_wrong_ranks_are_refused_before_running() -> None:
    compiled = compile_lw(neg_ll_graph())
    cases = [
        (torch.zeros(3), {}, "loss_fn_inputs.weights", "missing; the loss reads it with rank 1"),
        (
            torch.zeros(3),
            {"weights": torch.zeros(3, 1)},
            "loss_fn_inputs.weights",
            "has rank 2; the loss declared rank 1",
        ),
        (
            torch.zeros(3, 2),
            {"weights": torch.zeros(3)},
            "logprobs",
            "has rank 2; the loss declared rank 1",
        ),
        (
            torch.zeros(3),
            {"weights": [1.0, 2.0, 3.0]},
            "loss_fn_inputs.weights",
            "expected a tensor, got a list",
        ),
    ]
    for logprobs, inputs, field, message in cases:
        with pytest.raises(CustomLossError) as caught:
            compiled(logprobs, inputs)  # type: ignore[arg-type]
        assert (caught.value.field, caught.value.message) == (field, message)


def test_check_datum_applies_the_sdk_client_checks_to_one_datum() -> None:
    compiled = compile_lw(neg_ll_graph())
    compiled.check_datum(
        0, {"target_tokens": torch.zeros(3, dtype=torch.int64), "weights": torch.ones(3)}
    )
    cases = [
        ({"weights": torch.ones(3)}, "data[4].loss_fn_inputs.target_tokens", "missing"),
        (
            {"target_tokens": torch.zeros(3, 2, dtype=torch.int64), "weights": torch.ones(3)},
            "data[4].loss_fn_inputs.target_tokens",
            "has rank 2",
        ),
        (
            {"target_tokens": torch.zeros(3, dtype=torch.int64), "weights": torch.ones(())},
            "data[4].loss_fn_inputs.weights",
            "has rank 0",
        ),
    ]
    for inputs, field, words in cases:
        with pytest.raises(CustomLossError) as caught:
            compiled.check_datum(4, inputs)
        assert caught.value.field == field and words in caught.value.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            [
                call("shape", "getattr", ref("logprobs"), "shape"),
                method("n", "numel", ref("shape")),
            ],
            "(numel) failed: TypeError: the receiver is a Size, not a tensor",
        ),
        (
            [call("v", "getattr", ref("logprobs"), "values")],
            "(getattr) failed: TypeError: cannot read .values of a Tensor",
        ),
        (
            [
                call("shape", "getattr", ref("logprobs"), "shape"),
                call("v", "getattr", ref("shape"), "dtype"),
            ],
            "cannot read .dtype of a Size",
        ),
        (
            [
                call("shape", "getattr", ref("logprobs"), "shape"),
                call("rep", "operator.mul", ref("shape"), 10**9),
            ],
            "(operator.mul) failed: TypeError: sequences only support indexing, + and ==",
        ),
        (
            [
                call("shape", "getattr", ref("logprobs"), "shape"),
                call("t", "operator.getitem", ref("shape"), 0),
                call("p", "operator.pow", ref("t"), 100_000),
            ],
            "(operator.pow) failed: OverflowError: int power with exponent 100000 > 64",
        ),
        ([call("big", "operator.mul", 2**62, 4)], "(operator.mul) made an int outside int64"),
        (
            [call("z", "operator.truediv", 1, 0)],
            "(operator.truediv) failed: ZeroDivisionError: division by zero",
        ),
        ([call("f", "math.exp", 1000.0)], "(math.exp) failed: OverflowError: math range error"),
        (
            [
                method("s", "sum", ref("logprobs")),
                method("n", "long", ref("s")),
                call("z", "torch.zeros", ref("n")),
            ],
            "(torch.zeros): result size not known before running",
        ),
        (
            [
                method("ty", "type", ref("logprobs")),  # 'torch.FloatTensor': a str value
                call("rep", "operator.mul", ref("ty"), 10**9),
            ],
            "(operator.mul) failed: TypeError: strings are not operands",
        ),
    ],
)
def test_run_time_misuse_is_refused_naming_the_node(body: list[dict[str, Any]], words: str) -> None:
    g = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        *body,
        method("s_", "sum", ref("logprobs")),
        output("s_"),
    )
    error = _run_error(g, torch.ones(3), torch.ones(3))
    last = body[-1]
    assert error.field == f"graph.nodes[{1 + len(body)}]"
    assert error.message.startswith(f"node {last['name']!r} ({last['target']})")
    assert words in error.message


def test_a_power_of_small_ints_and_of_one_still_runs() -> None:
    g = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        call("shape", "getattr", ref("logprobs"), "shape"),
        call("t", "operator.getitem", ref("shape"), 0),
        call("p", "operator.pow", ref("t"), 5),
        call("one", "operator.pow", 1, 10**9),
        call("q", "operator.mul", ref("p"), ref("one")),
        method("s", "sum", ref("logprobs")),
        call("loss", "operator.mul", ref("s"), ref("q")),
        output("loss"),
    )
    assert float(compile_lw(g)(torch.ones(3), {"weights": torch.ones(3)})[0]) == 3.0 * 3**5


# ----- resource limits -----


def test_a_broadcast_blowup_is_refused_before_the_memory_is_allocated() -> None:
    body = [
        method("col", "unsqueeze", ref("logprobs"), 1),
        method("row", "unsqueeze", ref("weights"), 0),
        call("outer", "operator.add", ref("col"), ref("row")),  # [T, 1] + [1, T] -> [T, T]
    ]
    # 2^14 tokens: the [T, T] result would be 2^28 floats = 1 GiB; refused on meta, instantly.
    error = _run_error(one_op_graph(*body), torch.zeros(2**14), torch.zeros(2**14))
    assert error.field == "graph.nodes[4]"
    assert error.message == (
        "node 'outer' (operator.add) makes a tensor of 268435456 elements; the limit is 16777216"
    )


@pytest.mark.parametrize(
    "node",
    [
        method("big", "expand", ref("logprobs"), 10**6, -1),  # a view: no memory, but huge
        method("big", "new_zeros", ref("logprobs"), {"tuple": [10**5, 10**5]}),
        call("big", "torch.full", {"tuple": [10**9]}, 1.0),
        call("big", "torch.arange", 0, 10**12),
        call("big", "torch.cat", [ref("logprobs")] * 2000),
        call("big", "torch.outer", ref("logprobs"), ref("weights")),
    ],
    ids=lambda node: node["target"],
)
def test_every_way_to_make_a_big_tensor_meets_the_element_limit(node: dict[str, Any]) -> None:
    error = _run_error(
        one_op_graph(node), torch.zeros(1000), torch.zeros(1000), max_tensor_elements=10**6 - 1
    )
    assert error.field == "graph.nodes[2]"
    assert error.message.startswith(f"node 'big' ({node['target']}) makes a tensor of")
    assert error.message.endswith("the limit is 999999")


@given(shapes=st.lists(st.lists(st.integers(0, 4), max_size=4).map(tuple), min_size=1, max_size=4))
@_PROPERTY
def test_the_broadcast_bound_is_the_size_torch_broadcasts_to(shapes: list[tuple[int, ...]]) -> None:
    sizes = [torch.Size(shape) for shape in shapes]
    try:
        expected: int | None = math.prod(torch.broadcast_shapes(*sizes))  # type: ignore[no-untyped-call]
    except RuntimeError:
        expected = None
    assert _broadcast_elements(sizes) == expected


def test_the_elements_one_datum_makes_are_capped_in_total() -> None:
    body = [call(f"n{i}", "operator.neg", ref(f"n{i - 1}" if i else "logprobs")) for i in range(10)]
    compiled = compile_lw(one_op_graph(*body), CustomLossLimits(max_total_elements=250))
    with pytest.raises(CustomLossError) as caught:
        compiled(torch.zeros(50), {"weights": torch.zeros(50)})
    assert caught.value.field == "graph.nodes[7]"  # the 6th tensor of 50 elements
    assert "more than 250 tensor elements for one datum" in caught.value.message
    compiled(torch.zeros(20), {"weights": torch.zeros(20)})  # 11 tensors of 20: within budget


def test_a_sequence_longer_than_the_limit_is_refused() -> None:
    node = method("parts", "unbind", ref("logprobs"))
    g = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        node,
        method("s", "sum", ref("logprobs")),
        output("s"),
    )
    error = _run_error(g, torch.zeros(100), torch.zeros(100), max_sequence_length=99)
    assert error.message == "node 'parts' (unbind) made a sequence of 100 items"


def test_running_never_changes_the_inputs() -> None:
    g = graph(
        placeholder("logprobs"),
        placeholder("weights"),
        call("mask", "operator.gt", ref("weights"), 0),
        method("c", "clamp", ref("logprobs"), min=0.0),
        method("m", "masked_fill", ref("logprobs"), ref("mask"), 5.0),
        call("r", "torch.nn.functional.relu", ref("weights"), inplace=False),
        call("a", "operator.add", ref("m"), ref("r")),
        call("b", "operator.add", ref("a"), ref("c")),
        method("s", "sum", ref("b")),
        output("s"),
    )
    logprobs, weights = torch.tensor([-1.0, 2.0, -3.0]), torch.tensor([1.0, -1.0, 0.0])
    before = (logprobs.clone(), weights.clone())
    compile_lw(g)(logprobs, {"weights": weights})
    assert torch.equal(logprobs, before[0]) and torch.equal(weights, before[1])


# ----- the allow-list itself -----


def test_every_function_name_is_the_one_torch_fx_gives_its_callable() -> None:
    """The SDK sends torch.fx's qualified name, with _operator. rewritten to operator."""
    for target, op in FUNCTIONS.items():
        if target == "getattr":
            continue
        name = _get_qualified_name(op.fn)
        assert name.replace("_operator.", "operator.", 1) == target


def test_no_allowed_call_mutates_leaves_the_cpu_reads_memory_or_draws_randomness() -> None:
    forbidden = {
        "backward",
        "item",
        "tolist",
        "numpy",
        "data_ptr",
        "storage",
        "untyped_storage",
        "cuda",
        "pin_memory",
        "share_memory_",
        "register_hook",
        "retain_grad",
        "set_",
        "resize_",
        "new_empty",
        "empty_like",
        "apply_",
        "map_",
        "bernoulli",
        "multinomial",
        "normal_",
        "random_",
        "uniform_",
        "exponential_",
        "dropout",
        "save",
        "load",
        "from_file",
        "tensor",
        "as_tensor",
        "from_numpy",
        "repeat_interleave",
        "bincount",
    }
    # operator.and_ / or_ are `&` and `|`, not in-place forms: the trailing _ rule is torch's.
    names = [t.rsplit(".", 1)[-1] for t in FUNCTIONS if t.startswith("torch.")] + list(METHODS)
    assert not [
        n for n in names if n.endswith("_") or n in forbidden or "rand" in n or n.startswith("_")
    ]
    assert not {t.rsplit(".", 1)[-1] for t in FUNCTIONS} & forbidden
    for name, op in METHODS.items():
        assert op.fn is getattr(torch.Tensor, name)
    roots = {target.split(".")[0] for target in FUNCTIONS}
    assert roots == {"operator", "torch", "math", "getattr"}


# ----- random compositions of allowed ops against the same torch expression -----

# (node op, target, extra args after the operands, kwargs, arity, the torch expression)
Spec = tuple[str, str, tuple[Any, ...], dict[str, Any], int, Callable[..., torch.Tensor]]
SPECS: list[Spec] = [
    ("call_function", "torch.exp", (), {}, 1, torch.exp),
    ("call_function", "torch.tanh", (), {}, 1, torch.tanh),
    ("call_function", "torch.sigmoid", (), {}, 1, torch.sigmoid),
    ("call_function", "torch.log1p", (), {}, 1, torch.log1p),
    ("call_function", "torch._C._nn.log_sigmoid", (), {}, 1, F.logsigmoid),
    (
        "call_function",
        "torch._C._nn.softplus",
        (),
        {"beta": 2.0},
        1,
        lambda x: F.softplus(x, beta=2.0),
    ),
    ("call_function", "torch.nn.functional.relu", (), {"inplace": False}, 1, F.relu),
    (
        "call_function",
        "torch.nn.functional.log_softmax",
        (),
        {"dim": -1, "_stacklevel": 3, "dtype": None},
        1,
        lambda x: F.log_softmax(x, dim=-1),
    ),
    ("call_function", "torch.softmax", (-1,), {}, 1, lambda x: torch.softmax(x, -1)),
    ("call_function", "torch.clamp", (-0.5, 0.75), {}, 1, lambda x: torch.clamp(x, -0.5, 0.75)),
    ("call_function", "operator.neg", (), {}, 1, operator.neg),
    ("call_function", "operator.abs", (), {}, 1, operator.abs),
    ("call_function", "operator.pow", (2,), {}, 1, lambda x: x**2),
    ("call_function", "operator.mul", (0.1,), {}, 1, lambda x: x * 0.1),
    ("call_function", "operator.truediv", (3.0,), {}, 1, lambda x: x / 3.0),
    ("call_method", "exp", (), {}, 1, lambda x: x.exp()),
    ("call_method", "square", (), {}, 1, lambda x: x.square()),
    ("call_method", "cumsum", (-1,), {}, 1, lambda x: x.cumsum(-1)),
    ("call_method", "clip", (), {"min": -1.0, "max": 1.0}, 1, lambda x: x.clip(min=-1.0, max=1.0)),
    ("call_method", "log_softmax", (-1,), {}, 1, lambda x: x.log_softmax(-1)),
    ("call_method", "float", (), {}, 1, lambda x: x.float()),
    ("call_function", "operator.add", (), {}, 2, operator.add),
    ("call_function", "operator.sub", (), {}, 2, operator.sub),
    ("call_function", "operator.mul", (), {}, 2, operator.mul),
    ("call_function", "torch.minimum", (), {}, 2, torch.minimum),
    ("call_function", "torch.maximum", (), {}, 2, torch.maximum),
    ("call_function", "torch.logaddexp", (), {}, 2, torch.logaddexp),
    ("call_function", "torch.xlogy", (), {}, 2, torch.xlogy),
    ("call_method", "mul", (), {}, 2, lambda a, b: a.mul(b)),
    ("call_function", "torch.where", (), {}, 3, lambda c, a, b: torch.where(c > 0, a, b)),
]
REDUCTIONS: list[tuple[str, str, tuple[Any, ...], Callable[[torch.Tensor], torch.Tensor]]] = [
    ("call_method", "sum", (), lambda x: x.sum()),
    ("call_method", "mean", (), lambda x: x.mean()),
    (
        "call_function",
        "torch.logsumexp",
        ("all dims",),
        lambda x: torch.logsumexp(x, tuple(range(x.dim()))),
    ),
    ("call_method", "amax", (), lambda x: x.amax()),
]


@st.composite
def programs(
    draw: st.DrawFn,
) -> tuple[
    Graph, Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]], tuple[int, ...], int
]:
    shape = draw(st.sampled_from([(1,), (5,), (4, 3)]))
    rank = len(shape)
    nodes = [placeholder("logprobs"), placeholder("weights")]
    plan: list[tuple[Callable[..., torch.Tensor], list[int]]] = []
    for i in range(draw(st.integers(1, 8))):
        op, target, extra, kwargs, arity, expression = draw(st.sampled_from(SPECS))
        operands = [draw(st.integers(0, 1 + i)) for _ in range(arity)]
        name = f"v{i}"
        names = ["logprobs", "weights"] + [f"v{j}" for j in range(i)]
        args: list[Any] = [ref(names[k]) for k in operands]
        if target == "torch.where":  # the condition: operand > 0
            nodes.append(call(f"c{i}", "operator.gt", args[0], 0))
            args[0] = ref(f"c{i}")
        nodes.append(
            {"op": op, "name": name, "target": target, "args": args + list(extra), "kwargs": kwargs}
        )
        plan.append((expression, operands))
    r_op, r_target, r_extra, reduce = draw(st.sampled_from(REDUCTIONS))
    last = f"v{len(plan) - 1}"
    metric_source = draw(st.integers(0, 1 + len(plan)))
    metric_name = (["logprobs", "weights"] + [f"v{j}" for j in range(len(plan))])[metric_source]
    nodes += [
        {
            "op": r_op,
            "name": "loss",
            "target": r_target,
            "args": [
                ref(last),
                *({"tuple": list(range(rank))} if e == "all dims" else e for e in r_extra),
            ],
            "kwargs": {},
        },
        method("metric", "mean", ref(metric_name)),
        output("loss", {"custom/m:mean": "metric"}),
    ]

    def reference(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        values = list(inputs)
        for expression, operands in plan:
            values.append(expression(*(values[k] for k in operands)))
        return reduce(values[-1]), values[metric_source].mean()

    return graph(*nodes), reference, shape, rank


@given(program=programs(), seed=st.integers(0, 2**31 - 1))
@_PROPERTY
def test_random_compositions_of_allowed_ops_equal_the_same_torch_expression_bit_for_bit(
    program: tuple[
        Graph,
        Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
        tuple[int, ...],
        int,
    ],
    seed: int,
) -> None:
    g, reference, shape, rank = program
    generator = torch.Generator().manual_seed(seed)
    logprobs = (-torch.rand(shape, generator=generator) * 3).requires_grad_(True)
    weights = torch.randn(shape, generator=generator)
    inputs = [{"name": "logprobs", "rank": rank}, {"name": "weights", "rank": rank}]
    compiled = compile_custom_loss("random", inputs, g)

    loss, metrics = compiled(logprobs, {"weights": weights})
    expected_loss, expected_metric = reference([logprobs, weights])

    assert_bitwise(loss, expected_loss)
    assert_bitwise(metrics["custom/m:mean"], expected_metric)
    if expected_loss.requires_grad:
        (grad,) = torch.autograd.grad(loss, logprobs)
        (expected_grad,) = torch.autograd.grad(expected_loss, logprobs)
        assert_bitwise(grad, expected_grad)


# ----- the engine hook -----


def test_as_datum_loss_plugs_into_the_engine_with_direct_autograd_gradients() -> None:
    model = warm_model()
    batch = make_batch(seed=11, vocab_size=model.vocab_size, lengths=(4, 1, 6))
    weights = batch.floats("weights", low=0.0, high=2.0)
    compiled = compile_lw(neg_ll_graph())

    result = model.forward_backward_per_datum(
        batch.datums(weights=weights), compiled.as_datum_loss()
    )

    def reference(logprobs: Sequence[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for lp, w in zip(logprobs, weights, strict=True):
            total = total + -(lp * w).sum()
        return total

    expected_grads = direct_autograd_grads(model, batch, reference)
    assert some_gradient_is_nonzero(expected_grads)
    assert_grads_equal(grads(model), expected_grads)
    logprobs = forward_logprobs(model, batch)
    assert result.metrics["loss:sum"] == float(reference(logprobs))
    # Metrics are summed as Python floats over datums (as the SDK's run_loss_handle does);
    # loss:sum is the float32 total.
    per_datum = [float(-(lp * w).sum()) for lp, w in zip(logprobs, weights, strict=True)]
    assert result.metrics["custom/neg_ll:sum"] == sum(per_datum)
    assert result.metrics["custom/tokens:mean"] == sum(float(w.sum()) for w in weights) / 3
    assert [set(out) for out in result.loss_fn_outputs] == [{"logprobs"}] * 3
