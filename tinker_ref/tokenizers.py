"""`get_tokenizer()` of the training and sampling clients: the model's Hugging Face tokenizer.

Resolved as SDK 0.38 resolves it: `tokenizer_id` from `get_info` when the service gives one
(the mock gives the path of its shipped byte-level tokenizer directory for its test models,
so this works offline), else the base model's name with the SDK's rules (`<org>/<model>/<variant>`
drops the variant; Llama 3 uses an ungated copy). Loading needs `transformers` (not a
dependency of tinker-ref: `pip install transformers`); without it `get_tokenizer()` raises an
ImportError saying so. Thinking Machines' own tokenizers (`TML/...`) are not available.
"""

from __future__ import annotations

import functools
from typing import Any

LLAMA3_TOKENIZER = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer"


def tokenizer_name(model_name: str, tokenizer_id: str | None) -> str:
    """The name or path `AutoTokenizer.from_pretrained` gets (the SDK's heuristics)."""
    if tokenizer_id is not None:
        return tokenizer_id
    model_name = model_name.split(":")[0]
    if model_name.startswith("meta-llama/Llama-3"):
        return LLAMA3_TOKENIZER
    if model_name.count("/") == 2:
        org, model, _variant = model_name.split("/", 2)
        return f"{org}/{model}"
    return model_name


@functools.lru_cache(maxsize=32)
def load_tokenizer(model_name: str, tokenizer_id: str | None = None) -> Any:
    name = tokenizer_name(model_name, tokenizer_id)
    if name.startswith(("TML/", "thinkingmachines/")):
        raise RuntimeError(
            f"{name}: Thinking Machines models have no tokenizer tinker_ref can load; use "
            "tml-renderers"
        )
    try:
        from transformers import AutoTokenizer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            f"get_tokenizer() needs the transformers package to load {name!r}: "
            "pip install transformers"
        ) from exc
    return AutoTokenizer.from_pretrained(name, fast=True)
