"""Unit tests of tinker_ref.codec: canonical bytes, round trips, and every CodecError."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import strategies as gen
from tinker_ref import codec, types
from tinker_ref._proto.tinker_ref.wire.v1 import wire_pb2 as pb

# ----- helpers -----------------------------------------------------------------------------------


def _densified(td: types.TensorData) -> types.TensorData:
    """What a per-datum output decodes to: dense, with an explicit shape whose leading dimension
    is recomputed from the element count (so `[N, 0]` comes back as `[0, 0]`)."""
    leading, *trailing = td.dense_shape
    if int(np.prod(trailing)) == 0:
        leading = 0
    return types.TensorData(td.to_numpy().reshape(-1), td.dtype, [leading, *trailing])


def _same_nan_insensitive(left: types.TensorData, right: types.TensorData) -> bool:
    """Equality up to NaN payloads (a JSON number has no payload bits)."""
    return (
        left.dtype == right.dtype
        and left.shape == right.shape
        and left.sparse_crow_indices == right.sparse_crow_indices
        and left.sparse_col_indices == right.sparse_col_indices
        and np.array_equal(left.values_array, right.values_array, equal_nan=True)
    )


def _expect_codec_error(field: str, message: str, call: Callable[[], object]) -> None:
    with pytest.raises(codec.CodecError) as caught:
        call()
    assert caught.value.field == field
    assert message in caught.value.message, caught.value.message
    assert isinstance(caught.value, ValueError)


def _tensor_message(**fields: Any) -> pb.Tensor:
    message = pb.Tensor(dtype=fields.pop("dtype", pb.DTYPE_FLOAT32))
    message.shape.extend(fields.pop("shape", []))
    if "dense" in fields:
        message.dense = fields.pop("dense")
    for name, value in fields.items():
        setattr(message.sparse_csr, name, value)
    return message


def _request_with_tensor(tensor: pb.Tensor) -> bytes:
    request = pb.ForwardBackwardRequest(model_id="m", seq_id=1, loss_fn="cross_entropy")
    request.data.add().loss_fn_inputs["weights"].CopyFrom(tensor)
    return request.SerializeToString()


def _i64(*values: int) -> bytes:
    return np.array(values, dtype="<i8").tobytes()


def _f32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


# ----- canonical bytes and round trips ------------------------------------------------------------


@pytest.mark.spec("WIRE-8")
@given(
    st.text(max_size=8),
    st.integers(-(2**31), 2**31 - 1),
    st.lists(gen.datums(), max_size=3),
    st.text(max_size=12),
    gen.loss_fn_configs,
    st.booleans(),
)
def test_request_bytes_are_canonical_and_decode_to_the_same_request(
    model_id: str,
    seq_id: int,
    data: list[types.Datum],
    loss_fn: str,
    config: dict[str, Any] | None,
    forward_only: bool,
) -> None:
    encoded = codec.encode_forward_backward_request(
        model_id, seq_id, data, loss_fn, config, forward_only
    )
    assert pb.ForwardBackwardRequest.FromString(encoded).SerializeToString(deterministic=True) == (
        encoded
    )
    decoded = codec.decode_forward_backward_request(encoded)
    assert (decoded.model_id, decoded.seq_id, decoded.loss_fn) == (model_id, seq_id, loss_fn)
    assert decoded.forward_only is forward_only
    assert decoded.data == data
    expected_config = {
        key: value if isinstance(value, str) else float(value)
        for key, value in (config or {}).items()
    }
    assert decoded.loss_fn_config == expected_config


@pytest.mark.spec("WIRE-10")
@given(gen.tensors())
def test_tensor_round_trips_bit_for_bit(td: types.TensorData) -> None:
    encoded = codec.encode_tensor(td)
    assert pb.Tensor.FromString(encoded).SerializeToString(deterministic=True) == encoded
    assert codec.decode_tensor(encoded) == td


@pytest.mark.spec("WIRE-11")
@given(gen.forward_backward_outputs())
def test_output_bytes_are_canonical_and_ragged_outputs_decode_per_datum(
    output: types.ForwardBackwardOutput,
) -> None:
    encoded = codec.encode_forward_backward_output(output)
    message = pb.ForwardBackwardOutput.FromString(encoded)
    assert message.SerializeToString(deterministic=True) == encoded
    assert sum(record.num_datums for record in message.loss_fn_outputs) == len(
        output.loss_fn_outputs
    )
    decoded = codec.decode_forward_backward_output(encoded)
    expected_outputs = [
        {name: _densified(td) for name, td in datum.items()} for datum in output.loss_fn_outputs
    ]
    assert decoded.loss_fn_outputs == expected_outputs
    # Like the SDK: the text after the last ':' names the class; no outputs -> kept as sent.
    expected_type = output.loss_fn_output_type.rsplit(":", 1)[-1]
    if not output.loss_fn_outputs:
        expected_type = output.loss_fn_output_type or "ArrayRecord"
    assert decoded.loss_fn_output_type == expected_type
    assert json.dumps(decoded.metrics, sort_keys=True) == json.dumps(output.metrics, sort_keys=True)


@pytest.mark.spec("WIRE-11")
def test_datums_with_equal_trailing_shapes_share_one_record_and_others_split() -> None:
    def logprobs(shape: list[int], dtype: str = "float32") -> dict[str, types.TensorData]:
        size = int(np.prod(shape))
        return {"logprobs": types.TensorData(np.arange(size), dtype, shape)}  # type: ignore[arg-type]

    output = types.ForwardBackwardOutput(
        "ArrayRecord",
        [logprobs([5]), logprobs([3]), logprobs([2, 4]), logprobs([1, 4]), logprobs([2], "int64")],
    )
    message = pb.ForwardBackwardOutput.FromString(codec.encode_forward_backward_output(output))
    records = message.loss_fn_outputs
    assert [record.num_datums for record in records] == [2, 2, 1]
    assert list(records[1].fields["logprobs"].trailing_shape) == [4]
    assert np.frombuffer(records[0].fields["logprobs"].offsets, "<i8").tolist() == [0, 20, 32]
    assert records[2].fields["logprobs"].dtype == pb.DTYPE_INT64


@pytest.mark.spec("WIRE-11")
def test_output_encoder_refuses_datums_with_different_field_names_or_scalars() -> None:
    one = types.TensorData([1.0], "float32", [1])
    with pytest.raises(ValueError, match=r"loss_fn_outputs\[1\] has fields \['b'\]"):
        codec.encode_forward_backward_output(
            types.ForwardBackwardOutput("ArrayRecord", [{"a": one}, {"b": one}])
        )
    scalar = types.TensorData([1.0], "float32", [])
    with pytest.raises(ValueError, match="0-D"):
        codec.encode_forward_backward_output(
            types.ForwardBackwardOutput("ArrayRecord", [{"a": scalar}])
        )


@pytest.mark.spec("WIRE-11")
def test_output_with_no_datums_decodes_its_type_as_array_record() -> None:
    empty = codec.encode_forward_backward_output(types.ForwardBackwardOutput("", [], {"a:sum": 1}))
    decoded = codec.decode_forward_backward_output(empty)
    assert decoded.loss_fn_output_type == "ArrayRecord"
    assert decoded.loss_fn_outputs == []
    assert decoded.metrics == {"a:sum": 1.0}


@pytest.mark.spec("WIRE-11")
def test_datums_with_no_fields_still_count_through_num_datums() -> None:
    output = types.ForwardBackwardOutput("ArrayRecord", [{}, {}, {}])
    decoded = codec.decode_forward_backward_output(codec.encode_forward_backward_output(output))
    assert decoded.loss_fn_outputs == [{}, {}, {}]


@pytest.mark.spec("WIRE-11")
def test_record_without_num_datums_counts_datums_from_offsets() -> None:
    message = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    field = message.loss_fn_outputs.add().fields["logprobs"]
    field.data, field.offsets, field.dtype = _f32(1, 2, 3), _i64(0, 4, 12), pb.DTYPE_FLOAT32
    decoded = codec.decode_forward_backward_output(message.SerializeToString())
    assert [datum["logprobs"].data for datum in decoded.loss_fn_outputs] == [[1.0], [2.0, 3.0]]


@pytest.mark.spec("WIRE-11")
def test_int32_and_bfloat16_outputs_widen_to_int64_and_float32() -> None:
    message = pb.ForwardBackwardOutput()
    record = message.loss_fn_outputs.add(num_datums=1)
    ids = record.fields["ids"]
    ids.data, ids.offsets, ids.dtype = np.array([7, -8], "<i4").tobytes(), _i64(0, 8), 3
    bf16 = record.fields["lp"]
    bf16_bits = (np.array([1.5, -0.25], "<f4").view("<u4") >> 16).astype("<u2")
    bf16.data, bf16.offsets, bf16.dtype = bf16_bits.tobytes(), _i64(0, 4), 4
    datum = codec.decode_forward_backward_output(message.SerializeToString()).loss_fn_outputs[0]
    assert (datum["ids"].dtype, datum["ids"].data) == ("int64", [7, -8])
    assert (datum["lp"].dtype, datum["lp"].data) == ("float32", [1.5, -0.25])


@pytest.mark.spec("WIRE-12")
@given(gen.sample_responses())
def test_sample_response_bytes_are_canonical_and_round_trip(
    response: types.SampleResponse,
) -> None:
    encoded = codec.encode_sample_response(response)
    assert pb.SampleResponse.FromString(encoded).SerializeToString(deterministic=True) == encoded
    decoded = codec.decode_sample_response(encoded)
    # The wire cannot tell "no logprobs" from "empty logprobs", nor an empty top-k from none.
    assert decoded == _wire_normalised(response)


def _wire_normalised(response: types.SampleResponse) -> types.SampleResponse:
    def topk(value: types.TopkLogprobs | None) -> types.TopkLogprobs | None:
        return None if value is None or 0 in value.token_ids.shape else value

    sequences = [
        types.SampledSequence(
            s.stop_reason,
            s.tokens_np,
            None if s.logprobs_np is None or s.logprobs_np.size == 0 else s.logprobs_np,
            topk(s.topk_logprobs_np),
        )
        for s in response.sequences
    ]
    prompt = response.prompt_logprobs_np
    return types.SampleResponse(
        sequences,
        None if prompt is None or prompt.size == 0 else prompt,
        topk(response.topk_prompt_logprobs_np),
        response.target_prompt_logprobs,
        response.prompt_cache_hit_tokens,
        response.prompt_alt_tokens,
    )


@pytest.mark.spec("WIRE-12")
def test_prompt_alt_tokens_travel_as_int32_and_decode_as_int64() -> None:
    tokens = types.TensorData([[1, 2], [3, 4]], "int64")
    logprobs = types.TensorData(np.zeros((2, 2)), "float32", [2, 2])
    response = types.SampleResponse([], prompt_alt_tokens=types.PromptAltTokens(tokens, logprobs))
    encoded = codec.encode_sample_response(response)
    assert pb.SampleResponse.FromString(encoded).prompt_alt_tokens.tokens.dtype == pb.DTYPE_INT32
    assert codec.decode_sample_response(encoded).prompt_alt_tokens == response.prompt_alt_tokens


# ----- loss config --------------------------------------------------------------------------------


@pytest.mark.spec("WIRE-9")
def test_numbers_are_dual_written_and_strings_go_only_to_v2() -> None:
    encoded = codec.encode_forward_backward_request(
        "m", 1, [], "ppo", {"clip_low_threshold": 0.8, "steps": 3, "mode": "token"}
    )
    message = pb.ForwardBackwardRequest.FromString(encoded)
    assert dict(message.loss_fn_config) == {"clip_low_threshold": 0.8, "steps": 3.0}
    assert message.loss_fn_config_v2["steps"].number == 3.0
    assert message.loss_fn_config_v2["mode"].text == "token"
    assert message.loss_fn_config_v2["mode"].WhichOneof("value") == "text"


@pytest.mark.spec("WIRE-9")
def test_decoder_prefers_v2_and_falls_back_to_the_legacy_map() -> None:
    message = pb.ForwardBackwardRequest(model_id="m", seq_id=1, loss_fn="ppo")
    message.loss_fn_config["beta"] = 1.0
    message.loss_fn_config_v2["beta"].number = 2.0
    message.loss_fn_config["legacy_only"] = 3.0
    decoded = codec.decode_forward_backward_request(message.SerializeToString())
    assert decoded.loss_fn_config == {"beta": 2.0, "legacy_only": 3.0}


@pytest.mark.spec("WIRE-9")
def test_nan_config_value_survives_the_round_trip() -> None:
    encoded = codec.encode_forward_backward_request("m", 1, [], "ppo", {"x": math.nan})
    assert math.isnan(codec.decode_forward_backward_request(encoded).loss_fn_config["x"])  # type: ignore[arg-type]


@pytest.mark.spec("WIRE-9")
@pytest.mark.parametrize("value", [True, None, [1.0]])
def test_config_values_other_than_numbers_and_strings_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="must be a float or a str"):
        codec.encode_forward_backward_request("m", 1, [], "ppo", {"x": value})  # type: ignore[dict-item]


@pytest.mark.spec("WIRE-8")
def test_seq_id_outside_int32_is_refused() -> None:
    with pytest.raises(ValueError, match="fit in int32"):
        codec.encode_forward_backward_request("m", 2**31, [], "cross_entropy")


# ----- CodecError: tensors and datums -------------------------------------------------------------

_W = "data[0].loss_fn_inputs['weights']"


@pytest.mark.spec("WIRE-10")
@pytest.mark.parametrize(
    ("tensor", "field", "message"),
    [
        (_tensor_message(dtype=0, dense=b""), f"{_W}.dtype", "unsupported dtype 0"),
        (_tensor_message(dtype=9, dense=b""), f"{_W}.dtype", "unsupported dtype 9"),
        (_tensor_message(dense=b"\0" * 6), f"{_W}.dense", "6 bytes is not a whole number"),
        (
            _tensor_message(dtype=pb.DTYPE_INT64, dense=b"\0" * 12),
            f"{_W}.dense",
            "not a whole number of 8-byte",
        ),
        (_tensor_message(dense=_f32(1, 2, 3), shape=[2, 2]), f"{_W}.dense", "needs 4"),
        (_tensor_message(dense=b"", shape=[0, -1]), f"{_W}.shape", "must be >= 0"),
        (
            _tensor_message(
                values=_f32(1), crow_indices=_i64(0, 1), col_indices=_i64(0), shape=[1]
            ),
            f"{_W}.shape",
            "needs a 2-D shape",
        ),
        (
            _tensor_message(
                values=_f32(1), crow_indices=b"\0" * 9, col_indices=_i64(0), shape=[1, 1]
            ),
            f"{_W}.sparse_csr.crow_indices",
            "not a whole number",
        ),
        (
            _tensor_message(
                values=_f32(1), crow_indices=_i64(0, 1), col_indices=_i64(3), shape=[1, 2]
            ),
            f"{_W}.sparse_csr",
            "must lie in [0, 2)",
        ),
        (
            _tensor_message(
                values=_f32(1), crow_indices=_i64(0, 1, 1), col_indices=_i64(0), shape=[1, 2]
            ),
            f"{_W}.sparse_csr",
            "needs nrows + 1 = 2 entries",
        ),
        (
            _tensor_message(
                values=_f32(1, 2), crow_indices=_i64(0, 2), col_indices=_i64(1, 0), shape=[1, 2]
            ),
            f"{_W}.sparse_csr",
            "strictly increasing within a row",
        ),
        (
            _tensor_message(
                values=_f32(1), crow_indices=_i64(0, 2), col_indices=_i64(0), shape=[1, 2]
            ),
            f"{_W}.sparse_csr",
            "ends at 2 but data has 1 values",
        ),
    ],
)
def test_malformed_tensors_raise_codec_errors_naming_the_field(
    tensor: pb.Tensor, field: str, message: str
) -> None:
    payload = _request_with_tensor(tensor)
    _expect_codec_error(field, message, lambda: codec.decode_forward_backward_request(payload))


def _request_with_chunk(build: Callable[[pb.Chunk], object]) -> bytes:
    request = pb.ForwardBackwardRequest(model_id="m", seq_id=1)
    build(request.data.add().model_input.add())
    return request.SerializeToString()


@pytest.mark.spec("WIRE-8")
@pytest.mark.parametrize(
    ("build", "field", "message"),
    [
        (lambda c: None, "data[0].model_input[0]", "chunk is empty"),
        (
            lambda c: setattr(c.encoded_text, "tokens", b"\1\0\0"),
            "data[0].model_input[0].encoded_text.tokens",
            "3 bytes is not a whole number of 4-byte",
        ),
        (
            lambda c: setattr(c.image, "format", "gif"),
            "data[0].model_input[0].image.format",
            "expected 'png' or 'jpeg', got 'gif'",
        ),
        (
            lambda c: (setattr(c.image, "format", "png"), setattr(c.image, "expected_tokens", -2)),
            "data[0].model_input[0].image.expected_tokens",
            "must be >= 0",
        ),
        (
            lambda c: (
                setattr(c.image, "format", "png"),
                c.image.override_dimensions.SetInParent(),
            ),
            "data[0].model_input[0].image.override_dimensions",
            "not supported",
        ),
        (
            lambda c: setattr(c.dmel, "dmel", b"x"),
            "data[0].model_input[0].dmel",
            "not supported",
        ),
    ],
)
def test_malformed_chunks_raise_codec_errors_naming_the_field(
    build: Callable[[pb.Chunk], object], field: str, message: str
) -> None:
    payload = _request_with_chunk(build)
    _expect_codec_error(field, message, lambda: codec.decode_forward_backward_request(payload))


def test_unpaired_or_empty_provenance_spans_raise_codec_errors() -> None:
    request = pb.ForwardBackwardRequest(model_id="m", seq_id=1)
    datum = request.data.add()
    datum.model_input_spans.add().prompt_tokens.sequence_id = "s"
    payload = request.SerializeToString()
    _expect_codec_error(
        "data[0].model_input_spans",
        "provenance comes as a pair",
        lambda: codec.decode_forward_backward_request(payload),
    )
    datum.loss_fn_input_spans.add()
    payload = request.SerializeToString()
    _expect_codec_error(
        "data[0].loss_fn_input_spans[0]",
        "span is empty",
        lambda: codec.decode_forward_backward_request(payload),
    )
    datum.loss_fn_input_spans[0].sampled_tokens.length = -1
    datum.loss_fn_input_spans[0].sampled_tokens.sequence_id = "s"
    payload = request.SerializeToString()
    _expect_codec_error(
        "data[0].loss_fn_input_spans[0].sampled_tokens",
        "length must be >= 0",
        lambda: codec.decode_forward_backward_request(payload),
    )


def test_config_entry_with_neither_number_nor_text_raises_a_codec_error() -> None:
    message = pb.ForwardBackwardRequest(model_id="m", seq_id=1)
    message.loss_fn_config_v2["beta"].SetInParent()
    payload = message.SerializeToString()
    _expect_codec_error(
        "loss_fn_config_v2['beta']",
        "neither number nor text",
        lambda: codec.decode_forward_backward_request(payload),
    )


@pytest.mark.parametrize(
    "decoder",
    [
        codec.decode_forward_backward_request,
        codec.decode_forward_backward_output,
        codec.decode_sample_response,
        codec.decode_tensor,
    ],
)
def test_bytes_that_are_not_protobuf_raise_codec_errors(decoder: Callable[[bytes], object]) -> None:
    with pytest.raises(codec.CodecError, match="not a valid protobuf message"):
        decoder(b"\xff\xff\xff")
    with pytest.raises(codec.CodecError, match="expected bytes, got str"):
        decoder("text")  # type: ignore[arg-type]


# ----- CodecError: forward/backward output --------------------------------------------------------


def _output(*fields: dict[str, Any], num_datums: int = 2) -> bytes:
    message = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    for spec in fields:
        record = message.loss_fn_outputs.add(num_datums=spec.pop("num_datums", num_datums))
        name = spec.pop("name", "logprobs")
        tensor = record.fields[name]
        tensor.dtype = spec.pop("dtype", pb.DTYPE_FLOAT32)
        tensor.data = spec.pop("data", _f32(1, 2, 3))
        tensor.offsets = spec.pop("offsets", _i64(0, 4, 12))
        tensor.trailing_shape.extend(spec.pop("trailing_shape", []))
    return message.SerializeToString()


_LP = "loss_fn_outputs[0].fields['logprobs']"


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (_output({"offsets": b"\0" * 12}), f"{_LP}.offsets", "12 bytes is not a whole number"),
        (_output({"offsets": _i64(0, 12)}), f"{_LP}.offsets", "has 2 entries but the record has 2"),
        (_output({"offsets": _i64(0, 8, 4)}), f"{_LP}.offsets", "non-decreasing"),
        (_output({"offsets": _i64(0, 4, 16)}), f"{_LP}.offsets", "within the 12-byte data"),
        (_output({"offsets": _i64(-4, 4, 12)}), f"{_LP}.offsets", "non-decreasing"),
        (_output({"offsets": _i64(0, 2, 12)}), f"{_LP}.offsets", "multiples of the 4-byte item"),
        (_output({"dtype": 0}), f"{_LP}.dtype", "unsupported dtype 0"),
        (_output({"data": b"\0" * 13}), f"{_LP}.data", "13 bytes is not a whole number"),
        (
            _output({"trailing_shape": [2]}),
            f"{_LP}.data",
            "datum 0 has 1 values, not a multiple of the trailing shape [2]",
        ),
        (_output({"trailing_shape": [-1]}), f"{_LP}.trailing_shape", "must be >= 0"),
        (
            _output({"trailing_shape": [0]}),
            f"{_LP}.data",
            "datum 0 has 1 values, not a multiple of the trailing shape [0]",
        ),
        (_output({"num_datums": -1}), "loss_fn_outputs[0].num_datums", "got -1"),
        (
            _output({"num_datums": 2**40}),
            "loss_fn_outputs[0].num_datums",
            "must be in [0, 65536]",
        ),
        (
            _output({}, {"name": "other"}),
            "loss_fn_outputs[1].fields",
            "has fields ['other'] but loss_fn_outputs[0] has ['logprobs']",
        ),
    ],
)
def test_malformed_outputs_raise_codec_errors_naming_the_field(
    payload: bytes, field: str, message: str
) -> None:
    _expect_codec_error(field, message, lambda: codec.decode_forward_backward_output(payload))


# ----- CodecError: sample response ----------------------------------------------------------------


def _sample(build: Callable[[pb.SampleResponse], object]) -> bytes:
    message = pb.SampleResponse()
    build(message)
    return message.SerializeToString()


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        (
            _sample(lambda m: m.sequences.add(stop_reason=5)),
            "sequences[0].stop_reason",
            "unknown value 5",
        ),
        (
            _sample(lambda m: m.sequences.add(tokens=b"\0" * 5)),
            "sequences[0].tokens",
            "5 bytes is not a whole number of int32 ids",
        ),
        (
            _sample(lambda m: m.sequences.add(tokens=b"\0" * 8, logprobs=_f32(1))),
            "sequences[0].logprobs",
            "has 1 values for 2 tokens",
        ),
        (
            _sample(lambda m: m.sequences.add(logprobs=b"\0" * 3)),
            "sequences[0].logprobs",
            "3 bytes is not a whole number",
        ),
        (
            _sample(
                lambda m: m.sequences.add().topk_sampled_logprobs.MergeFrom(
                    pb.TopkLogprobs(token_ids=b"\0" * 4, logprobs=b"\0" * 8, k=2, length=1)
                )
            ),
            "sequences[0].topk_sampled_logprobs.token_ids",
            "has 4 bytes but length 1 x k 2 needs 8",
        ),
        (
            _sample(lambda m: setattr(m, "prompt_logprobs", b"\0" * 2)),
            "prompt_logprobs",
            "2 bytes is not a whole number",
        ),
        (
            _sample(lambda m: m.target_prompt_logprobs.MergeFrom(_tensor_message(dtype=7))),
            "target_prompt_logprobs.dtype",
            "unsupported dtype 7",
        ),
        (
            _sample(lambda m: m.prompt_alt_tokens.tokens.MergeFrom(_tensor_message(dense=b"\0"))),
            "prompt_alt_tokens.tokens.dense",
            "1 bytes is not a whole number",
        ),
    ],
)
def test_malformed_sample_responses_raise_codec_errors_naming_the_field(
    payload: bytes, field: str, message: str
) -> None:
    _expect_codec_error(field, message, lambda: codec.decode_sample_response(payload))


# ----- JSON codec ---------------------------------------------------------------------------------


@pytest.mark.spec("WIRE-10")
@given(gen.tensors())
def test_tensor_json_round_trips_through_json_text(td: types.TensorData) -> None:
    text = json.dumps(codec.tensor_data_to_json(td))
    assert _same_nan_insensitive(codec.tensor_data_from_json(json.loads(text)), td)


@given(gen.datums(with_spans=False))
def test_datum_json_round_trips_through_json_text(datum: types.Datum) -> None:
    decoded = codec.datum_from_json(json.loads(json.dumps(codec.datum_to_json(datum))))
    assert decoded.model_input == datum.model_input
    assert decoded.loss_fn_inputs.keys() == datum.loss_fn_inputs.keys()
    for name, td in datum.loss_fn_inputs.items():
        assert _same_nan_insensitive(decoded.loss_fn_inputs[name], td)


@pytest.mark.spec("WIRE-7")
@given(gen.forward_backward_outputs())
def test_forward_backward_output_json_round_trips(output: types.ForwardBackwardOutput) -> None:
    body = json.loads(json.dumps(codec.forward_backward_output_to_json(output)))
    assert list(body) == ["loss_fn_output_type", "loss_fn_outputs", "metrics"]
    decoded = codec.forward_backward_output_from_json(body)
    assert decoded.loss_fn_output_type == output.loss_fn_output_type
    for got, want in zip(decoded.loss_fn_outputs, output.loss_fn_outputs, strict=True):
        assert got.keys() == want.keys()
        assert all(_same_nan_insensitive(got[name], want[name]) for name in want)


def test_json_shapes_follow_the_sdk_field_order_and_leave_out_none() -> None:
    td = types.TensorData([1.0, 2.0], "float32")
    assert codec.tensor_data_to_json(td) == {"data": [1.0, 2.0], "dtype": "float32"}
    csr = types.TensorData([3], "int64", [2, 2], [0, 0, 1], [1])
    assert list(codec.tensor_data_to_json(csr)) == [
        "data",
        "dtype",
        "shape",
        "sparse_crow_indices",
        "sparse_col_indices",
    ]
    image = types.ImageChunk(b"\x89PNG", "png", 3)
    assert codec.chunk_to_json(image) == {
        "data": "iVBORw==",
        "format": "png",
        "expected_tokens": 3,
        "type": "image",
    }
    datum = types.Datum(types.ModelInput.from_ints([1]), {"weights": [1.0]})
    assert list(codec.datum_to_json(datum)) == ["loss_fn_inputs", "model_input"]


def test_json_null_in_float32_data_reads_as_nan_and_integral_floats_fit_int64() -> None:
    td = codec.tensor_data_from_json({"data": [1.0, None], "dtype": "float32"})
    assert td.data[0] == 1.0 and math.isnan(td.data[1])
    assert codec.tensor_data_from_json({"data": [2.0, -3.0], "dtype": "int64"}).data == [2, -3]


def test_json_datum_accepts_plain_lists_under_known_keys() -> None:
    datum = codec.datum_from_json(
        {
            "loss_fn_inputs": {"target_tokens": [1, 2]},
            "model_input": {"chunks": [{"tokens": [1, 2]}]},
        }
    )
    assert datum.loss_fn_inputs["target_tokens"].dtype == "int64"


def test_datum_with_provenance_has_no_json_form() -> None:
    span = types.PromptProvenanceSpan(sequence_id="s", length=1)
    datum = types.Datum(types.ModelInput.from_ints([1]), {}, [span], [span])
    with pytest.raises(ValueError, match="no JSON form"):
        codec.datum_to_json(datum)


@pytest.mark.spec("WIRE-10")
@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ([1], "t", "expected a JSON object, got list"),
        ({"data": [], "dtype": "float32", "extra": 1}, "t", "unknown keys ['extra']"),
        ({"dtype": "float32"}, "t.data", "is required"),
        ({"data": []}, "t.dtype", "is required"),
        ({"data": [], "dtype": "bfloat16"}, "t.dtype", "got 'bfloat16'"),
        ({"data": "1,2", "dtype": "float32"}, "t.data", "expected a list of numbers, got str"),
        ({"data": [[1], [2]], "dtype": "float32"}, "t.data", "got nested lists"),
        ({"data": [[1], [2, 3]], "dtype": "float32"}, "t.data", "flat list of numbers"),
        ({"data": [1, "2"], "dtype": "float32"}, "t.data", "expected numbers, got str '2'"),
        ({"data": [True], "dtype": "float32"}, "t.data", "expected numbers, got bool True"),
        ({"data": [1, None], "dtype": "int64"}, "t.data", "expected numbers, got NoneType"),
        ({"data": [1.5], "dtype": "int64"}, "t.data", "must be integers, got np.float64(1.5)"),
        ({"data": [2**63], "dtype": "int64"}, "t.data", "int64 range"),
        ({"data": [9.3e18], "dtype": "int64"}, "t.data", "int64 range"),
        ({"data": [], "dtype": "float32", "shape": [1.0]}, "t.shape", "list of integers"),
        ({"data": [], "dtype": "float32", "shape": [0, -1]}, "t", "shape entries must be >= 0"),
        ({"data": [1.0], "dtype": "float32", "shape": [2]}, "t", "needs 2 elements, got 1"),
        (
            {"data": [1.0], "dtype": "float32", "shape": [1, 1], "sparse_crow_indices": [0, 1]},
            "t",
            "must be given together",
        ),
        (
            {
                "data": [1.0],
                "dtype": "float32",
                "shape": [1, 1],
                "sparse_crow_indices": [0, 1],
                "sparse_col_indices": [4],
            },
            "t",
            "must lie in [0, 1)",
        ),
    ],
)
def test_malformed_json_tensors_raise_codec_errors_naming_the_field(
    value: object, field: str, message: str
) -> None:
    _expect_codec_error(field, message, lambda: codec.tensor_data_from_json(value, "t"))


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"chunks": {}}, "mi.chunks", "expected a list, got dict"),
        ({}, "mi.chunks", "is required"),
        ({"chunks": [{"type": "video"}]}, "mi.chunks[0].type", "got 'video'"),
        ({"chunks": [{"type": "dmel", "dmel": ""}]}, "mi.chunks[0].type", "not supported"),
        (
            {"chunks": [{"type": "image_asset_pointer", "location": "x", "format": "png"}]},
            "mi.chunks[0].type",
            "not supported",
        ),
        ({"chunks": [{"tokens": [1.5]}]}, "mi.chunks[0].tokens", "expected token ids"),
        ({"chunks": [{"tokens": [2**31]}]}, "mi.chunks[0].tokens", "outside the int32 range"),
        ({"chunks": [{"tokens": [], "x": 1}]}, "mi.chunks[0]", "unknown keys ['x']"),
        (
            {"chunks": [{"type": "image", "data": "!!", "format": "png"}]},
            "mi.chunks[0].data",
            "not valid base64",
        ),
        (
            {"chunks": [{"type": "image", "data": "", "format": "bmp"}]},
            "mi.chunks[0]",
            "'png' or 'jpeg', got 'bmp'",
        ),
    ],
)
def test_malformed_json_model_inputs_raise_codec_errors_naming_the_field(
    value: object, field: str, message: str
) -> None:
    _expect_codec_error(field, message, lambda: codec.model_input_from_json(value, "mi"))


def test_malformed_json_datums_and_outputs_raise_codec_errors() -> None:
    _expect_codec_error(
        "d.model_input", "is required", lambda: codec.datum_from_json({"loss_fn_inputs": {}}, "d")
    )
    _expect_codec_error(
        "d.loss_fn_inputs['mask']",
        "plain list",
        lambda: codec.datum_from_json(
            {"loss_fn_inputs": {"mask": [1]}, "model_input": {"chunks": []}}, "d"
        ),
    )
    _expect_codec_error(
        "r.metrics",
        "is required",
        lambda: codec.forward_backward_output_from_json(
            {"loss_fn_output_type": "ArrayRecord", "loss_fn_outputs": []}, "r"
        ),
    )
    _expect_codec_error(
        "r.metrics['loss:sum']",
        "expected a number",
        lambda: codec.forward_backward_output_from_json(
            {"loss_fn_output_type": "A", "loss_fn_outputs": [], "metrics": {"loss:sum": "1"}}, "r"
        ),
    )
    _expect_codec_error(
        "r.loss_fn_outputs[0]['logprobs'].dtype",
        "got 'f16'",
        lambda: codec.forward_backward_output_from_json(
            {
                "loss_fn_output_type": "A",
                "loss_fn_outputs": [{"logprobs": {"data": [], "dtype": "f16"}}],
                "metrics": {},
            },
            "r",
        ),
    )


# ----- fuzzing: decoders raise CodecError and nothing else ---------------------------------------

_raw_bytes = st.binary(max_size=24)
_wild_ints = st.one_of(st.integers(-3, 6), st.integers(-(2**63), 2**63 - 1))


@st.composite
def _wild_tensors(draw: st.DrawFn) -> pb.Tensor:
    message = pb.Tensor(dtype=draw(st.integers(-2, 6)))
    message.shape.extend(draw(st.lists(_wild_ints, max_size=3)))
    if draw(st.booleans()):
        message.dense = draw(_raw_bytes)
    else:
        message.sparse_csr.values = draw(_raw_bytes)
        message.sparse_csr.crow_indices = _i64(*draw(st.lists(_wild_ints, max_size=4)))
        message.sparse_csr.col_indices = _i64(*draw(st.lists(_wild_ints, max_size=4)))
    return message


@st.composite
def _wild_outputs(draw: st.DrawFn) -> bytes:
    message = pb.ForwardBackwardOutput(loss_fn_output_type=draw(st.text(max_size=4)))
    for _ in range(draw(st.integers(0, 3))):
        record = message.loss_fn_outputs.add(num_datums=draw(_wild_ints))
        for name in draw(st.lists(st.sampled_from(["a", "b"]), unique=True)):
            tensor = record.fields[name]
            tensor.dtype = draw(st.integers(-2, 6))
            tensor.data = draw(_raw_bytes)
            tensor.offsets = _i64(*draw(st.lists(_wild_ints, max_size=5)))
            tensor.trailing_shape.extend(draw(st.lists(_wild_ints, max_size=2)))
    return message.SerializeToString()


@st.composite
def _wild_samples(draw: st.DrawFn) -> bytes:
    message = pb.SampleResponse(prompt_cache_hit_tokens=draw(st.integers(-(2**31), 2**31 - 1)))
    for _ in range(draw(st.integers(0, 2))):
        sequence = message.sequences.add(stop_reason=draw(st.integers(0, 3)))
        sequence.tokens = draw(_raw_bytes)
        if draw(st.booleans()):
            sequence.logprobs = draw(_raw_bytes)
        if draw(st.booleans()):
            sequence.topk_sampled_logprobs.MergeFrom(
                pb.TopkLogprobs(
                    token_ids=draw(_raw_bytes),
                    logprobs=draw(_raw_bytes),
                    k=draw(st.integers(0, 4)),
                    length=draw(st.integers(0, 2**32 - 1)),
                )
            )
    if draw(st.booleans()):
        message.prompt_logprobs = draw(_raw_bytes)
    if draw(st.booleans()):
        message.target_prompt_logprobs.MergeFrom(draw(_wild_tensors()))
    if draw(st.booleans()):
        message.prompt_alt_tokens.tokens.MergeFrom(draw(_wild_tensors()))
        message.prompt_alt_tokens.logprobs.MergeFrom(draw(_wild_tensors()))
    return message.SerializeToString()


def _decodes_or_raises_codec_error(decode: Callable[[Any], object], payload: object) -> None:
    """Either a decoded value of a public type, or a CodecError that names a field."""
    try:
        result = decode(payload)
    except codec.CodecError as exc:
        assert exc.field and exc.message
        return
    assert isinstance(
        result,
        (
            types.TensorData,
            types.ForwardBackwardOutput,
            types.SampleResponse,
            codec.ForwardBackwardRequest,
            types.EncodedTextChunk,
            types.ImageChunk,
            types.ModelInput,
            types.Datum,
        ),
    )


@given(_wild_tensors())
def test_arbitrary_tensor_messages_decode_or_raise_codec_errors(tensor: pb.Tensor) -> None:
    _decodes_or_raises_codec_error(codec.decode_tensor, tensor.SerializeToString())
    _decodes_or_raises_codec_error(
        codec.decode_forward_backward_request, _request_with_tensor(tensor)
    )


@given(_wild_outputs())
def test_arbitrary_output_messages_decode_or_raise_codec_errors(payload: bytes) -> None:
    _decodes_or_raises_codec_error(codec.decode_forward_backward_output, payload)


@given(_wild_samples())
def test_arbitrary_sample_messages_decode_or_raise_codec_errors(payload: bytes) -> None:
    _decodes_or_raises_codec_error(codec.decode_sample_response, payload)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_codec_errors(payload: bytes) -> None:
    for decode in (
        codec.decode_forward_backward_request,
        codec.decode_forward_backward_output,
        codec.decode_sample_response,
        codec.decode_tensor,
    ):
        _decodes_or_raises_codec_error(decode, payload)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "data",
                    "dtype",
                    "shape",
                    "sparse_crow_indices",
                    "sparse_col_indices",
                    "tokens",
                    "type",
                    "format",
                    "chunks",
                    "model_input",
                    "loss_fn_inputs",
                    "weights",
                    "loss_fn_output_type",
                    "loss_fn_outputs",
                    "metrics",
                    "expected_tokens",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@given(_json_values)
def test_arbitrary_json_decodes_or_raises_codec_errors(value: object) -> None:
    for decode in (
        codec.tensor_data_from_json,
        codec.chunk_from_json,
        codec.model_input_from_json,
        codec.datum_from_json,
        codec.forward_backward_output_from_json,
    ):
        _decodes_or_raises_codec_error(decode, value)


@given(
    st.fixed_dictionaries(
        {"dtype": st.sampled_from(["float32", "int64"])},
        optional={
            "data": st.lists(
                st.one_of(st.integers(), st.floats(), st.none(), st.booleans()), max_size=4
            ),
            "shape": st.lists(st.integers(-2, 4), max_size=3),
            "sparse_crow_indices": st.lists(st.integers(-2, 4), max_size=4),
            "sparse_col_indices": st.lists(st.integers(-2, 4), max_size=4),
        },
    )
)
def test_arbitrary_json_tensors_decode_or_raise_codec_errors(value: dict[str, Any]) -> None:
    _decodes_or_raises_codec_error(codec.tensor_data_from_json, value)
