"""SDK 0.38's newer surface, written once for the official SDK *and* for tinker_ref.

    python surface_scenario.py official|tinker_ref BASE_URL

As in `client_scenario.py`, only the import differs. The run, against a mock that runs custom
losses server-side and injects a few faults: a session with a project, display name and tags
(from the environment), a model with user metadata; a server-side custom loss
(`create_custom_loss` + `forward_backward_custom(data, handle)`) with a pipelined step;
checkpoints with TTL, metadata and overwrite, sampler weights, an external export; the REST API
(training runs, checkpoints, TTL, publish, delete, sessions, project, copy, weights info,
sampler, external URLs, billing and audit); sampling with every option the mock serves
(prompt logprobs and their top-k, sampled top-k, target prompt logprobs, prompt draws, the
last-N suffix, stability info),
`compute_logprobs` with a suffix, inflight samplers; and SDK 0.38's newest features the mock
refuses (Dimuon at creation and per step, `stable_reinforce`). Prints one JSON line of what the
client returned, with server times and ports left out (they differ between runs).
Runs inside the official SDK's virtualenv as well, so it imports nothing from this repository.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from typing import Any

import torch

BASE_MODEL = "tinker-ref/tiny-bytes"
ADAM = {"learning_rate": 2e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8}
KEY = "tml-surface"


def main(sdk: str, address: str) -> dict[str, Any]:
    warnings.simplefilter("ignore")  # deprecations and ExperimentalWarning: same calls both ways
    if sdk == "official":
        import tinker
    else:
        import tinker_ref as tinker  # type: ignore[no-redef]
    types = tinker.types
    out: dict[str, Any] = {}

    def outcome(call: Any) -> Any:
        """The call's result, or its error as `class: status` (same names in both SDKs)."""
        try:
            return call()
        except tinker.APIStatusError as exc:
            return f"{type(exc).__name__}: {exc.status_code}"

    def datum(text: bytes) -> Any:
        tokens = list(text)
        return types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )

    data = [datum(b"the cat sat"), datum(b"on the mat!")]
    service = tinker.ServiceClient(
        {"purpose": "surface"}, base_url=address, api_key=KEY, display_name="surface run"
    )
    training = service.create_lora_training_client(
        BASE_MODEL, rank=4, seed=3, user_metadata={"recipe": "surface"}
    ).result()

    # ----- server-side custom loss: traced, uploaded, run by the server ---------------------
    def weighted_nll(logprobs: torch.Tensor, weights: torch.Tensor) -> Any:
        loss = -(logprobs * weights).sum()
        return loss, {"custom/nll:sum": loss, "custom/tokens:mean": weights.sum()}

    handle = service.create_custom_loss(weighted_nll, {"logprobs": 1, "weights": 1}).result()
    out["loss_handle"] = [handle.name, handle.loss_id is not None]
    fb = training.forward_backward_custom(data, handle)
    step = training.optim_step(types.AdamParams(**ADAM))
    out["custom_metrics"] = fb.result().metrics
    step.result()

    # ----- checkpoints ---------------------------------------------------------------------------
    state = training.save_state("step-1", ttl_seconds=7200, user_metadata={"step": "1"}).result()
    again = training.save_state("step-1", overwrite=True, user_metadata={"step": "1b"}).result()
    older = training.save_state("step-0").result()
    sampler_path = training.save_weights_for_sampler("eval-1", user_metadata={"k": "v"}).result()
    export = training.save_weights_external("export-1").result()
    out["paths"] = [state.path, again.path, older.path, sampler_path.path, export.path]

    # ----- the REST API --------------------------------------------------------------------------
    rest = tinker.RestClient(base_url=address, api_key=KEY)

    def run_view(run: Any) -> dict[str, Any]:
        last = run.last_checkpoint
        return {
            "id": run.training_run_id,
            "base_model": run.base_model,
            "lora_rank": run.lora_rank,
            "user_metadata": run.user_metadata,
            "last": None if last is None else [last.checkpoint_id, last.user_metadata],
        }

    def checkpoints_view(listing: Any) -> list[Any]:
        return [
            [c.checkpoint_id, c.checkpoint_type, c.public, c.expires_at is not None, c.size_bytes]
            for c in listing.checkpoints
        ]

    out["run"] = run_view(rest.get_training_run_by_tinker_path(state.path).result())
    out["checkpoints"] = checkpoints_view(rest.list_checkpoints(training.model_id).result())
    out["runs"] = [run_view(r) for r in rest.list_training_runs(limit=5).result().training_runs]
    rest.set_checkpoint_ttl_from_tinker_path(older.path, 3600).result()
    rest.publish_checkpoint_from_tinker_path(older.path).result()
    out["published"] = checkpoints_view(rest.list_user_checkpoints(limit=10).result())
    rest.unpublish_checkpoint_from_tinker_path(older.path).result()
    out["ttl_too_short"] = outcome(
        lambda: rest.set_checkpoint_ttl_from_tinker_path(older.path, 60).result()
    )
    rest.delete_checkpoint_from_tinker_path(older.path).result()
    out["deleted_again"] = outcome(
        lambda: rest.delete_checkpoint_from_tinker_path(older.path).result()
    )
    out["weights_info"] = rest.get_weights_info_by_tinker_path(state.path).result().lora_rank
    urls = rest.get_external_weights_urls(export.path).result().urls
    out["export_files"] = {name: re.sub(r"^http://[^/]+", "", url) for name, url in urls.items()}
    copy = service.copy_weights(state.path).result()
    out["copy"] = [copy, run_view(rest.get_training_run_by_tinker_path(copy).result())]

    # ----- sampling with every option the mock serves ---------------------------------------------
    sampler = service.create_sampling_client(base_model=BASE_MODEL).result()
    out["base_model"] = sampler.get_base_model()
    prompt = types.ModelInput.from_ints(list(b"the cat"))
    targets = torch.full((len(b"the cat") - 1, 2), -1, dtype=torch.int64)
    targets[2, 0], targets[5, 1] = ord("e"), ord("t")
    sampled = sampler.sample(
        prompt,
        2,
        types.SamplingParams(max_tokens=4, seed=11, temperature=0.8),
        include_prompt_logprobs=True,
        topk_prompt_logprobs=2,
        target_prompt_logprobs=types.TensorData.from_torch(targets),
        prompt_logprobs_last_n=4,
        topk_sample_logprobs=2,
        prompt_alt_tokens_k=2,
    ).result()
    out["sample"] = {
        "tokens": [list(s.tokens) for s in sampled.sequences],
        "sequence_ids": [s.sequence_id for s in sampled.sequences],
        "sample_topk": [s.topk_logprobs for s in sampled.sequences],
        "prompt_logprobs": sampled.prompt_logprobs,
        "prompt_topk": sampled.topk_prompt_logprobs,
        "targets": sampled.target_prompt_logprobs.tolist(),
        "alt_tokens": sampled.prompt_alt_tokens.tokens.tolist(),
        "alt_logprobs": sampled.prompt_alt_tokens.logprobs.tolist(),
    }
    out["suffix_logprobs"] = sampler.compute_logprobs(prompt, prompt_logprobs_last_n=3).result()
    stable = training.save_weights_and_get_sampling_client(record_stability_info=True).result()
    out["stable_sample"] = [
        s.sequence_id
        for s in stable.sample(prompt, 1, types.SamplingParams(max_tokens=2, seed=1))
        .result()
        .sequences
    ]
    sampler_id = getattr(sampler, "_sampling_session_id", None) or sampler.sampling_session_id
    out["sampler_record"] = rest.get_sampler(sampler_id).result().base_model

    # ----- inflight samplers ----------------------------------------------------------------
    first = training.save_weights_and_get_sampling_client(kind="inflight").result()
    training.forward_backward(data, "cross_entropy").result()
    training.optim_step(types.AdamParams(**ADAM)).result()
    second = training.save_weights_and_get_sampling_client(kind="inflight").result()
    out["inflight_adopted"] = (
        first.compute_logprobs(prompt).result() == second.compute_logprobs(prompt).result()
    )

    # ----- SDK 0.38's newest features the mock refuses by name ---------------------------------
    out["dimuon_model"] = outcome(
        lambda: service.create_lora_training_client(
            BASE_MODEL, rank=4, optimizer=types.DimuonOptimizerConfig()
        ).result()
    )
    out["dimuon_step"] = outcome(
        lambda: training.optim_step(types.DimuonParams(learning_rate=0.1)).result()
    )
    reinforce = types.Datum(
        model_input=data[0].model_input,
        loss_fn_inputs={
            "target_tokens": data[0].loss_fn_inputs["target_tokens"],
            "advantages": types.TensorData.from_torch(torch.ones(10)),
        },
    )
    out["stable_reinforce"] = outcome(
        lambda: training.forward_backward([reinforce], "stable_reinforce").result()
    )

    # ----- sessions, admin reads, close ----------------------------------------------------------
    session_id = training.model_id.split(":")[0]
    session = rest.get_session(session_id).result()
    out["session"] = [session.training_run_ids, session.display_name, session.user_metadata]
    out["sessions"] = rest.list_sessions(limit=5).result().sessions
    rest.assign_session_project(session_id, "proj-moved").result()
    usage = rest.get_billing_usage("2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z").result()
    out["billing"] = usage.data
    out["audit"] = rest.get_audit_log().result().entries
    probe = training.forward(data, "cross_entropy").result()
    out["probe_logprobs"] = [o["logprobs"].tolist() for o in probe.loss_fn_outputs]
    service.close("success", detail="surface scenario done").result()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2]), default=str))
