"""Conversions between wire-level values (`tinker_ref.types`) and the engine's tensors.

Inbound: a `Datum` becomes an engine `DatumInput` (text chunks concatenated into one int64
token tensor; loss inputs densified to torch, CSR pad 0 as on the wire). Outbound: engine
results become `ForwardBackwardOutput` / `SampleResponse`, keeping float32 bits exactly, so what
the client decodes is bit-for-bit what the engine computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from mock_server.engine import DatumInput, ForwardBackwardResult, SampleResult
from mock_server.service.errors import InvalidArgument, MalformedRequest
from tinker_ref.types import (
    MASK_LOGPROB,
    Datum,
    EncodedTextChunk,
    ForwardBackwardOutput,
    ModelInputChunk,
    PromptAltTokens,
    SampledSequence,
    SampleResponse,
    TensorData,
    TopkLogprobs,
)


def prompt_token_ids(chunks: Sequence[ModelInputChunk], field: str) -> tuple[int, ...]:
    """A sampling prompt's token ids, its text chunks concatenated (the front ends' shared
    check: the mock's models read text only)."""
    tokens: list[int] = []
    for index, chunk in enumerate(chunks):
        if not isinstance(chunk, EncodedTextChunk):
            raise MalformedRequest(
                f"{type(chunk).__name__} is not supported: the mock's models read text only",
                f"{field}.chunks[{index}]",
            )
        tokens.extend(chunk.tokens)
    return tuple(tokens)


def datum_inputs(data: Sequence[Datum]) -> list[DatumInput]:
    inputs = []
    for index, datum in enumerate(data):
        tokens: list[int] = []
        for position, chunk in enumerate(datum.model_input.chunks):
            if not isinstance(chunk, EncodedTextChunk):
                raise InvalidArgument(
                    f"{type(chunk).__name__} is not supported: the mock's models read text only",
                    f"data[{index}].model_input.chunks[{position}]",
                )
            tokens.extend(chunk.tokens)
        inputs.append(
            DatumInput(
                tokens=torch.tensor(tokens, dtype=torch.int64),
                loss_fn_inputs={
                    key: td.to_torch() for key, td in sorted(datum.loss_fn_inputs.items())
                },
            )
        )
    return inputs


def forward_backward_output(result: ForwardBackwardResult) -> ForwardBackwardOutput:
    return ForwardBackwardOutput(
        "ArrayRecord",
        [
            {name: TensorData.from_torch(tensor) for name, tensor in sorted(output.items())}
            for output in result.loss_fn_outputs
        ],
        result.metrics,
    )


def sample_response(
    result: SampleResult,
    target_request: TensorData | None,
    prompt_logprobs_last_n: int | None,
) -> SampleResponse:
    sequences = [
        SampledSequence(
            seq.stop_reason,  # type: ignore[arg-type]  # engine emits "stop" | "length"
            np.asarray(seq.tokens, dtype=np.int32),
            np.asarray(seq.logprobs, dtype=np.float32),
            None
            if seq.topk is None
            else TopkLogprobs(
                seq.topk[0].numpy().astype(np.int32), seq.topk[1].numpy().astype(np.float32)
            ),
        )
        for seq in result.sequences
    ]
    prompt_logprobs = None
    if result.prompt_logprobs is not None:
        prompt_logprobs = result.prompt_logprobs.numpy().astype(np.float32)
        if prompt_logprobs_last_n is not None:
            # Only the last n positions carry values; the SDK checks nothing earlier is set.
            keep_from = max(prompt_logprobs.size - prompt_logprobs_last_n, 0)
            prompt_logprobs = prompt_logprobs.copy()
            prompt_logprobs[:keep_from] = math.nan
    topk = None
    if result.topk_prompt_logprobs is not None:
        ids, values = result.topk_prompt_logprobs
        id_rows, value_rows = ids.numpy().astype(np.int32), values.numpy().astype(np.float32)
        if prompt_logprobs_last_n is not None:  # "likewise for topk_prompt_logprobs rows"
            keep_from = max(id_rows.shape[0] - prompt_logprobs_last_n, 0)
            id_rows[:keep_from], value_rows[:keep_from] = 0, MASK_LOGPROB
        topk = TopkLogprobs(id_rows, value_rows)
    return SampleResponse(
        sequences,
        prompt_logprobs=prompt_logprobs,
        topk_prompt_logprobs=topk,
        target_prompt_logprobs=_target_layout(result.target_prompt_logprobs, target_request),
        prompt_alt_tokens=None
        if result.prompt_alt_tokens is None
        else PromptAltTokens(
            TensorData.from_torch(result.prompt_alt_tokens[0]),
            TensorData.from_torch(result.prompt_alt_tokens[1].to(torch.float32)),
        ),
    )


def _target_layout(values: torch.Tensor | None, request: TensorData | None) -> TensorData | None:
    """Target prompt logprobs in the request's layout: CSR in, CSR out (same structure)."""
    if values is None or request is None:
        return None
    dense = values.numpy().astype(np.float32)  # (L-1, K)
    crow, col = request.crow_indices_array, request.col_indices_array
    if crow is None or col is None:
        return TensorData(dense.reshape(-1), "float32", list(dense.shape))
    rows = np.repeat(np.arange(dense.shape[0]), np.diff(crow))
    return TensorData(
        dense[rows, col],
        "float32",
        list(dense.shape),
        sparse_crow_indices=crow,
        sparse_col_indices=col,
    )
