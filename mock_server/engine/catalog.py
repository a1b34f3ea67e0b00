"""The model catalogue: which base-model names the mock serves, and the tiny network behind each.

The data lives in `catalog.json` beside this file (one entry per base model). Real model
names (every model in tinker-cookbook's model table and Tinker's lineup) keep their real
vocabulary size, so token-id validation, payload sizes and the
vocabulary projection's memory behave as in production; the hidden sizes are tiny so
everything runs on a laptop CPU. Entries marked `test_model` exist for fast tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from mock_server.engine.errors import UnknownBaseModelError


@dataclass(frozen=True)
class ModelSpec:
    name: str  # base-model name as clients send it, e.g. "Qwen/Qwen3-8B"
    arch: str  # reported in get_info's model_data.arch
    vocab_size: int  # the real model's vocabulary size
    eos_token_id: int  # implicit stop token when a sample request sets no `stop`
    d_model: int  # width of the tiny stand-in network
    d_mlp: int  # hidden width of its MLP
    tokenizer: str | None = None  # "bytes" for byte-level test models, else None
    test_model: bool = False  # small-vocabulary model intended for tests
    max_context_length: int = 32768  # reported by get_server_capabilities
    renderer: str | None = None  # tinker-cookbook's recommended renderer for this model
    tokenizer_family: str | None = None  # what `tinker-mock install-tokenizers` writes for it
    vocab_source: str | None = None  # where `vocab_size` comes from


@cache
def load_catalog() -> dict[str, ModelSpec]:
    """All catalogue entries by name, in file order."""
    raw = json.loads(resources.files(__package__).joinpath("catalog.json").read_text())
    return {entry["name"]: ModelSpec(**entry) for entry in raw["models"]}


def get_spec(name: str) -> ModelSpec:
    """The catalogue entry for `name`; UnknownBaseModelError lists the supported names."""
    catalog = load_catalog()
    spec = catalog.get(name)
    if spec is None:
        raise UnknownBaseModelError(name, list(catalog))
    return spec
