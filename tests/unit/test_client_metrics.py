"""Metric rules: chunk merging (as SDK 0.38 does it) and custom-loss metric rewriting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.profiles import examples
from tinker_ref.chunking import chunk_data, estimate_datum_bytes
from tinker_ref.errors import CustomLossError
from tinker_ref.metrics import combine_chunk_results, merge_custom_loss_metrics, user_metrics
from tinker_ref.types import Datum, ForwardBackwardOutput, ModelInput, TensorData


def _result(n_datums: int, metrics: dict[str, float]) -> ForwardBackwardOutput:
    outputs = [{"logprobs": TensorData.from_numpy(np.zeros(1, np.float32))}] * n_datums
    return ForwardBackwardOutput("ArrayRecord", outputs, metrics)


@pytest.mark.spec("CL-15")
def test_chunk_metrics_merge_by_their_reduction_and_means_weight_by_datums() -> None:
    merged = combine_chunk_results(
        [
            _result(
                1, {"loss:sum": 1.0, "acc:mean": 1.0, "m:max": 3.0, "n:min": 3.0, "s:slack": 1.0}
            ),
            _result(
                3, {"loss:sum": 2.0, "acc:mean": 0.0, "m:max": 5.0, "n:min": 2.0, "s:slack": 5.0}
            ),
        ]
    ).metrics
    # slack = max - datum-weighted mean = 5 - (1*1 + 5*3) / 4
    assert merged == {"loss:sum": 3.0, "acc:mean": 0.25, "m:max": 5.0, "n:min": 2.0, "s:slack": 1.0}


@pytest.mark.spec("CL-15")
def test_unique_metrics_keep_every_value_under_numbered_keys() -> None:
    merged = combine_chunk_results(
        [
            _result(1, {"id:unique": 7.0}),
            _result(1, {"id:unique": 8.0}),
            _result(1, {"id:unique": 9.0}),
        ]
    ).metrics
    assert merged == {"id:unique": 7.0, "id:unique_1": 8.0, "id:unique_2": 9.0}


@pytest.mark.spec("CL-15")
def test_keys_missing_from_a_chunk_or_with_unknown_reductions_are_dropped() -> None:
    merged = combine_chunk_results(
        [_result(1, {"a:sum": 1.0, "b:sum": 1.0, "c:median": 1.0}), _result(1, {"a:sum": 1.0})]
    ).metrics
    assert merged == {"a:sum": 2.0}


@pytest.mark.spec("CL-15")
@pytest.mark.parametrize("key", ["loss", "a:b:sum"])
def test_server_metric_keys_need_exactly_one_colon(key: str) -> None:
    with pytest.raises(ValueError, match="one colon"):
        combine_chunk_results([_result(1, {key: 1.0})])


@pytest.mark.spec("CL-15")
def test_hash2_metrics_merge_to_the_64_bit_wrapped_sum_of_their_integer_parts() -> None:
    values = [float(2**63), float(2**63 + 2**12), 3.9]  # the sum wraps past 2**64; 3.9 -> 3
    merged = combine_chunk_results([_result(1, {"h:hash2": v}) for v in values]).metrics
    assert merged["h:hash2"] == float(2**12 + 3)


@pytest.mark.spec("CL-15")
def test_outputs_are_concatenated_in_chunk_order() -> None:
    first = ForwardBackwardOutput(
        "ArrayRecord", [{"x": TensorData.from_numpy(np.array([1], np.int64))}], {}
    )
    second = ForwardBackwardOutput(
        "ArrayRecord", [{"x": TensorData.from_numpy(np.array([2], np.int64))}], {}
    )
    merged = combine_chunk_results([first, second])
    assert [o["x"].tolist() for o in merged.loss_fn_outputs] == [[1], [2]]


_keys = st.one_of(st.text(max_size=8), st.integers(), st.tuples(st.integers(), st.text(max_size=3)))
_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, width=32),
    st.floats(allow_nan=False, width=32).map(lambda v: torch.tensor(v)),
    st.floats(allow_nan=False, width=32).map(lambda v: torch.tensor([v])),
    st.integers(-100, 100).map(np.int64),
    st.floats(allow_nan=False, width=32).map(np.float32),
    st.floats(allow_nan=False, width=32).map(lambda v: np.array(v)),
    st.booleans(),
)


@pytest.mark.spec("CL-14")
@settings(max_examples=examples(60), deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_user_metrics_come_back_with_str_keys_and_python_numbers(raw: dict) -> None:
    converted = user_metrics(raw)
    assert set(converted) == {str(k) for k in raw}
    for key, value in raw.items():
        got = converted[str(key)]
        assert type(got) in (int, float)
        expected = value.item() if hasattr(value, "item") else value
        assert got == pytest.approx(float(expected))


@pytest.mark.spec("CL-14")
@pytest.mark.parametrize("value", ["text", None, [1.0], torch.ones(2), np.ones(3), object()])
def test_non_numeric_user_metrics_are_a_custom_loss_error(value: object) -> None:
    with pytest.raises(CustomLossError, match="'m'"):
        user_metrics({"m": value})


@pytest.mark.spec("CL-13")
def test_a_backward_result_without_loss_sum_fails_the_custom_loss_call() -> None:
    with pytest.raises(ValueError, match="loss:sum"):
        merge_custom_loss_metrics({"other:sum": 1.0}, 0.5, {"m": 1})


@pytest.mark.spec("CL-13")
@settings(max_examples=examples(40), deadline=None)
@given(
    server=st.dictionaries(
        st.text(min_size=1, max_size=5).map(lambda s: s + ":sum"), st.floats(-1e6, 1e6)
    ),
    user=st.dictionaries(st.text(max_size=5), st.floats(-1e6, 1e6)),
    custom=st.floats(-1e6, 1e6),
    surrogate=st.floats(-1e6, 1e6),
)
def test_custom_metrics_overwrite_only_loss_sum_and_keep_the_surrogate(
    server: dict, user: dict, custom: float, surrogate: float
) -> None:
    merged = merge_custom_loss_metrics(server | {"loss:sum": surrogate}, custom, user)
    assert merged["loss:sum"] == custom
    assert merged["surrogate_loss:sum"] == surrogate
    for key, value in server.items():
        if key not in user and key not in ("loss:sum", "surrogate_loss:sum"):
            assert merged[key] == value
    for key, value in user.items():
        if key not in ("loss:sum", "surrogate_loss:sum"):
            assert merged[key] == value


def _datum(tokens: int) -> Datum:
    return Datum(
        model_input=ModelInput.from_ints([1] * tokens),
        loss_fn_inputs={"target_tokens": [1] * tokens, "weights": [1.0] * tokens},
    )


@pytest.mark.spec("CL-9")
def test_datum_size_estimate_is_four_bytes_per_token_plus_tensor_bytes() -> None:
    assert estimate_datum_bytes(_datum(10)) == 10 * 4 + 10 * 8 + 10 * 4


@pytest.mark.spec("CL-9")
def test_chunks_close_at_the_datum_count_or_byte_limit_and_oversized_datums_stand_alone() -> None:
    data = [_datum(1)] * 5
    assert [len(c) for c in chunk_data(data, max_chunk_len=2)] == [2, 2, 1]
    sizes = [len(c) for c in chunk_data([_datum(1), _datum(100), _datum(1)], 10, 100)]
    assert sizes == [1, 1, 1]
    assert chunk_data([], 2) == []
