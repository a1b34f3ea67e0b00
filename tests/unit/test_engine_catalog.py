"""The model catalogue: every entry loads and runs; real names keep their real vocabularies."""

from __future__ import annotations

import pytest
import torch

from mock_server.engine import DatumInput, Engine, InvalidInputError, LoraConfig, load_catalog
from mock_server.engine.tokenizer import BOS, EOS, PAD
from tests.support.engine_data import QWEN3_8B, TINY_64, TINY_512, TINY_BYTES

CATALOG = load_catalog()


@pytest.mark.slow  # ~30 entries, most with a real 150k-250k vocabulary: ~25 s on 2 cores
@pytest.mark.parametrize("name", list(CATALOG))
def test_every_catalogue_entry_loads_scores_its_whole_vocabulary_and_rejects_ids_beyond_it(name):
    spec = CATALOG[name]
    engine = Engine()  # one per entry: a 248k-vocabulary base is ~64 MB, not worth keeping
    model = engine.create_model(name, LoraConfig(rank=2), 0, "catalog")
    assert model.vocab_size == spec.vocab_size
    assert 0 <= spec.eos_token_id < spec.vocab_size
    assert spec.d_model % 2 == 0  # sinusoidal position codes come in (sin, cos) pairs

    last = spec.vocab_size - 1
    datum = DatumInput(
        torch.tensor([0, last, spec.eos_token_id]),
        {"target_tokens": torch.tensor([last, spec.eos_token_id, 0]), "weights": torch.ones(3)},
    )
    result = model.forward_backward([datum], "cross_entropy")
    logprobs = result.loss_fn_outputs[0]["logprobs"]
    assert bool(torch.isfinite(logprobs).all())
    assert bool((logprobs < 0).all())
    assert model.has_gradient()

    beyond = DatumInput(
        torch.tensor([spec.vocab_size]),
        {"target_tokens": torch.tensor([0]), "weights": torch.ones(1)},
    )
    with pytest.raises(
        InvalidInputError, match=f"outside the vocabulary \\[0, {spec.vocab_size}\\)"
    ):
        model.forward_backward([beyond], "cross_entropy")


def test_real_model_names_keep_their_real_vocabulary_sizes():
    assert CATALOG[QWEN3_8B].vocab_size == 151936
    assert CATALOG["meta-llama/Llama-3.1-8B"].vocab_size == 128256
    assert CATALOG["openai/gpt-oss-20b"].vocab_size == 201088
    real = [spec for spec in CATALOG.values() if not spec.test_model]
    assert len(real) >= 10
    assert all(spec.vocab_size > 100_000 for spec in real)


def test_test_models_have_small_vocabularies_and_tiny_bytes_covers_every_byte_and_special():
    test_models = {spec.name for spec in CATALOG.values() if spec.test_model}
    assert test_models == {TINY_64, TINY_512, TINY_BYTES}
    assert all(CATALOG[name].vocab_size <= 512 for name in test_models)
    tiny_bytes = CATALOG[TINY_BYTES]
    assert tiny_bytes.tokenizer == "bytes"
    assert tiny_bytes.vocab_size >= 259  # 256 bytes + <bos> <eos> <pad>
    assert max(BOS, EOS, PAD) < tiny_bytes.vocab_size
    assert tiny_bytes.eos_token_id == EOS


def test_catalogue_names_are_unique_and_listed_by_the_engine_in_file_order():
    names = [spec.name for spec in Engine.catalog()]
    assert names == list(CATALOG)
    assert len(set(names)) == len(names)
