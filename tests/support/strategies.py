"""Hypothesis strategies for tinker_ref values, and their descriptions for the SDK driver.

The strategies reach the corners the wire must survive: every float32 bit pattern (NaN payloads,
-0.0, infinities), the full int64 range, empty tensors, CSR with empty rows and nnz = 0, `[N]`
and `[N, K]` shapes, ragged per-datum outputs, images and several chunks per datum. The
`describe_*` helpers turn values into the JSON that `official_codec_driver.py` reads.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tinker_ref import types

INPUT_NAMES = ["target_tokens", "weights", "advantages", "logprobs", "mask_x", "ü"]
_LITTLE_ENDIAN = {"float32": "<f4", "int64": "<i8"}


_NOTABLE_FLOAT32 = [0.0, -0.0, 1.0, -2.5, 1e-45, -3.4e38, float("inf"), float("-inf"), float("nan")]


@st.composite
def float32_arrays(draw: st.DrawFn, size: int) -> np.ndarray:
    """`size` float32 values: raw bit patterns (every NaN payload, subnormals) or notable values.

    Drawn as one byte string rather than per element: per-element strategies made data
    generation the bulk of these tests' runtime.
    """
    if draw(st.booleans()):
        raw = draw(st.binary(min_size=4 * size, max_size=4 * size))
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    values = draw(st.lists(st.sampled_from(_NOTABLE_FLOAT32), min_size=size, max_size=size))
    return np.array(values, dtype=np.float32)


@st.composite
def int64_arrays(draw: st.DrawFn, size: int) -> np.ndarray:
    """`size` int64 values: raw bit patterns (the full range) or small numbers."""
    if draw(st.booleans()):
        raw = draw(st.binary(min_size=8 * size, max_size=8 * size))
        return np.frombuffer(raw, dtype="<i8").astype(np.int64)
    values = draw(st.lists(st.integers(-5, 5), min_size=size, max_size=size))
    return np.array(values, dtype=np.int64)


def values_of(dtype: str, size: int) -> st.SearchStrategy[np.ndarray]:
    return float32_arrays(size) if dtype == "float32" else int64_arrays(size)


@st.composite
def dense_tensors(
    draw: st.DrawFn,
    dtype: str | None = None,
    shapes: st.SearchStrategy[list[int] | None] | None = None,
) -> types.TensorData:
    dtype = dtype or draw(st.sampled_from(["float32", "int64"]))
    shape_strategy = (
        shapes
        if shapes is not None
        else st.one_of(
            st.none(),
            st.lists(st.integers(0, 7), min_size=1, max_size=1),
            st.lists(st.integers(0, 5), min_size=2, max_size=2),
        )
    )
    shape = draw(shape_strategy)
    size = int(np.prod(shape)) if shape is not None else draw(st.integers(0, 7))
    return types.TensorData(draw(values_of(dtype, size)), dtype, shape)


@st.composite
def csr_tensors(draw: st.DrawFn, dtype: str | None = None) -> types.TensorData:
    """CSR tensors of any density (empty rows, nnz = 0, and full rows all occur)."""
    dtype = dtype or draw(st.sampled_from(["float32", "int64"]))
    nrows, ncols = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    columns = [
        sorted(draw(st.sets(st.integers(0, ncols - 1), max_size=ncols))) if ncols else []
        for _ in range(nrows)
    ]
    crow = np.concatenate([[0], np.cumsum([len(row) for row in columns])]).astype(np.int64)
    col = np.array([c for row in columns for c in row], dtype=np.int64)
    values = draw(values_of(dtype, int(crow[-1])))
    return types.TensorData(values, dtype, [nrows, ncols], crow, col)


def tensors(dtype: str | None = None) -> st.SearchStrategy[types.TensorData]:
    return st.one_of(dense_tensors(dtype), csr_tensors(dtype))


token_ids = st.integers(-(2**31), 2**31 - 1)

chunks = st.one_of(
    st.builds(types.EncodedTextChunk, st.lists(token_ids, max_size=6)),
    st.builds(
        types.ImageChunk,
        st.binary(max_size=12),
        st.sampled_from(["png", "jpeg"]),
        st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    ),
)


@st.composite
def provenance_spans(draw: st.DrawFn) -> list[types.ProvenanceSpan]:
    span_types = st.sampled_from([types.PromptProvenanceSpan, types.SampledProvenanceSpan])
    return [
        draw(span_types)(
            sequence_id=draw(st.text(min_size=1, max_size=6)),
            offset=draw(st.integers(0, 2**40)),
            length=draw(st.integers(0, 2**40)),
        )
        for _ in range(draw(st.integers(1, 3)))
    ]


@st.composite
def datums(draw: st.DrawFn, with_spans: bool = True) -> types.Datum:
    names = draw(st.lists(st.sampled_from(INPUT_NAMES), max_size=3, unique=True))
    spans = draw(st.booleans()) if with_spans else False
    return types.Datum(
        types.ModelInput(draw(st.lists(chunks, max_size=3))),
        {name: draw(tensors()) for name in names},
        draw(provenance_spans()) if spans else None,
        draw(provenance_spans()) if spans else None,
    )


loss_fn_configs = st.one_of(
    st.none(),
    st.dictionaries(
        st.text(max_size=6),
        st.one_of(
            st.floats(allow_nan=False),
            st.integers(-(2**70), 2**70),
            st.text(max_size=8),
        ),
        max_size=4,
    ),
)


@st.composite
def forward_backward_outputs(draw: st.DrawFn) -> types.ForwardBackwardOutput:
    """Ragged outputs: per datum, each field's dtype, rank and K vary independently."""
    names = draw(st.lists(st.sampled_from(["logprobs", "elementwise_loss", "ids"]), unique=True))
    outputs = []
    for _ in range(draw(st.integers(0, 6))):
        datum = {}
        for name in names:
            dtype = draw(st.sampled_from(["float32", "int64"]))
            shape = draw(
                st.one_of(
                    st.lists(st.integers(0, 6), min_size=1, max_size=1),
                    st.lists(st.integers(0, 4), min_size=2, max_size=2),
                    st.lists(st.integers(0, 3), min_size=3, max_size=3),
                )
            )
            datum[name] = draw(
                st.one_of(dense_tensors(dtype, st.just(shape)), csr_tensors(dtype))
                if len(shape) == 2
                else dense_tensors(dtype, st.just(shape))
            )
        outputs.append(datum)
    metrics = draw(st.dictionaries(st.text(max_size=8), st.floats(), max_size=4))
    output_type = draw(st.sampled_from(["ArrayRecord", "TorchLossReturn", "pkg.mod:ArrayRecord"]))
    return types.ForwardBackwardOutput(output_type, outputs, metrics)


