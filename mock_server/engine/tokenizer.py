"""Detokenisation for stop strings.

Byte-level test models ("tokenizer": "bytes" in the catalogue) map ids 0-255 to raw bytes and
have three specials: 256 <bos>, 257 <eos>, 258 <pad>. For the real-vocabulary entries the mock
has no tokenizer; they use the same rule (ids below 256 are bytes, every other id decodes to
nothing), which keeps stop strings deterministic without pretending to know real vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence

BOS, EOS, PAD = 256, 257, 258
BYTE_SPECIALS = {BOS: "<bos>", EOS: "<eos>", PAD: "<pad>"}


def decode_bytes(tokens: Sequence[int]) -> bytes:
    return bytes(t for t in tokens if 0 <= t < 256)


def encode_text(text: str) -> list[int]:
    """Token ids of `text` for a byte-level model (UTF-8 bytes)."""
    return list(text.encode("utf-8"))
