"""`Record`: the SDK's JSON records read and written from their dataclass annotations."""

from __future__ import annotations

import datetime as dt

import pytest

from tinker_ref import types


def test_nested_records_lists_and_iso_times_read_back() -> None:
    body = {
        "training_runs": [
            {
                "training_run_id": "s:train:0",
                "base_model": "m",
                "model_owner": "o",
                "is_lora": True,
                "last_request_time": "2025-01-02T03:04:05Z",
                "last_checkpoint": {
                    "checkpoint_id": "weights/a",
                    "checkpoint_type": "training",
                    "time": "2025-01-02T03:04:05+00:00",
                    "tinker_path": "tinker://s:train:0/weights/a",
                    "unknown_field": "ignored",
                },
            }
        ],
        "cursor": {"offset": 0, "limit": 20, "total_count": 1},
    }
    runs = types.TrainingRunsResponse.from_json(body)
    run = runs.training_runs[0]
    assert run.last_request_time == dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert run.last_checkpoint is not None and run.last_checkpoint.public is False
    assert runs.cursor.total_count == 1
    again = types.TrainingRunsResponse.from_json(runs.to_json())
    assert again == runs


def test_a_tagged_union_is_resolved_by_its_type_field() -> None:
    summary = types.SessionSummary.from_json(
        {
            "session_id": "s",
            "created_at": "2025-01-01T00:00:00Z",
            "owner": "o",
            "project_id": "p",
            "checkpoints_count": 0,
            "status": {"type": "client_finished", "reason": {"type": "errored"}},
        }
    )
    assert isinstance(summary.status, types.ClientSessionFinished)
    assert isinstance(summary.status.reason, types.ClientSessionFinishErrored)


def test_a_missing_or_mistyped_field_is_named_by_its_path() -> None:
    with pytest.raises(ValueError, match=r"CheckpointsListResponse\.checkpoints\[0\]\.tinker_path"):
        types.CheckpointsListResponse.from_json(
            {
                "checkpoints": [
                    {
                        "checkpoint_id": "w/a",
                        "checkpoint_type": "training",
                        "time": "2025-01-01T00:00:00",
                    }
                ]
            }
        )
    with pytest.raises(ValueError, match=r"Cursor\.limit: expected an integer"):
        types.Cursor.from_json({"offset": 0, "limit": "20", "total_count": 1})


def test_to_json_leaves_none_out_as_the_sdk_dumps_requests() -> None:
    request = types.SessionSearchRequest(project_ids=["p"])
    assert request.to_json() == {
        "project_ids": ["p"],
        "user_metadata": {},
        "owner": {"type": "own"},
        "limit": 50,
    }


def test_checkpoint_paths_parse_as_the_sdk_parses_them() -> None:
    parsed = types.ParsedCheckpointTinkerPath.from_tinker_path(
        "tinker://s:train:0/sampler_weights/x"
    )
    assert (parsed.training_run_id, parsed.checkpoint_type, parsed.checkpoint_id) == (
        "s:train:0",
        "sampler",
        "sampler_weights/x",
    )
    for bad in ("s:train:0/weights/x", "tinker://s/weights", "tinker://s/other/x"):
        with pytest.raises(ValueError, match="Invalid tinker path"):
            types.ParsedCheckpointTinkerPath.from_tinker_path(bad)


def test_dimuon_params_validate_and_serialise_as_the_sdk() -> None:
    assert types.DimuonParams(learning_rate=0.1).to_json() == {
        "type": "dimuon",
        "learning_rate": 0.1,
        "grad_clip_norm": 0.0,
        "beta1": 0.9,
    }
    with pytest.raises(ValueError, match="learning_rate"):
        types.DimuonParams(learning_rate=-1.0)
    with pytest.raises(ValueError, match="beta1"):
        types.DimuonParams(learning_rate=0.1, beta1=1.0)
