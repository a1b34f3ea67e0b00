"""`tinker-mock install-tokenizers`: a tokenizer for every served model, in the Hugging Face cache.

Writes the hub cache layout that `huggingface_hub` reads with `HF_HUB_OFFLINE=1`
(`<hub>/models--ORG--NAME/{blobs/SHA256, snapshots/REVISION/FILE -> ../../blobs/SHA256,
refs/main}`), so `AutoTokenizer.from_pretrained("Qwen/Qwen3.5-4B")`, the official SDK's
`get_tokenizer()` and tinker-cookbook's `get_tokenizer(model_name)` load them offline. Where a
model's loader uses another hub name or a pinned revision (Llama 3 through the cookbook's
ungated alias, Kimi's pinned commits), those are written too.

Each snapshot holds a `config.json` (vocabulary size and EOS only: AutoTokenizer reads it),
`tokenizer.json` (real where a package ships it, else a stand-in: see
`families.py`), `tokenizer_config.json` (special tokens, the model's EOS, a stand-in chat
template, and a `tinker_mock` entry saying what the files are), `special_tokens_map.json` and
a `README.md` saying the same in words. Nothing is downloaded; the hub directory is
`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mock_server.engine.catalog import ModelSpec, load_catalog
from mock_server.tokenizers.bpe import stand_in
from mock_server.tokenizers.families import FAMILIES, TEMPLATES, Family

STAND_IN_NOTE = (
    "tinker-mock stand-in: byte-level (one token per UTF-8 byte) with the model family's real "
    "special tokens; not the model's real vocabulary"
)
KIMI_CODE = '''"""tinker-mock stand-in for Kimi's tokenization_kimi.TikTokenTokenizer.

Written by `tinker-mock install-tokenizers`: the class loads the tokenizer.json beside it (a
stand-in, see README.md); it does not implement Kimi's tiktoken tokenizer.
"""

from transformers import PreTrainedTokenizerFast


class TikTokenTokenizer(PreTrainedTokenizerFast):
    pass
'''


@dataclass(frozen=True)
class Installed:
    repo: str  # hub name written, e.g. "Qwen/Qwen3.5-4B"
    kind: str  # "real" or "stand-in"
    source: str  # where the tokenizer.json came from
    revisions: tuple[str, ...]  # snapshot folders written (the first is refs/main)


def default_hub_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME")
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        home = str(Path(cache) / "huggingface")
    return Path(home) / "hub"


def _dump(content: Any, compact: bool = False) -> bytes:
    if compact:  # tokenizer.json: tens of MB with indentation
        return (json.dumps(content, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    return (json.dumps(content, indent=2, ensure_ascii=False) + "\n").encode()


class _Builder:
    """Builds each family's tokenizer.json once (the real ones take seconds) and keeps it."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, int], tuple[bytes, str, str, dict[int, str]]] = {}

    def tokenizer(self, family: Family, vocab_size: int) -> tuple[bytes, str, str, dict[int, str]]:
        """(tokenizer.json bytes, kind, source, id -> special-token text)."""
        real = family.real is not None
        key = (family.name, 0 if real else vocab_size)
        if key not in self._built:
            found = family.real() if family.real is not None else None
            if found is not None:
                content, source = found
                kind = "real"
            else:
                content = stand_in(vocab_size, family.specials())
                kind = "stand-in"
                source = STAND_IN_NOTE
                if family.real is not None:
                    source += " (the package with the real files is not installed)"
            specials = {t["id"]: t["content"] for t in content["added_tokens"]}
            self._built[key] = (_dump(content, compact=True), kind, source, specials)
        return self._built[key]


def _config(
    spec: ModelSpec, family: Family, kind: str, source: str, specials: dict[int, str]
) -> dict[str, Any]:
    eos = specials.get(spec.eos_token_id)
    config: dict[str, Any] = {
        "tokenizer_class": "TikTokenTokenizer" if family.custom_code else "PreTrainedTokenizerFast",
        "bos_token": family.bos,
        "eos_token": eos,
        "pad_token": family.pad or eos,
        "model_max_length": spec.max_context_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": TEMPLATES[family.template],
        "tinker_mock": {
            "tokenizer": kind,
            "source": source,
            "family": family.name,
            "chat_template": "stand-in in the family's format",
        },
    }
    if family.custom_code:
        config["auto_map"] = {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]}
    return config


