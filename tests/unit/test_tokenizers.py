"""The shipped tokenizer directories: generated, not hand-edited, and reported by get_info.

That `transformers` loads the byte tokenizer and encodes text to its UTF-8 bytes is checked
against the real library in tests/integration/test_cookbook_recipes.py (it needs the SDK venv).
"""

from __future__ import annotations

from pathlib import Path

from mock_server.engine.catalog import load_catalog
from mock_server.engine.tokenizer import BYTE_SPECIALS
from mock_server.tokenizers import BYTES_DIR, build, byte_tokenizer_files, render, tokenizer_id


def test_the_committed_files_are_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    written = build(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in BYTES_DIR.iterdir())
    for path in written:
        assert (BYTES_DIR / path.name).read_text() == path.read_text(), path.name


def test_the_vocabulary_maps_every_byte_once_and_the_specials_follow() -> None:
    tokenizer = byte_tokenizer_files()["tokenizer.json"]
    vocab = tokenizer["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(256))
    assert len(set(vocab)) == 256 and all(len(char) == 1 for char in vocab)
    assert {t["id"]: t["content"] for t in tokenizer["added_tokens"]} == BYTE_SPECIALS
    assert render(tokenizer).endswith("}\n")


def test_byte_models_report_the_shipped_directory_and_others_their_own_name() -> None:
    catalog = load_catalog()
    byte_models = [spec for spec in catalog.values() if spec.tokenizer == "bytes"]
    assert byte_models, "the catalogue has no byte-level test model"
    for spec in byte_models:
        assert tokenizer_id(spec) == str(BYTES_DIR)
        assert spec.vocab_size >= 256 + len(BYTE_SPECIALS)
    assert tokenizer_id(catalog["Qwen/Qwen3-8B"]) == "Qwen/Qwen3-8B"
    assert tokenizer_id(catalog["tinker-ref/tiny-64"]) == "tinker-ref/tiny-64"
