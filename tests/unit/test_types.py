"""Unit tests of tinker_ref.types: conversions, validation messages, densification, defaults."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.support.strategies import csr_tensors
from tinker_ref import types

# ----- TensorData: construction and dtype rules ---------------------------------------------------


@pytest.mark.parametrize(
    ("numpy_dtype", "expected"),
    [
        (np.float16, "float32"),
        (np.float32, "float32"),
        (np.float64, "float32"),
        (np.int8, "int64"),
        (np.int32, "int64"),
        (np.int64, "int64"),
    ],
)
def test_from_numpy_maps_float_kinds_to_float32_and_signed_ints_to_int64(
    numpy_dtype: type, expected: str
) -> None:
    td = types.TensorData.from_numpy(np.arange(6).reshape(2, 3).astype(numpy_dtype))
    assert td.dtype == expected
    assert td.shape == [2, 3]
    assert td.values_array.dtype == np.dtype(expected)
    assert td.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("numpy_dtype", [np.bool_, np.uint8, np.uint32])
def test_from_numpy_refuses_bool_and_unsigned_arrays(numpy_dtype: type) -> None:
    with pytest.raises(ValueError, match=f"unsupported numpy dtype {np.dtype(numpy_dtype)}"):
        types.TensorData.from_numpy(np.zeros(3, dtype=numpy_dtype))


def test_float64_values_narrow_to_the_nearest_float32() -> None:
    td = types.TensorData.from_numpy(np.array([0.1, 1e40, -1e-50]))
    assert td.values_array.tolist() == np.array([0.1, np.inf, -0.0], dtype=np.float32).tolist()


def test_missing_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="requires `dtype`"):
        types.TensorData([1.0])


def test_unknown_dtype_is_reported_with_the_value_given() -> None:
    with pytest.raises(ValueError, match="'float32' or 'int64', got 'float64'"):
        types.TensorData([1.0], "float64")  # type: ignore[arg-type]


def test_shape_that_does_not_match_the_data_shows_expected_and_actual_counts() -> None:
    with pytest.raises(ValueError, match=r"shape \[2, 3\] needs 6 elements, got 5"):
        types.TensorData([1.0] * 5, "float32", [2, 3])


def test_negative_shape_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="shape entries must be >= 0"):
        types.TensorData([], "float32", [0, -1])


def test_float_data_for_an_int64_tensor_is_refused_rather_than_truncated() -> None:
    with pytest.raises(ValueError, match="int64 TensorData needs integer data, got a float64"):
        types.TensorData([1.5], "int64")


def test_bool_data_is_refused() -> None:
    with pytest.raises(ValueError, match="needs numeric data, got a bool"):
        types.TensorData(np.array([True]), "float32")


def test_nested_list_without_shape_keeps_its_shape() -> None:
    td = types.TensorData([[1, 2], [3, 4]], "int64")
    assert td.shape == [2, 2]
    assert td.data == [1, 2, 3, 4]


def test_ragged_nested_list_is_refused() -> None:
    with pytest.raises(ValueError, match="rectangular"):
        types.TensorData([[1, 2], [3]], "int64")


def test_tensor_without_shape_is_one_dimensional() -> None:
    td = types.TensorData([1.0, 2.0, 3.0], "float32")
    assert td.shape is None
    assert td.dense_shape == (3,)
    assert td.to_numpy().shape == (3,)


def test_writable_input_is_copied_so_later_writes_do_not_change_the_tensor() -> None:
    source = np.zeros(4, dtype=np.float32)
    td = types.TensorData.from_numpy(source)
    source[0] = 7.0
    assert td.data == [0.0, 0.0, 0.0, 0.0]


def test_read_only_input_of_the_right_dtype_is_shared_not_copied() -> None:
    source = np.frombuffer(np.arange(4, dtype=np.float32).tobytes(), dtype=np.float32)
    td = types.TensorData(source, "float32", [4])
    assert np.shares_memory(td.values_array, source)


def test_values_array_is_read_only_and_to_numpy_is_a_writable_copy() -> None:
    td = types.TensorData.from_numpy(np.arange(4, dtype=np.float32))
    with pytest.raises(ValueError, match="read-only"):
        td.values_array[0] = 1.0
    dense = td.to_numpy()
    dense[0] = 9.0
    assert td.data[0] == 0.0


def test_equality_is_bitwise_so_nan_equals_itself_and_signed_zeros_differ() -> None:
    nan = types.TensorData([float("nan")], "float32")
    assert nan == types.TensorData([float("nan")], "float32")
    assert types.TensorData([0.0], "float32") != types.TensorData([-0.0], "float32")
    assert types.TensorData([1], "int64", [1]) != types.TensorData([1], "int64")


# ----- TensorData: sparse CSR ---------------------------------------------------------------------


def _csr(
    crow: list[int], col: list[int], values: list[float], shape: list[int] | None
) -> types.TensorData:
    return types.TensorData(values, "float32", shape, crow, col)


@pytest.mark.spec("WIRE-10")
@pytest.mark.parametrize(
    ("crow", "col", "values", "shape", "message"),
    [
        ([0, 1], [0], [1.0], [3], "needs a 2-D shape"),
        ([0, 1], [0], [1.0], None, "needs a 2-D shape"),
        ([0, 1], [0], [1.0], [2, 2], "needs nrows \\+ 1 = 3 entries for shape \\[2, 2\\], got 2"),
        ([1, 1, 1], [0], [1.0], [2, 2], "must start at 0, got 1"),
        ([0, 2, 1], [0, 1], [1.0, 2.0], [2, 2], "must be non-decreasing, got 2 then 1"),
        ([0, 1, 1], [0], [1.0, 2.0], [2, 2], "ends at 1 but data has 2 values"),
        ([0, 1, 2], [0], [1.0, 2.0], [2, 2], "sparse_col_indices has 1 entries but data has 2"),
        (
            [0, 1, 2],
            [0, 5],
            [1.0, 2.0],
            [2, 2],
            "must lie in \\[0, 2\\) .* got values in \\[0, 5\\]",
        ),
        ([0, 1, 2], [-1, 0], [1.0, 2.0], [2, 2], "must lie in \\[0, 2\\)"),
        ([0, 2, 2], [1, 0], [1.0, 2.0], [2, 2], "strictly increasing within a row; row 0"),
        ([0, 2, 2], [1, 1], [1.0, 2.0], [2, 2], "strictly increasing within a row; row 0"),
    ],
)
def test_malformed_csr_is_refused_with_a_specific_message(
    crow: list[int], col: list[int], values: list[float], shape: list[int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _csr(crow, col, values, shape)


def test_csr_indices_must_be_given_together() -> None:
    with pytest.raises(ValueError, match="must be given together"):
        types.TensorData([1.0], "float32", [1, 1], sparse_crow_indices=[0, 1])


@pytest.mark.spec("WIRE-10", "LOSS-7")
def test_csr_densifies_with_the_pad_value_in_unlisted_cells_and_empty_rows() -> None:
    td = types.TensorData([5, 6], "int64", [3, 3], [0, 1, 1, 2], [2, 0])
    assert td.tolist() == [[0, 0, 5], [0, 0, 0], [6, 0, 0]]
    assert td.tolist(pad_value=-1) == [[-1, -1, 5], [-1, -1, -1], [6, -1, -1]]
    assert td.to_torch(pad_value=-1).tolist() == [[-1, -1, 5], [-1, -1, -1], [6, -1, -1]]


def test_csr_with_no_values_densifies_to_all_pad() -> None:
    td = types.TensorData([], "float32", [2, 3], [0, 0, 0], [])
    assert td.is_sparse
    assert td.tolist() == [[0.0] * 3, [0.0] * 3]


def test_pad_value_must_be_an_integer() -> None:
    td = types.TensorData([1.0], "float32", [1, 1], [0, 1], [0])
    with pytest.raises(TypeError, match="pad_value must be an integer"):
        td.to_numpy(pad_value=0.5)  # type: ignore[arg-type]


@given(csr_tensors())
def test_csr_densified_by_numpy_matches_torch_sparse_csr(td: types.TensorData) -> None:
    crow, col = td.crow_indices_array, td.col_indices_array
    assert crow is not None and col is not None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        reference = torch.sparse_csr_tensor(
            torch.from_numpy(crow.copy()),
            torch.from_numpy(col.copy()),
            torch.from_numpy(td.values_array.copy()),
            td.dense_shape,
            check_invariants=True,
        ).to_dense()
    assert td.to_numpy().tobytes() == reference.numpy().tobytes()


def test_from_torch_sparse_uses_csr_only_when_it_is_smaller() -> None:
    sparse = torch.zeros(4, 6)
    sparse[1, 2] = 3.0
    sparse[3, 0] = -1.0
    td = types.TensorData.from_torch_sparse(sparse)
    assert td.is_sparse
    assert td.sparse_crow_indices == [0, 0, 1, 1, 2]
    assert td.sparse_col_indices == [2, 0]
    assert td.data == [3.0, -1.0]
    dense = types.TensorData.from_torch_sparse(torch.ones(2, 2))
    assert not dense.is_sparse
    assert types.TensorData.from_torch_sparse(torch.zeros(5)).shape == [5]


@given(
    hnp.arrays(
        np.int64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6), elements=st.integers(-2, 2)
    ),
    st.integers(-2, 2),
)
def test_from_numpy_sparse_round_trips_to_the_same_dense_array(
    array: np.ndarray, pad_value: int
) -> None:
    td = types.TensorData.from_numpy_sparse(array, pad_value)
    assert np.array_equal(td.to_numpy(pad_value), array)
    if td.is_sparse:
        assert not np.any(td.values_array == pad_value)


# ----- TensorData: torch --------------------------------------------------------------------------


def test_from_torch_widens_bfloat16_and_detaches_gradients() -> None:
    tensor = torch.tensor([1.5, -2.0], dtype=torch.bfloat16, requires_grad=True)
    td = types.TensorData.from_torch(tensor)
    assert td.dtype == "float32"
    assert td.data == [1.5, -2.0]


@pytest.mark.parametrize("torch_dtype", [torch.bool, torch.uint8, torch.complex64])
def test_from_torch_refuses_bool_unsigned_and_complex(torch_dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match="unsupported torch dtype"):
        types.TensorData.from_torch(torch.zeros(2, dtype=torch_dtype))


def test_to_torch_returns_a_tensor_that_does_not_alias_the_tensor_data() -> None:
    td = types.TensorData([1, 2], "int64")
    tensor = td.to_torch()
    tensor[0] = 100
    assert tensor.dtype == torch.int64
    assert td.data == [1, 2]


def test_tensor_types_and_codecs_import_without_loading_torch() -> None:
    probe = "import sys, tinker_ref.types, tinker_ref.codec; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# ----- model input --------------------------------------------------------------------------------


def test_model_input_from_ints_round_trips_and_appends() -> None:
    model_input = types.ModelInput.from_ints([1, 2, 3]).append_int(4)
    assert model_input.to_ints() == [1, 2, 3, 4]
    assert model_input.length == 4
    assert len(model_input.chunks) == 2
    assert types.ModelInput.empty().length == 0


def test_image_chunk_length_needs_expected_tokens() -> None:
    with pytest.raises(ValueError, match="expected_tokens must be set"):
        _ = types.ImageChunk(b"png", "png").length
    assert types.ModelInput([types.ImageChunk(b"x", "jpeg", 7)]).length == 7


def test_to_ints_refuses_image_chunks() -> None:
    with pytest.raises(ValueError, match="text chunks only, got a ImageChunk"):
        types.ModelInput([types.ImageChunk(b"x", "png", 1)]).to_ints()


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([2**31], "token id 2147483648 is outside the int32 range"),
        ([-(2**31) - 1], "outside the int32 range"),
        ([True, False], "tokens must be ints, got bool"),
        ([1.0], "tokens must be ints, got float64"),
        ([[1, 2]], "flat list of ints"),
    ],
)
def test_token_ids_that_do_not_fit_the_int32_wire_are_refused(
    tokens: list[object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        types.EncodedTextChunk(tokens)  # type: ignore[arg-type]


def test_image_chunk_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="'png' or 'jpeg', got 'gif'"):
        types.ImageChunk(b"x", "gif")  # type: ignore[arg-type]


# ----- Datum conversions --------------------------------------------------------------------------


def _datum(**inputs: object) -> types.Datum:
    return types.Datum(types.ModelInput.from_ints([1, 2, 3]), inputs)  # type: ignore[arg-type]


@pytest.mark.spec("WIRE-10")
def test_plain_lists_take_their_dtype_from_the_key() -> None:
    datum = _datum(
        target_tokens=[5, 6, 7],
        weights=[1, 0, 1],
        advantages=[0.5, 0.5, 0.5],
        sequence_ratio_mask=[[1, 0], [0, 1], [1, 1]],
    )
    assert datum.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert datum.loss_fn_inputs["weights"].dtype == "float32"
    assert datum.loss_fn_inputs["weights"].data == [1.0, 0.0, 1.0]
    assert datum.loss_fn_inputs["sequence_ratio_mask"].shape == [3, 2]


@pytest.mark.spec("WIRE-10")
def test_a_plain_list_under_an_unknown_key_is_refused_with_the_known_keys() -> None:
    with pytest.raises(ValueError, match=r"'my_mask'.*plain list.*target_tokens"):
        _datum(my_mask=[1.0, 0.0, 1.0])


def test_numpy_inputs_keep_their_kind_whatever_the_key() -> None:
    datum = _datum(target_tokens=np.array([1, 2, 3], dtype=np.int32), mine=np.ones(3))
    assert datum.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert datum.loss_fn_inputs["mine"].dtype == "float32"


@pytest.mark.parametrize("numpy_dtype", [np.bool_, np.uint8])
def test_bool_and_uint8_numpy_inputs_are_refused(numpy_dtype: type) -> None:
    with pytest.raises(ValueError, match="unsupported numpy dtype"):
        _datum(weights=np.ones(3, dtype=numpy_dtype))


@pytest.mark.spec("CL-8")
def test_two_dimensional_torch_weights_become_csr_but_other_keys_stay_dense() -> None:
    weights = torch.zeros(3, 8)
    weights[0, 1] = 1.0
    datum = _datum(weights=weights, other=weights, target_tokens=torch.tensor([1, 2, 3]))
    assert datum.loss_fn_inputs["weights"].is_sparse
    assert not datum.loss_fn_inputs["other"].is_sparse
    assert datum.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert datum.loss_fn_inputs["weights"] != datum.loss_fn_inputs["other"]
    assert datum.loss_fn_inputs["weights"].tolist() == datum.loss_fn_inputs["other"].tolist()


def test_ragged_lists_and_unsupported_values_are_refused() -> None:
    with pytest.raises(ValueError, match="rectangular numeric array"):
        _datum(weights=[[1.0], [1.0, 2.0]])
    with pytest.raises(TypeError, match="unsupported loss_fn_inputs value for 'weights': str"):
        _datum(weights="1,2,3")


def test_provenance_spans_come_in_pairs_and_must_tile_the_input() -> None:
    span = types.PromptProvenanceSpan(sequence_id="s", length=3)
    with pytest.raises(ValueError, match="provenance comes as a pair"):
        types.Datum(types.ModelInput.from_ints([1, 2, 3]), {}, [span], None)
    datum = _datum(target_tokens=[1, 2, 3]).with_provenance([span], [span])
    assert datum.model_input_spans == [span]
    with pytest.raises(ValueError, match="cover 2 positions but the field has 3"):
        datum.with_provenance([types.SampledProvenanceSpan(sequence_id="s", length=2)], [span])


def test_provenance_span_refuses_negative_lengths_and_empty_ids() -> None:
    with pytest.raises(ValueError, match="length must be >= 0"):
        types.SampledProvenanceSpan(sequence_id="s", length=-1)
    with pytest.raises(ValueError, match="non-empty str"):
        types.PromptProvenanceSpan(sequence_id="", length=1)


# ----- parameters and results ---------------------------------------------------------------------


@pytest.mark.spec("OPT-2")
def test_adam_params_have_the_official_defaults_and_send_all_six_keys() -> None:
    assert types.AdamParams().to_json() == {
        "learning_rate": 1e-4,
        "beta1": 0.9,
        "beta2": 0.95,
        "eps": 1e-12,
        "weight_decay": 0.0,
        "grad_clip_norm": 0.0,
    }
    assert types.AdamParams(learning_rate=1).learning_rate == 1.0
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        types.AdamParams(learning_rate=float("nan"))


def test_sampling_params_leave_out_unset_fields_and_keep_stop_lists() -> None:
    assert types.SamplingParams().to_json() == {"temperature": 1.0, "top_k": -1, "top_p": 1.0}
    body = types.SamplingParams(max_tokens=4, seed=5, stop=["\n"], temperature=0.7).to_json()
    assert body == {
        "max_tokens": 4,
        "seed": 5,
        "stop": ["\n"],
        "temperature": 0.7,
        "top_k": -1,
        "top_p": 1.0,
    }
    assert types.SamplingParams(stop=[]).to_json()["stop"] == []
    assert types.SamplingParams(stop=[7, 8]).to_json()["stop"] == [7, 8]
    with pytest.raises(TypeError, match="list of str or a list of token ids"):
        types.SamplingParams(stop=["a", 1])  # type: ignore[list-item]


def test_lora_config_defaults_and_needs_at_least_one_trained_part() -> None:
    assert types.LoraConfig().to_json() == {
        "rank": 32,
        "train_unembed": True,
        "train_mlp": True,
        "train_attn": True,
    }
    assert types.LoraConfig(rank=4, seed=1).to_json()["seed"] == 1
    with pytest.raises(ValueError, match="at least one of"):
        types.LoraConfig(train_mlp=False, train_attn=False, train_unembed=False)
    with pytest.raises(ValueError, match="positive int, got 0"):
        types.LoraConfig(rank=0)


@pytest.mark.spec("SMP-7")
def test_sample_response_lists_use_none_where_prompt_logprobs_are_nan() -> None:
    response = types.SampleResponse([], [None, -1.5, float("nan")])
    assert response.prompt_logprobs == [None, -1.5, None]
    assert np.isnan(response.prompt_logprobs_np[0])  # type: ignore[index]


def test_sampled_sequence_checks_logprob_count_and_offers_lists() -> None:
    sequence = types.SampledSequence("stop", [4, 5], [-0.5, -0.25])
    assert sequence.tokens == [4, 5]
    assert sequence.logprobs == [-0.5, -0.25]
    assert sequence.with_sequence_id("s-1").sequence_id == "s-1"
    with pytest.raises(ValueError, match="2 tokens but 1 logprobs"):
        types.SampledSequence("stop", [4, 5], [-0.5])
    with pytest.raises(ValueError, match="'stop' or 'length'"):
        types.SampledSequence("eos", [1])  # type: ignore[arg-type]


def test_topk_lists_drop_trailing_empty_cells_and_rows_that_start_empty() -> None:
    topk = types.TopkLogprobs(
        np.array([[3, 0], [0, 0], [4, 5]]),
        np.array([[-1.0, types.MASK_LOGPROB], [types.MASK_LOGPROB] * 2, [-2.0, -3.0]]),
    )
    assert topk.to_lists() == [[(3, -1.0)], None, [(4, -2.0), (5, -3.0)]]


def test_forward_backward_output_refuses_non_tensor_outputs() -> None:
    with pytest.raises(TypeError, match=r"loss_fn_outputs\[0\] must map str to TensorData"):
        types.ForwardBackwardOutput("ArrayRecord", [{"logprobs": [1.0]}])  # type: ignore[dict-item]
    output = types.ForwardBackwardOutput("ArrayRecord", [], {"loss:sum": 2})
    assert output.metrics == {"loss:sum": 2.0}