def _readme(repo: str, kind: str, source: str) -> bytes:
    return (
        f"# {repo} (written by tinker-mock install-tokenizers)\n\n"
        f"tokenizer: {kind}. Source: {source}.\n"
        "The chat template is a tinker-mock stand-in in the model family's format.\n"
    ).encode()


def _write_repo(
    hub: Path,
    repo: str,
    files: dict[str, bytes],
    revisions: Iterable[str],
    blobs_seen: dict[str, Path],
) -> None:
    """One repo's blobs, snapshots and refs/main. A blob already written for another repo in
    this run is hard-linked (a family's tokenizer.json is the same file for all its models)."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    blobs = folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    names = {}
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            tmp = blobs / f".{digest}.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(blobs_seen[digest], tmp)
            except (KeyError, OSError):
                tmp.write_bytes(data)
            tmp.replace(blob)
        blobs_seen.setdefault(digest, blob)
        names[name] = digest
    revisions = list(revisions)
    for revision in revisions:
        snapshot = folder / "snapshots" / revision
        if snapshot.exists():
            shutil.rmtree(snapshot)
        snapshot.mkdir(parents=True)
        for name, digest in names.items():
            (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / digest)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revisions[0])


def install(hub: Path | None = None, names: Iterable[str] | None = None) -> list[Installed]:
    """Write tokenizers for `names` (default: every served model with a tokenizer family)."""
    hub = default_hub_dir() if hub is None else hub
    catalog = load_catalog()
    wanted = list(names) if names is not None else list(catalog)
    unknown = [name for name in wanted if name not in catalog]
    if unknown:
        raise KeyError(f"not served by the mock: {', '.join(unknown)}")
    builder, installed = _Builder(), []
    aliases_written: set[str] = set()
    blobs_seen: dict[str, Path] = {}
    for name in wanted:
        spec = catalog[name]
        if spec.tokenizer_family is None:
            continue  # test models: their tokenizer ships with the mock (get_info's path)
        family = FAMILIES[spec.tokenizer_family]
        tokenizer, kind, source, specials = builder.tokenizer(family, spec.vocab_size)
        repos: list[tuple[str, str | None]] = [(name, None)]  # (hub name, EOS override)
        for prefix, (alias, alias_eos) in family.aliases.items():
            if name.startswith(prefix) and alias not in aliases_written:
                repos.append((alias, alias_eos))
                aliases_written.add(alias)
        for repo, eos in repos:
            config = _config(spec, family, kind, source, specials)
            if eos is not None:
                config["eos_token"] = eos
            files = {
                # transformers' AutoTokenizer reads config.json first; no model_type, so it
                # takes the class from tokenizer_config.json instead of guessing from the type.
                "config.json": _dump(
                    {
                        "vocab_size": spec.vocab_size,
                        "eos_token_id": spec.eos_token_id,
                        # >= 5.0.0: transformers skips its Mistral-regex check (and warning).
                        "transformers_version": "5.0.0",
                        "tinker_mock": "tokenizer files only: no model weights",
                    }
                ),
                "tokenizer.json": tokenizer,
                "tokenizer_config.json": _dump(config),
                "special_tokens_map.json": _dump(
                    {k: config[k] for k in ("bos_token", "eos_token", "pad_token") if config[k]}
                ),
                "README.md": _readme(repo, kind, source),
            }
            if family.custom_code:
                files["tokenization_kimi.py"] = KIMI_CODE.encode()
            main = hashlib.sha1(b"".join(files[k] for k in sorted(files))).hexdigest()
            revisions = (main, *family.revisions.get(repo, ()))
            _write_repo(hub, repo, files, revisions, blobs_seen)
            installed.append(Installed(repo, kind, source, revisions))
    return installed
