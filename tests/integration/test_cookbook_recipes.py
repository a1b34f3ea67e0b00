"""tinker-cookbook recipes, unmodified, against the mock (examples/cookbook_*.py).

Each example runs in the cached offline-development venv (official SDK 0.38 + tinker-cookbook
0.6.1, see `ensure_cookbook_venv`) with `HF_HUB_OFFLINE=1`, against a mock started in this
process; the test reads both sides: the cookbook's own per-step metrics (printed by the example
from its `metrics.jsonl`) must fall, and the server's request record must show the wire
features the recipe relies on ([T, K] targets, `target_prompt_logprobs`, prompt logprobs,
named saves). Also checks the shipped byte tokenizer against the real `transformers` and
`tokenizers` libraries and the cookbook's `role_colon` renderer.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

import tinker_ref.mock
from mock_server.testing import MockServer
from mock_server.tokenizers import BYTES_DIR
from tests.support.mock_process import REPO_ROOT
from tests.support.sdk_venv import ensure_cookbook_venv

pytestmark = [pytest.mark.sdk, pytest.mark.timeout(2400)]  # the first run builds the venv

DPO_LINE = re.compile(r"^step (\d+): dpo_loss (\S+) accuracy (\S+)$", re.MULTILINE)
DECISION_LINE = re.compile(r"^step (\d+): loss (\S+) target_prob (\S+)$", re.MULTILINE)
VALIDATION_LINE = re.compile(r"^validation at step (\d+): brier_reward (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def cookbook_python() -> Path:
    return ensure_cookbook_venv()


def run_example(python: Path, mock: MockServer, script: str, *args: str) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TINKER_")}
    env.update(mock.environ(), HF_HUB_OFFLINE="1", TINKER_TELEMETRY="0")
    done = subprocess.run(
        [str(python), str(REPO_ROOT / "examples" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def test_cookbook_dpo_from_local_jsonl_lowers_the_dpo_loss(
    cookbook_python: Path, tmp_path: Path
) -> None:
    with tinker_ref.mock.serve(seed=0) as mock:
        out = run_example(
            cookbook_python, mock, "cookbook_dpo.py", "--log-path", str(tmp_path / "run")
        )
        tokenizer_probe, dpo_model = mock.model_ids()
        steps = mock.optimizer_steps(dpo_model)
        assert mock.optimizer_steps(tokenizer_probe) == 0
        prompt_logprob_requests = [
            r for r in mock.requests("asample") if r["body"].get("prompt_logprobs")
        ]
        saves = [r["body"].get("path") for r in mock.requests("save_weights")]
    rows = [(int(s), float(loss), float(acc)) for s, loss, acc in DPO_LINE.findall(out)]
    assert [step for step, _, _ in rows] == list(range(6)), out
    losses = [loss for _, loss, _ in rows]
    # Step 0: the policy is the reference snapshot, so both logprob paths (training forward
    # and the sampler's compute_logprobs) agree and the DPO loss is exactly log 2.
    assert math.isclose(losses[0], math.log(2), abs_tol=1e-5), losses
    assert losses[-1] < 0.5 * losses[0], losses
    assert rows[-1][2] == 1.0  # every chosen answer now beats its rejected one
    assert steps == 6
    # Reference logprobs: one compute_logprobs per datum (8 per step), as prompt logprobs.
    assert len(prompt_logprob_requests) == 6 * 8
    assert "final" in saves


def test_cookbook_decision_recipe_with_t_by_k_targets_lowers_the_brier_loss(
    cookbook_python: Path, tmp_path: Path
) -> None:
    with tinker_ref.mock.serve(seed=0) as mock:
        out = run_example(
            cookbook_python, mock, "cookbook_decisions.py", "--log-path", str(tmp_path / "run")
        )
        forward_backward = mock.requests("forward_backward")
        scoring = [r for r in mock.requests("asample") if r["body"].get("target_prompt_logprobs")]
        sampler_saves = [r["body"].get("path") for r in mock.requests("save_weights_for_sampler")]
    rows = [(int(s), float(loss), float(p)) for s, loss, p in DECISION_LINE.findall(out)]
    assert [step for step, _, _ in rows] == list(range(1, 11)), out
    losses = [loss for _, loss, _ in rows]
    assert losses[-1] < 0.5 * losses[0], losses
    assert rows[-1][2] > rows[0][2]  # probability of the right answer rose
    before, after = (float(reward) for _, reward in VALIDATION_LINE.findall(out))
    assert after > before  # held-out markets improved too
    # Training sent [T, K] targets with K = 2 choices (yes / no).
    shapes = {
        tuple(datum["loss_fn_inputs"]["target_tokens"]["shape"][1:])
        for record in forward_backward
        for datum in record["body"]["data"]
    }
    assert shapes == {(2,)}, shapes
    # Validation scored 4 markets at the start and the end from sampler snapshots.
    assert len(scoring) == 2 * 4
    assert "final" in sampler_saves


TOKENIZER_PROBE = """
import json, sys
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from tinker_cookbook.renderers import get_renderer

directory, texts = sys.argv[1], json.loads(sys.argv[2])
loaded = AutoTokenizer.from_pretrained(directory)
# The same tokenizer built with the `tokenizers` library's own API, serialised by it.
table = bytes_to_unicode()
reference = Tokenizer(models.BPE(vocab={table[b]: b for b in range(256)}, merges=[]))
reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
reference.decoder = decoders.ByteLevel()
reference.add_special_tokens([AddedToken(t, special=True) for t in ("<bos>", "<eos>", "<pad>")])
renderer = get_renderer("role_colon", loaded)
conversation = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hé!"}]
model_input, weights = renderer.build_supervised_example(conversation)
tokens = model_input.to_ints()
print(json.dumps({
    "encoded": [loaded.encode(t, add_special_tokens=False) for t in texts],
    "decoded": [loaded.decode(list(t.encode())) for t in texts],
    "specials": [loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id],
    "reference_json": json.loads(reference.to_str()),
    "rendered": loaded.decode(tokens),
    "weighted": loaded.decode([t for t, w in zip(tokens[1:], weights.tolist()[1:]) if w > 0]),
}))
"""


def test_shipped_tokenizer_is_byte_level_in_transformers_and_renders_role_colon(
    cookbook_python: Path,
) -> None:
    texts = ["plain ascii", "  spaces\tand\nnewlines", "héllo wörld ✓ 日本", "<eos> literal"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(cookbook_python), "-c", TOKENIZER_PROBE, str(BYTES_DIR), json.dumps(texts)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = [list(text.encode()) for text in texts]
    expected[-1] = [257, *list(b" literal")]  # a special token's text is the special id
    assert result["encoded"] == expected
    assert result["decoded"] == texts
    assert result["specials"] == [256, 257, 258]
    committed = json.loads((BYTES_DIR / "tokenizer.json").read_text())
    assert committed == result["reference_json"]
    # role_colon's format, with the tokenizer's BOS; the stop sequence "\n\nUser:" closes
    # the reply, and only the reply (with its stop) is trained on.
    assert result["rendered"] == "<bos>User: Hi?\n\nAssistant: Hé!\n\nUser:"
    assert result["weighted"] == " Hé!\n\nUser:"
