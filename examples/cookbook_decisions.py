"""tinker-cookbook's decision-model recipe (forecasting, [T, K] targets) against the mock.

    tinker-mock serve --port 8080 &
    export TINKER_API_KEY=tml-dev TINKER_BASE_URL=http://127.0.0.1:8080 HF_HUB_OFFLINE=1
    python examples/cookbook_decisions.py --log-path /tmp/decisions-run --steps 10

Runs `tinker_cookbook.recipes.decisions.forecasting.main` unmodified on
`examples/data/decision_markets.csv`: twelve made-up commodity markets in the Prophet Arena CSV
layout the recipe reads (`--data_path`), eight before the split date for training, four after it
for validation; a market that "will exceed" resolves YES, one that "will fall below" resolves NO.
Each market is a yes / no `Decision`; training sends `decision_dist_datums` — `target_tokens`
and `weights` of shape [T, K], the K choice tokens on the answer row — through
`forward_backward_custom` with the recipe's Brier loss, and evaluation scores the choices with
one `sample` call per market carrying `target_prompt_logprobs`, from sampler snapshots
(`save_weights_and_get_sampling_client`); the run ends with named saves of state and sampler
weights. Prints the recipe's `train/loss` per step from its `metrics.jsonl`, then the
validation Brier reward before and after training.

Needs `tinker` (0.38) and `tinker-cookbook` (0.6.1, installable with `--no-deps`) where it runs.
"""

from __future__ import annotations

import asyncio

import cookbook_offline as offline
from tinker_cookbook.recipes.decisions import forecasting

SPLIT_DATE = "2025-06-01"  # the CSV's training markets close before it, validation opens after
TRAIN_MARKETS = 8


def main() -> None:
    parser = offline.common_arguments(__doc__.split("\n\n")[0], steps=10, learning_rate=3e-3)
    args = parser.parse_args()
    offline.require_mock_environment()
    offline.register_server_tokenizer()

    config = forecasting.Config(
        model_name=offline.BASE_MODEL,
        renderer_name=offline.RENDERER,
        lora_rank=8,
        data_path=str(offline.DATA_DIR / "decision_markets.csv"),
        split_date=SPLIT_DATE,
        max_train_questions=None,
        max_validation_questions=None,
        batch_size=TRAIN_MARKETS,  # one batch = every training market, so each step sees all
        learning_rate=args.learning_rate,
        epochs=args.steps,
        eval_every=0,  # score validation at the start and the end only
        log_path=args.log_path,
        behavior_if_log_dir_exists="raise",
    )
    asyncio.run(forecasting.main(config))

    for row in offline.read_metrics(args.log_path):
        if "train/loss" in row:
            print(
                f"step {row['step']}: loss {row['train/loss']:.6f} "
                f"target_prob {row['train/target_prob:mean']:.6f}"
            )
        if "test/brier_reward" in row:
            print(f"validation at step {row['step']}: brier_reward {row['test/brier_reward']:.6f}")


if __name__ == "__main__":
    main()
