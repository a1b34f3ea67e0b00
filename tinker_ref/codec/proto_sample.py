"""`SampleResponse` protobuf (a sampling future's result, spec WIRE-12) <-> the type.

Encoding: tokens int32, logprobs float32, top-k as two dense row-major `length x k` matrices,
`prompt_logprobs` float32 with NaN where a position has no value, prompt alt tokens as int32.
Decoding follows the official `response_conv`: empty `logprobs` / `prompt_logprobs` mean None, a
top-k with no rows or no columns means None, `sequence_id` stays None for the client to stamp;
anything malformed is a `CodecError` naming the field.
"""

from __future__ import annotations

import numpy as np

from tinker_ref._proto.tinker_ref.wire.v1 import wire_pb2
from tinker_ref.codec._wire_writer import MessageWriter, little_endian_view
from tinker_ref.codec.errors import CodecError
from tinker_ref.codec.proto_tensor import (
    parse_message,
    read_values,
    tensor_from_proto,
    write_tensor,
)
from tinker_ref.types import PromptAltTokens, SampledSequence, SampleResponse, TopkLogprobs

__all__ = ["decode_sample_response", "encode_sample_response"]

_STOP_REASONS = {wire_pb2.STOP_REASON_STOP: "stop", wire_pb2.STOP_REASON_LENGTH: "length"}


def encode_sample_response(response: SampleResponse) -> bytes:
    writer = MessageWriter()
    for sequence in response.sequences:
        writer.message(1, _write_sequence(sequence))
    if response.prompt_logprobs_np is not None:
        writer.bytes_field(2, little_endian_view(response.prompt_logprobs_np, "<f4"), always=True)
    if response.topk_prompt_logprobs_np is not None:
        writer.message(3, _write_topk(response.topk_prompt_logprobs_np))
    writer.varint(4, response.prompt_cache_hit_tokens)
    if response.target_prompt_logprobs is not None:
        writer.message(5, write_tensor(response.target_prompt_logprobs))
    if response.prompt_alt_tokens is not None:
        alt = MessageWriter()
        alt.message(1, write_tensor(response.prompt_alt_tokens.tokens, as_int32=True))
        alt.message(2, write_tensor(response.prompt_alt_tokens.logprobs))
        writer.message(6, alt)
    return writer.to_bytes()


def _write_sequence(sequence: SampledSequence) -> MessageWriter:
    writer = MessageWriter()
    writer.varint(1, 0 if sequence.stop_reason == "stop" else wire_pb2.STOP_REASON_LENGTH)
    writer.bytes_field(2, little_endian_view(sequence.tokens_np, "<i4"))
    if sequence.logprobs_np is not None:
        writer.bytes_field(3, little_endian_view(sequence.logprobs_np, "<f4"), always=True)
    if sequence.topk_logprobs_np is not None:
        writer.message(4, _write_topk(sequence.topk_logprobs_np))
    return writer


def _write_topk(topk: TopkLogprobs) -> MessageWriter:
    length, k = topk.token_ids.shape
    writer = MessageWriter()
    writer.bytes_field(1, little_endian_view(topk.token_ids, "<i4"))
    writer.bytes_field(2, little_endian_view(topk.logprobs, "<f4"))
    writer.varint(3, k)
    writer.varint(4, length)
    return writer


def decode_sample_response(payload: bytes) -> SampleResponse:
    """Decode like the official SDK: empty `logprobs`/`prompt_logprobs` mean None, a top-k with
    no rows or no columns means None; `sequence_id` is left None for the client to stamp."""
    message = parse_message(wire_pb2.SampleResponse, payload)
    sequences = [
        _sequence_from_proto(sequence, f"sequences[{index}]")
        for index, sequence in enumerate(message.sequences)
    ]
    prompt_logprobs = None
    if message.prompt_logprobs:
        prompt_logprobs = read_values(message.prompt_logprobs, "<f4", "prompt_logprobs")
    alt_tokens = None
    if message.HasField("prompt_alt_tokens"):
        alt = message.prompt_alt_tokens
        alt_tokens = PromptAltTokens(
            tokens=tensor_from_proto(alt.tokens, "prompt_alt_tokens.tokens"),
            logprobs=tensor_from_proto(alt.logprobs, "prompt_alt_tokens.logprobs"),
        )
    return SampleResponse(
        sequences=sequences,
        prompt_logprobs=prompt_logprobs,
        topk_prompt_logprobs=(
            _topk_from_proto(message.topk_prompt_logprobs, "topk_prompt_logprobs")
            if message.HasField("topk_prompt_logprobs")
            else None
        ),
        target_prompt_logprobs=(
            tensor_from_proto(message.target_prompt_logprobs, "target_prompt_logprobs")
            if message.HasField("target_prompt_logprobs")
            else None
        ),
        prompt_cache_hit_tokens=message.prompt_cache_hit_tokens,
        prompt_alt_tokens=alt_tokens,
    )


def _sequence_from_proto(message: wire_pb2.SampledSequence, field: str) -> SampledSequence:
    stop_reason = _STOP_REASONS.get(message.stop_reason)
    if stop_reason is None:
        raise CodecError(
            f"{field}.stop_reason",
            f"unknown value {message.stop_reason}; expected STOP_REASON_STOP (0) or "
            "STOP_REASON_LENGTH (1)",
        )
    if len(message.tokens) % 4:
        raise CodecError(
            f"{field}.tokens", f"{len(message.tokens)} bytes is not a whole number of int32 ids"
        )
    tokens = np.frombuffer(message.tokens, dtype="<i4").astype(np.int32, copy=False)
    logprobs = None
    if message.logprobs:
        logprobs = read_values(message.logprobs, "<f4", f"{field}.logprobs")
        if logprobs.size != tokens.size:
            raise CodecError(
                f"{field}.logprobs", f"has {logprobs.size} values for {tokens.size} tokens"
            )
    topk = (
        _topk_from_proto(message.topk_sampled_logprobs, f"{field}.topk_sampled_logprobs")
        if message.HasField("topk_sampled_logprobs")
        else None
    )
    return SampledSequence("stop" if stop_reason == "stop" else "length", tokens, logprobs, topk)


def _topk_from_proto(message: wire_pb2.TopkLogprobs, field: str) -> TopkLogprobs | None:
    length, k = message.length, message.k
    if length == 0 or k == 0:
        return None
    for name, raw in (("token_ids", message.token_ids), ("logprobs", message.logprobs)):
        if len(raw) != length * k * 4:
            raise CodecError(
                f"{field}.{name}",
                f"has {len(raw)} bytes but length {length} x k {k} needs {length * k * 4}",
            )
    token_ids = np.frombuffer(message.token_ids, dtype="<i4").reshape(length, k)
    logprobs = read_values(message.logprobs, "<f4", f"{field}.logprobs").reshape(length, k)
    return TopkLogprobs(token_ids=token_ids, logprobs=logprobs)
