"""tinker-cookbook's DPO training (`train_dpo.main`) against the mock, from a local JSONL.

    tinker-mock serve --port 8080 &
    export TINKER_API_KEY=tml-dev TINKER_BASE_URL=http://127.0.0.1:8080 HF_HUB_OFFLINE=1
    python examples/cookbook_dpo.py --log-path /tmp/dpo-run --steps 6

Runs the cookbook's own recipe code unmodified: `ComparisonBuilderFromJsonl` reads
`examples/data/dpo_comparisons.jsonl` (eight questions, a helpful answer preferred over a
dismissive one), `DPODatasetBuilderFromComparisons` renders them with the `role_colon`
renderer, and `train_dpo.main` trains: a frozen reference sampler from
`save_weights_and_get_sampling_client`, reference logprobs via `compute_logprobs`, the DPO loss
through `forward_backward_custom`, `optim_step`, and a final named checkpoint. Prints the
cookbook's `dpo_loss` per step (read back from its `metrics.jsonl`); it starts at log 2 (the
policy equals the reference) and falls as the policy learns the preference.

Needs `tinker` (0.38) and `tinker-cookbook` (0.6.1, installable with `--no-deps`) where it runs.
"""

from __future__ import annotations

import cookbook_offline as offline
from tinker_cookbook.preference import train_dpo
from tinker_cookbook.preference.dpo_datasets import DPODatasetBuilderFromComparisons
from tinker_cookbook.preference.preference_datasets import ComparisonBuilderFromJsonl
from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

PAIRS_PER_BATCH = 4  # two batches of the eight comparisons per epoch


def main() -> None:
    parser = offline.common_arguments(__doc__.split("\n\n")[0], steps=6, learning_rate=5e-3)
    parser.add_argument("--dpo-beta", type=float, default=0.5)
    args = parser.parse_args()
    offline.require_mock_environment()
    offline.register_server_tokenizer()

    dataset = DPODatasetBuilderFromComparisons(
        common_config=ChatDatasetBuilderCommonConfig(
            model_name_for_tokenizer=offline.BASE_MODEL,
            renderer_name=offline.RENDERER,
            max_length=512,
            batch_size=PAIRS_PER_BATCH,
        ),
        comparison_builder=ComparisonBuilderFromJsonl(
            train_path=str(offline.DATA_DIR / "dpo_comparisons.jsonl")
        ),
    )
    config = train_dpo.Config(
        log_path=args.log_path,
        model_name=offline.BASE_MODEL,
        recipe_name="tinker_ref_cookbook_dpo",
        renderer_name=offline.RENDERER,
        dataset_builder=dataset,
        learning_rate=args.learning_rate,
        lr_schedule="constant",
        num_epochs=(args.steps + 1) // 2,  # two batches per epoch
        max_steps=args.steps,
        dpo_beta=args.dpo_beta,
        lora_rank=8,
        save_every=0,  # only the final checkpoint (a named state + sampler save)
        eval_every=0,
    )
    train_dpo.main(config)

    for row in offline.read_metrics(args.log_path):
        if "dpo_loss" in row:
            print(f"step {row['step']}: dpo_loss {row['dpo_loss']:.6f} accuracy {row['accuracy']}")


if __name__ == "__main__":
    main()
