"""Wire codecs: tinker_ref types <-> the protobuf and JSON forms of Tinker's HTTP API.

`proto_codec` handles the three protobuf messages of the SDK >= 0.25 wire (forward/backward
request, forward/backward output, sample response); `json_codec` the JSON shapes of tensors,
model inputs, datums and the JSON-era forward/backward output. Every decoder of untrusted input
raises `CodecError(field, message)` and nothing else.
"""

from tinker_ref.codec._wire_reader import peek_fields
from tinker_ref.codec.errors import CodecError
from tinker_ref.codec.json_codec import (
    chunk_from_json,
    chunk_to_json,
    datum_from_json,
    datum_to_json,
    forward_backward_output_from_json,
    forward_backward_output_to_json,
    model_input_from_json,
    model_input_to_json,
    tensor_data_from_json,
    tensor_data_to_json,
)
from tinker_ref.codec.proto_codec import (
    ForwardBackwardRequest,
    LossFnConfigValue,
    decode_forward_backward_output,
    decode_forward_backward_request,
    decode_sample_response,
    decode_tensor,
    encode_forward_backward_output,
    encode_forward_backward_request,
    encode_sample_response,
    encode_tensor,
)

__all__ = [
    "CodecError",
    "ForwardBackwardRequest",
    "LossFnConfigValue",
    "chunk_from_json",
    "chunk_to_json",
    "datum_from_json",
    "datum_to_json",
    "decode_forward_backward_output",
    "decode_forward_backward_request",
    "decode_sample_response",
    "decode_tensor",
    "encode_forward_backward_output",
    "encode_forward_backward_request",
    "encode_sample_response",
    "encode_tensor",
    "forward_backward_output_from_json",
    "forward_backward_output_to_json",
    "model_input_from_json",
    "model_input_to_json",
    "peek_fields",
    "tensor_data_from_json",
    "tensor_data_to_json",
]