@st.composite
def topk_logprobs(draw: st.DrawFn) -> types.TopkLogprobs:
    length, k = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    ids = draw(st.lists(token_ids, min_size=length * k, max_size=length * k))
    return types.TopkLogprobs(
        np.array(ids, dtype=np.int32).reshape(length, k),
        draw(float32_arrays(length * k)).reshape(length, k),
    )


@st.composite
def sampled_sequences(draw: st.DrawFn) -> types.SampledSequence:
    tokens = draw(st.lists(token_ids, max_size=6))
    logprobs = draw(st.one_of(st.none(), float32_arrays(len(tokens))))
    return types.SampledSequence(
        draw(st.sampled_from(["stop", "length"])),
        tokens,
        logprobs,
        draw(st.one_of(st.none(), topk_logprobs())),
    )


@st.composite
def sample_responses(draw: st.DrawFn) -> types.SampleResponse:
    shaped = st.lists(st.integers(0, 4), min_size=2, max_size=2)
    alt = None
    if draw(st.booleans()):
        shape = draw(shaped)
        size = shape[0] * shape[1]
        ids = draw(st.lists(token_ids, min_size=size, max_size=size))
        alt = types.PromptAltTokens(
            types.TensorData(np.array(ids, dtype=np.int64), "int64", shape),
            types.TensorData(draw(float32_arrays(size)), "float32", shape),
        )
    prompt_size = draw(st.integers(0, 6))
    return types.SampleResponse(
        draw(st.lists(sampled_sequences(), max_size=3)),
        draw(st.one_of(st.none(), float32_arrays(prompt_size))),
        draw(st.one_of(st.none(), topk_logprobs())),
        draw(st.one_of(st.none(), dense_tensors("float32", shaped), csr_tensors("float32"))),
        draw(st.integers(-(2**31), 2**31 - 1)),
        alt,
    )


# ----- descriptions for official_codec_driver.py --------------------------------------------------


def describe_tensor(td: types.TensorData) -> dict[str, Any]:
    return {
        "dtype": td.dtype,
        "shape": td.shape,
        "data_hex": td.values_array.astype(_LITTLE_ENDIAN[td.dtype]).tobytes().hex(),
        "crow": td.sparse_crow_indices,
        "col": td.sparse_col_indices,
    }


def describe_span(span: types.ProvenanceSpan) -> dict[str, Any]:
    kind = "prompt" if isinstance(span, types.PromptProvenanceSpan) else "sampled"
    return {
        "kind": kind,
        "sequence_id": span.sequence_id,
        "offset": span.offset,
        "length": span.length,
    }


def describe_chunk(chunk: types.ModelInputChunk) -> dict[str, Any]:
    if isinstance(chunk, types.EncodedTextChunk):
        return {"tokens": chunk.tokens}
    return {
        "image_b64": base64.b64encode(chunk.data).decode(),
        "format": chunk.format,
        "expected_tokens": chunk.expected_tokens,
    }


def describe_datum(datum: types.Datum) -> dict[str, Any]:
    spans = None
    if datum.model_input_spans is not None and datum.loss_fn_input_spans is not None:
        spans = {
            "model_input": [describe_span(s) for s in datum.model_input_spans],
            "loss_fn_inputs": [describe_span(s) for s in datum.loss_fn_input_spans],
        }
    return {
        "chunks": [describe_chunk(c) for c in datum.model_input.chunks],
        "inputs": {name: describe_tensor(td) for name, td in datum.loss_fn_inputs.items()},
        "spans": spans,
    }


def describe_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    described: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, str):
            described[key] = {"str": value}
        elif isinstance(value, int):
            described[key] = {"int": value}
        else:
            described[key] = {"float_hex": struct.pack("<d", value).hex()}
    return described


def tensor_from_description(desc: dict[str, Any]) -> types.TensorData:
    values = np.frombuffer(bytes.fromhex(desc["data_hex"]), dtype=_LITTLE_ENDIAN[desc["dtype"]])
    return types.TensorData(values, desc["dtype"], desc["shape"], desc["crow"], desc["col"])
