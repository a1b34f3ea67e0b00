"""The client half of forward_backward_custom: forward data, the user's loss, backward data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.profiles import examples
from tinker_ref.custom_loss import forward_phase_data, run_custom_loss
from tinker_ref.errors import CustomLossError
from tinker_ref.types import Datum, ModelInput, TensorData


def _datum(length: int, k: int | None = None, extra: bool = False) -> Datum:
    shape = (length,) if k is None else (length, k)
    inputs: dict[str, object] = {
        "target_tokens": np.arange(np.prod(shape), dtype=np.int64).reshape(shape) % 7
    }
    if extra:
        inputs["advantages"] = np.linspace(-1, 1, length, dtype=np.float32)
    return Datum(model_input=ModelInput.from_ints(list(range(length))), loss_fn_inputs=inputs)


def _outputs(data: list[Datum], seed: int = 0) -> list[dict[str, TensorData]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "logprobs": TensorData.from_numpy(
                -rng.random(d.loss_fn_inputs["target_tokens"].dense_shape).astype(np.float32)
            )
        }
        for d in data
    ]


@pytest.mark.spec("CL-2")
def test_forward_data_keeps_only_targets_and_weights_with_zero_weights_when_absent() -> None:
    data = [_datum(4, extra=True), _datum(3, k=2)]
    forward = forward_phase_data(data)
    assert [set(d.loss_fn_inputs) for d in forward] == [{"target_tokens", "weights"}] * 2
    assert forward[0].loss_fn_inputs["weights"].to_numpy().tolist() == [0.0] * 4
    assert forward[1].loss_fn_inputs["weights"].dense_shape == (3, 2)
    assert forward[0].model_input == data[0].model_input


@pytest.mark.spec("CL-3")
def test_forward_data_without_target_tokens_is_an_error_naming_the_datum() -> None:
    bad = Datum(model_input=ModelInput.from_ints([1, 2]), loss_fn_inputs={"weights": [1.0, 1.0]})
    with pytest.raises(CustomLossError, match=r"data\[1\].*target_tokens"):
        forward_phase_data([_datum(2), bad])


@pytest.mark.spec("CL-4", "CL-7")
@settings(max_examples=examples(25), deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    permutation_seed=st.integers(0, 1000),
)
def test_weights_of_datum_i_are_minus_the_loss_gradient_of_datum_i(
    lengths: list[int], permutation_seed: int
) -> None:
    data = [_datum(n) for n in lengths]
    outputs = _outputs(data, permutation_seed)
    order = np.random.default_rng(permutation_seed).permutation(len(data))
    coefficients = [float(i + 1) for i in range(len(data))]

    def loss_fn(batch: list[Datum], logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        # A loss that weights each datum differently, so a mix-up changes the gradients.
        total = sum(c * (lp**2).sum() for c, lp in zip(coefficients, logprobs, strict=True))
        return total, {}

    result = run_custom_loss([data[i] for i in order], [outputs[i] for i in order], loss_fn)
    for position, index in enumerate(order):
        logprobs = outputs[index]["logprobs"].to_numpy()
        expected = -(coefficients[position] * 2 * logprobs)
        got = result.backward_data[position].loss_fn_inputs["weights"].to_numpy()
        np.testing.assert_array_equal(got, expected.astype(np.float32))
        assert result.backward_data[position].model_input == data[index].model_input


@pytest.mark.spec("CL-8")
def test_two_dimensional_gradient_travels_as_sparse_csr_when_smaller() -> None:
    data = [_datum(6, k=3)]

    def last_row_only(
        batch: list[Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict]:
        return -logprobs[0][-1].logsumexp(0), {}

    weights = run_custom_loss(data, _outputs(data), last_row_only).backward_data[0]
    tensor = weights.loss_fn_inputs["weights"]
    assert tensor.is_sparse and tensor.crow_indices_array.tolist() == [0, 0, 0, 0, 0, 0, 3]


@pytest.mark.spec("CL-13", "CL-14")
def test_loss_value_and_metrics_are_python_numbers_with_string_keys() -> None:
    data = [_datum(3)]

    def loss_fn(batch: list[Datum], logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        loss = -logprobs[0].sum()
        return loss, {
            "ppl": torch.exp(loss / 3),
            3: np.float32(0.5),
            ("a", 1): np.array([7]),
            "count": 4,
        }

    result = run_custom_loss(data, _outputs(data), loss_fn)
    assert result.metrics.keys() == {"ppl", "3", "('a', 1)", "count"}
    assert all(type(v) in (int, float) for v in result.metrics.values())
    assert result.metrics["count"] == 4 and result.metrics["3"] == 0.5
    assert result.loss == pytest.approx(-float(_outputs(data)[0]["logprobs"].to_numpy().sum()))


@pytest.mark.spec("CL-5", "CL-6", "CL-14")
@pytest.mark.parametrize(
    ("loss_fn", "message"),
    [
        (lambda b, lps: (torch.stack([lp.sum() for lp in lps]), {}), "scalar tensor"),
        (lambda b, lps: (1.0, {}), "scalar tensor"),
        (lambda b, lps: (torch.tensor(2.0), {}), "does not depend"),
        (lambda b, lps: (lps[0].sum(), {}), r"data\[1\]"),
        (lambda b, lps: (sum(lp.sum() for lp in lps), {"bad": "text"}), "'bad'"),
        (lambda b, lps: (sum(lp.sum() for lp in lps), [1, 2]), "metrics dict"),
        (lambda b, lps: sum(lp.sum() for lp in lps), "tuple"),
    ],
    ids=["vector", "float", "no-graph", "unused-datum", "text-metric", "list-metrics", "no-tuple"],
)
def test_unusable_loss_functions_raise_a_custom_loss_error(loss_fn, message: str) -> None:
    data = [_datum(2), _datum(3)]
    with pytest.raises(CustomLossError, match=message):
        run_custom_loss(data, _outputs(data), loss_fn)


@pytest.mark.spec("CL-4")
def test_logprobs_shaped_differently_from_targets_are_rejected() -> None:
    data = [_datum(3)]
    wrong = [{"logprobs": TensorData.from_numpy(np.zeros(4, dtype=np.float32))}]
    with pytest.raises(CustomLossError, match=r"shape \[4\].*\[3\]"):
        run_custom_loss(data, wrong, lambda b, lps: (lps[0].sum(), {}))
