"""Result encoding of the HTTP front end: wire era by Accept, JSON shapes the SDK validates."""

from __future__ import annotations

import math

import pytest

from mock_server.http.bodies import JSON, PROTOBUF
from mock_server.http.encode import encode_result, result_json, sample_response_json, wire_format
from mock_server.service.results import (
    CreateCustomLossResult,
    CreateModelResult,
    LoadWeightsResult,
    OptimStepResult,
    SaveWeightsExternalResult,
    SaveWeightsForSamplerResult,
    SaveWeightsResult,
)
from tinker_ref.codec import decode_forward_backward_output
from tinker_ref.types import ForwardBackwardOutput, SampledSequence, SampleResponse, TensorData


@pytest.mark.spec("WIRE-7", "SMP-7")
def test_nan_prompt_logprob_encodes_as_null() -> None:
    response = SampleResponse(
        [SampledSequence("stop", [1], [-0.5])], prompt_logprobs=[math.nan, -1.25]
    )
    assert sample_response_json(response)["prompt_logprobs"] == [None, -1.25]


@pytest.mark.spec("FUT-5", "WIRE-5")
def test_protobuf_only_for_forward_backward_and_sample_results() -> None:
    output = ForwardBackwardOutput(
        "ArrayRecord", [{"logprobs": TensorData([-1.0, -2.0], "float32", [2])}], {"loss:sum": 3.0}
    )
    assert wire_format(output, "application/x-protobuf") == PROTOBUF
    assert wire_format(output, "application/json") == JSON
    assert wire_format(OptimStepResult({}), "application/x-protobuf") == JSON
    assert decode_forward_backward_output(encode_result(output, PROTOBUF)) == output


def test_save_for_sampler_json_leaves_out_the_absent_variant() -> None:
    named = result_json(SaveWeightsForSamplerResult(path="tinker://m/sampler_weights/a"))
    assert named == {"type": "save_weights_for_sampler", "path": "tinker://m/sampler_weights/a"}
    ephemeral = result_json(SaveWeightsForSamplerResult(sampling_session_id="s:sample:0"))
    assert ephemeral == {"type": "save_weights_for_sampler", "sampling_session_id": "s:sample:0"}


@pytest.mark.spec("FUT-4", "FUT-5")
@pytest.mark.parametrize(
    "result",
    [
        CreateModelResult("s:train:0"),
        OptimStepResult({"optimizer_step:sum": 1.0, "grad_norm:max": 0.5}),
        SaveWeightsResult("tinker://s:train:0/weights/a"),
        SaveWeightsForSamplerResult(path="tinker://s:train:0/sampler_weights/a"),
        SaveWeightsForSamplerResult(sampling_session_id="s:sample:0"),
        SaveWeightsExternalResult("tinker://s:train:0/external_weights/e", 1024),
        LoadWeightsResult("tinker://s:train:0/weights/a", "s:train:0"),
        CreateCustomLossResult("s:loss:0"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_every_json_result_is_typed_and_never_reads_as_a_failure(result: object) -> None:
    # The SDK classifies a JSON answer with a top-level "error" key as a failed future.
    assert wire_format(result, "application/x-protobuf") == JSON
    body = result_json(result)
    assert (
        "error" not in body
        and body["type"]
        == {
            "CreateModelResult": "create_model",
            "OptimStepResult": "optim_step",
            "SaveWeightsResult": "save_weights",
            "SaveWeightsForSamplerResult": "save_weights_for_sampler",
            "LoadWeightsResult": "load_weights",
            "CreateCustomLossResult": "create_custom_loss",
            "SaveWeightsExternalResult": "save_weights_external",
        }[type(result).__name__]
    )
