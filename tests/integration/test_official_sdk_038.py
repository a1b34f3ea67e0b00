"""The unmodified official SDK 0.38 trains against a real `tinker-mock serve` process.

One driver process (`tests/support/official_sdk_driver.py`, run inside the cached SDK venv)
exercises the whole acceptance workflow against two servers — a plain one and one that forces
chunking (2 datums per request), zstd bodies and server-side custom losses — and reports what
it saw; the assertions live here. The retried-POST test speaks raw HTTP to a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.support.mock_process import MockServer, running_mock_server
from tests.support.training import datum
from tinker_ref.codec import decode_forward_backward_output, encode_forward_backward_request

DRIVER = Path(__file__).resolve().parents[1] / "support" / "official_sdk_driver.py"
CHUNKED_CONFIG = json.dumps(
    {"fwdbwd_max_chunk_len": 2, "proto_compress_fwdbwd": True, "custom_loss_server_side": True}
)


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(x) for x in b]
    return max(
        abs(x - y)
        for row_a, row_b in zip(a, b, strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    )


@pytest.fixture(scope="module")
def sdk_run(official_sdk_38: Path) -> dict[str, Any]:
    with (
        running_mock_server() as plain,
        running_mock_server("--client-config", CHUNKED_CONFIG) as chunked,
    ):
        completed = subprocess.run(
            [str(official_sdk_38), str(DRIVER), plain.url, chunked.url],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TINKER_TELEMETRY": "0", "TINKER_API_KEY": "tml-dev"},
            check=False,
        )
        if completed.returncode != 0:
            pytest.fail(
                f"driver failed ({completed.returncode}):\n{completed.stderr[-6000:]}\n"
                f"--- plain server ---\n{plain.stderr()[-3000:]}\n"
                f"--- chunked server ---\n{chunked.stderr()[-3000:]}"
            )
        result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        result["chunked_records"] = chunked.requests()
        result["plain_records"] = plain.requests()
    return result


@pytest.mark.spec("CL-13", "WIRE-4")
@pytest.mark.sdk
@pytest.mark.parametrize("server", ["plain", "chunked"])
def test_training_workflow(sdk_run: dict[str, Any], server: str) -> None:
    run = sdk_run[server]
    assert sdk_run["sdk_version"] == "0.38.0"
    session = run["model_id"].split(":")[0]
    assert run["model_id"] == f"{session}:train:0"
    assert run["model_name"] == "tinker-ref/tiny-bytes"
    # The loss falls, through cross_entropy and then through the pipelined custom loss.
    ce, custom = run["ce_losses"], run["custom_losses"]
    assert all(later < earlier for earlier, later in pairwise(ce)), ce
    assert all(later < earlier for earlier, later in pairwise(custom)), custom
    metrics = run["custom_metrics"]
    assert {"loss:sum", "surrogate_loss:sum", "tokens"} <= set(metrics)
    assert metrics["loss:sum"] == custom[-1]


@pytest.mark.spec("CKPT-2", "CKPT-3", "CKPT-8")
@pytest.mark.sdk
@pytest.mark.parametrize("server", ["plain", "chunked"])
def test_checkpoints(sdk_run: dict[str, Any], server: str) -> None:
    run = sdk_run[server]
    assert run["state_path"] == f"tinker://{run['model_id']}/weights/state-001"
    # create_training_client_from_state: exactly the saved weights, a model id the SDK derived.
    assert run["restored_forward"] == run["after_training"]
    assert run["restored_model_id"].startswith(run["model_id"].split(":")[0] + ":train:")
    # With optimizer state the next step is bit-identical to the original's; without, not.
    assert run["step_with_opt"] == run["continued"]
    assert run["step_without_opt"] != run["continued"]
    # load_state brings the original back to the saved weights.
    assert run["after_load_state"] == run["after_training"]


@pytest.mark.spec("SMP-2", "SMP-3", "SMP-7")
@pytest.mark.sdk
@pytest.mark.parametrize("server", ["plain", "chunked"])
def test_sampling(sdk_run: dict[str, Any], server: str) -> None:
    run = sdk_run[server]
    assert len(run["samples"]) == 2 and all(len(s) == 8 for s in run["samples"])
    assert run["samples_again"] == run["samples"]  # same seed, same tokens
    assert run["samples_other_seed"] != run["samples"]
    assert len(set(run["sample_sequence_ids"])) == 2
    # compute_logprobs on the snapshot equals the training forward's logprobs, bit for bit.
    assert run["compute_logprobs"][0] is None
    assert run["compute_logprobs"][1:] == run["training_view"]


@pytest.mark.spec("SEQ-3", "LOSS-6")
@pytest.mark.sdk
def test_chunked_run_equals_the_unchunked_run(sdk_run: dict[str, Any]) -> None:
    plain, chunked = sdk_run["plain"], sdk_run["chunked"]
    assert chunked["first_forward"] == plain["first_forward"]  # per-datum: no reassociation
    losses_plain = plain["ce_losses"] + plain["custom_losses"]
    losses_chunked = chunked["ce_losses"] + chunked["custom_losses"]
    for a, b in zip(losses_plain, losses_chunked, strict=True):
        assert close(a, b), (a, b)
    diffs = [
        abs(x - y) / max(1.0, abs(x))
        for row_a, row_b in zip(plain["after_training"], chunked["after_training"], strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    ]
    assert max(diffs) <= 1e-6


@pytest.mark.spec("SEQ-3", "WIRE-8")
@pytest.mark.sdk
def test_chunked_server_saw_first_chunk_last_and_zstd(sdk_run: dict[str, Any]) -> None:
    records = [r for r in sdk_run["chunked_records"] if r["endpoint"] == "/api/v1/forward_backward"]
    assert records and all(r["headers"].get("content-encoding") == "zstd" for r in records)
    assert all(r["body"]["num_datums"] <= 2 for r in records)
    by_model: dict[str, list[int]] = {}
    for r in records:
        by_model.setdefault(r["body"]["model_id"], []).append(r["seq_id"])
    arrivals = by_model[sdk_run["chunked"]["model_id"]]
    assert arrivals[:3] == [2, 3, 1]  # the 6-datum forward: chunks 2 and 3, then the first
    assert sorted(arrivals) == sorted(set(arrivals))  # every seq_id exactly once
    plain_fb = [r for r in sdk_run["plain_records"] if r["endpoint"] == "/api/v1/forward_backward"]
    assert all("content-encoding" not in r["headers"] for r in plain_fb)


@pytest.mark.spec("DET-4")
@pytest.mark.sdk
def test_custom_loss_identity_is_bit_exact(sdk_run: dict[str, Any]) -> None:
    identity = sdk_run["identity"]
    assert identity["custom_eval"] == identity["ce_eval"]
    assert close(identity["custom_loss"], identity["ce_loss"])


@pytest.mark.spec("LOSS-15")
@pytest.mark.sdk
def test_server_side_custom_loss_matches_the_client_side_path(sdk_run: dict[str, Any]) -> None:
    server_side = sdk_run["server_side"]
    assert server_side["loss_id"].endswith(":loss:0")
    assert max_abs_diff(server_side["server_eval"], server_side["client_eval"]) <= 1e-6
    assert close(
        server_side["server_metrics"]["custom/nll:sum"], server_side["client_metrics"]["loss:sum"]
    )
    custom_posts = [
        r
        for r in sdk_run["chunked_records"]
        if r["endpoint"] == "/api/v1/forward_backward" and r["body"]["loss_fn"] == "custom"
    ]
    assert custom_posts and all(
        r["body"]["loss_fn_config"] == {"loss_id": server_side["loss_id"]} for r in custom_posts
    )


# ----- the SDK's outer retry, reproduced with raw HTTP against a real process -----


def _post(server: MockServer, path: str, body: bytes, content_type: str, key: str) -> Any:
    request = urllib.request.Request(
        f"{server.url}/api/v1/{path}",
        data=body,
        headers={"X-API-Key": "tml-dev", "Content-Type": content_type, "X-Idempotency-Key": key},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read(), response.headers.get("Content-Type", "")


def _json(server: MockServer, path: str, body: dict[str, Any], key: str = "k") -> Any:
    raw, _ = _post(server, path, json.dumps(body).encode(), "application/json", key)
    return json.loads(raw)


def _result(server: MockServer, request_id: str) -> Any:
    while True:
        request = urllib.request.Request(
            f"{server.url}/api/v1/retrieve_future",
            data=json.dumps({"request_id": request_id, "allow_metadata_only": False}).encode(),
            headers={
                "X-API-Key": "tml-dev",
                "Content-Type": "application/json",
                "Accept": "application/x-protobuf",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            if "protobuf" in response.headers.get("Content-Type", ""):
                return decode_forward_backward_output(raw)
        value = json.loads(raw)
        if value.get("type") != "try_again":
            return value


@pytest.mark.spec("SEQ-5")
def test_retried_forward_backward_is_applied_once_by_a_real_server() -> None:
    train = [datum(b"retries must not double count"), datum(b"second datum")]
    fresh = [datum(b"held-out evaluation text")]
    adam = {
        "learning_rate": 0.01,
        "beta1": 0.9,
        "beta2": 0.95,
        "eps": 1e-12,
        "weight_decay": 0.0,
        "grad_clip_norm": 0.0,
    }
    with running_mock_server() as server:
        session = _json(server, "create_session", {"tags": []})["session_id"]
        logprobs = []
        for model_seq_id, retried in ((0, True), (1, False)):
            created = _json(
                server,
                "create_model",
                {
                    "session_id": session,
                    "model_seq_id": model_seq_id,
                    "base_model": "tinker-ref/tiny-bytes",
                    "lora_config": {"rank": 4, "seed": 9},
                },
            )
            model = _result(server, created["request_id"])["model_id"]
            body = encode_forward_backward_request(model, 1, train, "cross_entropy")
            first = json.loads(
                _post(server, "forward_backward", body, "application/x-protobuf", "a")[0]
            )
            if retried:  # the outer retry: same seq_id and body, new idempotency key
                again = json.loads(
                    _post(server, "forward_backward", body, "application/x-protobuf", "b")[0]
                )
                assert again["request_id"] == first["request_id"]
            _result(server, first["request_id"])
            step = _json(
                server, "optim_step", {"model_id": model, "seq_id": 2, "adam_params": adam}
            )
            _result(server, step["request_id"])
            forward = encode_forward_backward_request(
                model, 3, fresh, "cross_entropy", forward_only=True
            )
            submitted = json.loads(
                _post(server, "forward_backward", forward, "application/x-protobuf", "c")[0]
            )
            output = _result(server, submitted["request_id"])
            logprobs.append(output.loss_fn_outputs[0]["logprobs"].values_array.tobytes())
        posts = [r for r in server.requests() if r["endpoint"] == "/api/v1/forward_backward"]
        assert [r["headers"]["x-idempotency-key"] for r in posts[:2]] == ["a", "b"]
    assert logprobs[0] == logprobs[1]  # bitwise: the retry was not applied a second time
