"""Shared set-up of the tinker-cookbook examples: tokenizer from the server, log folder.

tinker-cookbook looks tokenizers up by base-model name (`get_tokenizer(model_name)`), which for
`tinker-ref/tiny-bytes` would mean the Hugging Face hub. The mock instead reports a tokenizer
directory it ships in `get_info`'s `tokenizer_id`; the official SDK's
`TrainingClient.get_tokenizer()` loads it from there, and the cookbook's documented hook
`register_tokenizer` makes every later `get_tokenizer(model_name)` return it. Nothing here
touches the network, so the examples run with `HF_HUB_OFFLINE=1`.

Needs the official `tinker` SDK and `tinker-cookbook` (not tinker-ref) where it runs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import tinker
from tinker_cookbook.tokenizer_utils import register_tokenizer

BASE_MODEL = "tinker-ref/tiny-bytes"  # byte-level test model of the mock
RENDERER = "role_colon"  # the cookbook renderer that needs no model-specific chat template
DATA_DIR = Path(__file__).resolve().parent / "data"


def register_server_tokenizer(base_model: str = BASE_MODEL) -> Any:
    """Load the base model's tokenizer the way the SDK does (from `get_info.tokenizer_id`)
    and register it with the cookbook under the model's name; returns it.

    The SDK only offers `get_tokenizer()` on a training client, so this creates one small
    model (rank 1) on the server; it never trains.
    """
    service = tinker.ServiceClient()
    training = service.create_lora_training_client(base_model=base_model, rank=1).result()
    tokenizer = training.get_tokenizer()
    register_tokenizer(base_model, lambda: tokenizer)
    return tokenizer


def common_arguments(description: str, steps: int, learning_rate: float) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--log-path", required=True, help="cookbook log folder (must not exist)")
    parser.add_argument("--steps", type=int, default=steps, help="training steps")
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    return parser


def require_mock_environment() -> None:
    """Fail with a clear message when the SDK's variables are not set (the SDK's own error
    names only the key)."""
    missing = [name for name in ("TINKER_BASE_URL", "TINKER_API_KEY") if not os.environ.get(name)]
    if missing:
        raise SystemExit(
            f"set {' and '.join(missing)} to point at a mock server, e.g. "
            "`tinker-mock serve --port 8080 &` then "
            "`export TINKER_API_KEY=tml-dev TINKER_BASE_URL=http://127.0.0.1:8080`"
        )


def read_metrics(log_path: str) -> list[dict[str, Any]]:
    """The cookbook's own per-step record (`metrics.jsonl` written by `ml_log`)."""
    lines = (Path(log_path) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
