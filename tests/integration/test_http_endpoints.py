"""Every endpoint of the HTTP front end, on its happy path, through a real aiohttp server."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mock_server.service.config import CLIENT_CONFIG_DEFAULTS
from tests.support.http_api import (
    PROTOBUF,
    TINY,
    MakeMockApi,
    MockApi,
    assert_endpoint_served,
    sample_body,
)
from tests.support.training import datum

pytestmark = pytest.mark.asyncio

TOKENS = [1, 5, 9, 12, 3, 7, 7, 2]


@pytest.mark.spec("WIRE-3")
async def test_client_config_answers_defaults_with_overrides(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api(client_config_overrides={"fwdbwd_max_chunk_len": 2})
    body = await api.post("client/config", {"sdk_version": "0.38.0"})
    assert body == {**CLIENT_CONFIG_DEFAULTS, "fwdbwd_max_chunk_len": 2}
    dynamic = await api.post("client/dynamic_config", {"sdk_version": "0.38.0"})
    assert dynamic["refresh_interval_sec"] == 300


@pytest.mark.spec("WIRE-1")
async def test_capabilities_healthz_and_telemetry(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    response = await api.client.get("/api/v1/get_server_capabilities", headers=api.headers())
    models = {m["model_name"]: m for m in (await response.json())["supported_models"]}
    assert models[TINY] == {
        "model_name": TINY,
        "max_context_length": 32768,
        "trainable": True,
        "sampleable": True,
    }
    assert "Qwen/Qwen3-8B" in models
    health = await api.client.get("/api/v1/healthz")  # no key needed
    assert await health.json() == {"status": "ok"}
    assert await api.post("telemetry", {"events": []}) == {"status": "accepted"}


REQUIRED_ENDPOINTS = [
    ("POST", path)
    for path in (
        "client/config",
        "create_session",
        "session_heartbeat",
        "create_model",
        "get_info",
        "forward_backward",
        "optim_step",
        "save_weights",
        "save_weights_for_sampler",
        "load_weights",
        "create_sampling_session",
        "asample",
        "retrieve_future",
        "forward",
        "weights_info",
    )
] + [("GET", "get_server_capabilities"), ("GET", "samplers/nope")]


@pytest.mark.spec("WIRE-1")
@pytest.mark.parametrize(("method", "path"), REQUIRED_ENDPOINTS)
async def test_every_endpoint_of_the_workflow_and_the_json_era_is_served(
    make_mock_api: MakeMockApi, method: str, path: str
) -> None:
    await assert_endpoint_served(await make_mock_api(), method, path)


@pytest.mark.spec("WIRE-1")
async def test_session_lifecycle(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    assert session.startswith("sess-")
    beat = await api.post("session_heartbeat", {"session_id": session, "type": "session_heartbeat"})
    assert beat == {"type": "session_heartbeat"}
    assert await api.post(f"sessions/{session}/finish", {"reason": {"type": "success"}}) == {}
    # A finished session stops the SDK's heartbeat loop (410) and takes no new models.
    await api.post("session_heartbeat", {"session_id": session}, status=410)
    body = {"session_id": session, "model_seq_id": 0, "base_model": TINY}
    await api.post("create_model", body, status=409)


@pytest.mark.spec("WIRE-4")
async def test_create_model_and_get_info(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    submitted = await api.post(
        "create_model",
        {"session_id": session, "model_seq_id": 0, "base_model": TINY, "lora_config": {"rank": 3}},
    )
    assert submitted["model_id"] == f"{session}:train:0"
    assert await api.result(submitted["request_id"]) == {
        "type": "create_model",
        "model_id": f"{session}:train:0",
    }
    info = await api.post("get_info", {"model_id": f"{session}:train:0", "type": "get_info"})
    assert info["model_data"] == {"arch": "tiny", "model_name": TINY, "tokenizer_id": TINY}
    assert (info["model_id"], info["lora_rank"], info["is_lora"]) == (f"{session}:train:0", 3, True)


@pytest.mark.spec("DET-1", "WIRE-4")
async def test_same_seed_and_requests_give_the_same_ids_and_weights(
    make_mock_api: MakeMockApi,
) -> None:
    runs = []
    for _ in range(2):
        api = await make_mock_api(seed=42)
        model = await api.create_model(await api.session(), seed=None)  # server-derived seed
        fb = await api.forward_backward(model, 1, [datum(TOKENS)])
        await api.result(fb["request_id"], accept=PROTOBUF)
        await api.result((await api.optim_step(model, 2))["request_id"])
        runs.append((model, fb["request_id"], api.digest(model)))
    assert runs[0] == runs[1]
    other = await make_mock_api(seed=43)
    other_model = await other.create_model(await other.session(), seed=None)
    assert other_model != runs[0][0]  # ids depend on the seed


@pytest.mark.spec("FUT-1", "FUT-5", "LOSS-2", "LOSS-4", "LOSS-21", "LOSS-22")
async def test_forward_backward_protobuf_result(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.model()
    data = [datum(TOKENS), datum(TOKENS[:4], [0.5, 0.0, 2.0])]
    submitted = await api.forward_backward(model, 1, data)
    assert submitted["model_id"] == model
    output = await api.forward_output(submitted["request_id"])
    logprobs = [out["logprobs"].to_numpy() for out in output.loss_fn_outputs]
    assert [lp.shape for lp in logprobs] == [(7,), (3,)]
    assert all((lp < 0).all() for lp in logprobs)
    expected = -(logprobs[0].sum() + (logprobs[1] * np.array([0.5, 0.0, 2.0])).sum())
    assert output.metrics["loss:sum"] == pytest.approx(float(expected), rel=1e-6)
    assert all(key.count(":") == 1 for key in output.metrics)
    elementwise = output.loss_fn_outputs[1]["elementwise_loss"].to_numpy()
    np.testing.assert_array_equal(elementwise, -(logprobs[1] * np.array([0.5, 0, 2], np.float32)))


@pytest.mark.spec("LOSS-8", "OPT-6", "OPT-8")
async def test_forward_only_accumulates_nothing_and_optim_step_applies(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api()
    model = await api.model()
    start = api.digest(model)
    forward = await api.forward_backward(model, 1, [datum(TOKENS)], forward_only=True)
    await api.forward_output(forward["request_id"])
    skipped = await api.result((await api.optim_step(model, 2))["request_id"])
    assert skipped["metrics"]["optimizer_step:sum"] == 0.0  # no gradient: nothing to apply
    assert api.digest(model) == start
    fb = await api.forward_backward(model, 3, [datum(TOKENS)])
    await api.forward_output(fb["request_id"])
    stepped = await api.result((await api.optim_step(model, 4))["request_id"])
    assert stepped == {"type": "optim_step", "metrics": stepped["metrics"]}
    assert stepped["metrics"]["optimizer_step:sum"] == 1.0
    assert api.digest(model) != start


@pytest.mark.spec("OPT-2")
async def test_optim_params_alias_is_accepted(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.model()
    await api.forward_output((await api.forward_backward(model, 1, [datum(TOKENS)]))["request_id"])
    body = {"model_id": model, "seq_id": 2, "optim_params": {"learning_rate": 0.1}}
    result = await api.result((await api.post("optim_step", body))["request_id"])
    assert result["metrics"]["optimizer_step:sum"] == 1.0


@pytest.mark.spec("WIRE-8")
async def test_zstd_body_gives_the_same_result(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    plain_model, zstd_model = await api.model(), await api.model()
    plain = await api.forward_backward(plain_model, 1, [datum(TOKENS)])
    packed = await api.forward_backward(zstd_model, 1, [datum(TOKENS)], zstd=True)
    a = await api.forward_output(plain["request_id"])
    b = await api.forward_output(packed["request_id"])
    assert a.loss_fn_outputs == b.loss_fn_outputs and a.metrics == b.metrics
    record = [r for r in api.service.records.records() if r.request_id == packed["request_id"]]
    assert record[0].headers["content-encoding"] == "zstd"


@pytest.mark.spec("WIRE-5", "WIRE-6", "WIRE-7")
async def test_json_era_forward_and_forward_backward(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.model()
    json_datum = {
        "model_input": {"chunks": [{"type": "encoded_text", "tokens": TOKENS[:-1]}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": TOKENS[1:], "dtype": "int64", "shape": [7]},
            "weights": {"data": [1.0] * 7, "dtype": "float32", "shape": [7]},
        },
    }
    forward = await api.post(
        "forward",
        {
            "model_id": model,
            "seq_id": 1,
            "forward_input": {"data": [json_datum], "loss_fn": "cross_entropy"},
        },
    )
    result = await api.result(forward["request_id"])  # Accept: application/json
    assert result["loss_fn_output_type"] == "ArrayRecord"
    logprobs = result["loss_fn_outputs"][0]["logprobs"]
    assert logprobs["dtype"] == "float32" and len(logprobs["data"]) == 7
    proto = await api.forward_backward(model, 2, [datum(TOKENS)], forward_only=True)
    proto_out = await api.forward_output(proto["request_id"])
    assert proto_out.loss_fn_outputs[0]["logprobs"].data == logprobs["data"]
    body = {
        "model_id": model,
        "seq_id": 3,
        "forward_backward_input": {"data": [json_datum], "loss_fn": "cross_entropy"},
    }
    submitted = await api.post("forward_backward", body)
    assert "loss:sum" in (await api.result(submitted["request_id"]))["metrics"]


@pytest.mark.spec("CKPT-1", "CKPT-2", "CKPT-3", "CKPT-8")
async def test_save_and_load_weights_both_addressing_modes(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    model = await api.create_model(session)
    await api.forward_output((await api.forward_backward(model, 1, [datum(TOKENS)]))["request_id"])
    await api.result((await api.optim_step(model, 2))["request_id"])
    saved_digest = api.digest(model)
    saved = await api.post("save_weights", {"model_id": model, "path": "s1", "seq_id": 3})
    path = (await api.result(saved["request_id"]))["path"]
    assert path == f"tinker://{model}/weights/s1"
    # Move on, then load back into the same model (model_id + seq_id), with optimizer.
    await api.forward_output((await api.forward_backward(model, 4, [datum(TOKENS)]))["request_id"])
    await api.result((await api.optim_step(model, 5))["request_id"])
    assert api.digest(model) != saved_digest
    body = {"model_id": model, "seq_id": 6, "path": path, "optimizer": True}
    loaded = await api.result((await api.post("load_weights", body))["request_id"])
    assert loaded == {"type": "load_weights", "path": path, "model_id": model}
    assert api.digest(model) == saved_digest
    # Create-via-load: a new model at the session's next model_seq_id, seq 0 = the load.
    body = {"session_id": session, "model_seq_id": 1, "path": path, "optimizer": True}
    created = await api.post("load_weights", body)
    assert created["model_id"] == f"{session}:train:1"
    await api.result(created["request_id"])
    assert api.digest(f"{session}:train:1") == saved_digest
    info = await api.post("get_info", {"model_id": f"{session}:train:1"})
    assert info["model_data"]["model_name"] == TINY
    # Without optimizer state: same weights, fresh Adam moments.
    body = {"session_id": session, "model_seq_id": 2, "path": path, "optimizer": False}
    await api.result((await api.post("load_weights", body))["request_id"])
    models = api.service.ctx.registry.models
    fresh, original = models[f"{session}:train:2"].training, models[model].training
    assert fresh is not None and original is not None
    assert fresh.digest() == original.digest()  # same weights ...
    assert fresh.optimizer_state().tensors == {}  # ... and no Adam state


@pytest.mark.spec("CKPT-5", "SMP-2", "SMP-7", "FUT-5")
async def test_sampler_weights_sessions_and_samples(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    model = await api.create_model(session)
    named = await api.post(
        "save_weights_for_sampler", {"model_id": model, "path": "smp", "seq_id": 1}
    )
    path = (await api.result(named["request_id"]))["path"]
    assert path == f"tinker://{model}/sampler_weights/smp"
    body = {"session_id": session, "sampling_session_seq_id": 0, "model_path": path}
    sampler = (await api.post("create_sampling_session", body))["sampling_session_id"]
    info = await api.client.get(f"/api/v1/samplers/{sampler}", headers=api.headers())
    assert await info.json() == {"sampler_id": sampler, "base_model": TINY, "model_path": path}
    ephemeral = await api.post(
        "save_weights_for_sampler",
        {"model_id": model, "sampling_session_seq_id": 1, "seq_id": 2, "kind": "snapshot"},
    )
    ephemeral_id = (await api.result(ephemeral["request_id"]))["sampling_session_id"]
    assert ephemeral_id == f"{session}:sample:1"

    def three_samples(sampler_id: str) -> dict[str, object]:
        params = {"max_tokens": 5, "seed": 9, "temperature": 1.0, "stop": []}
        return {**sample_body(sampler_id, 0, [1, 2, 3], 3, **params), "prompt_logprobs": True}

    first = await api.post("asample", three_samples(sampler))
    assert first["sample_sequence_ids"] == [f"{sampler}:0:{i}" for i in range(3)]
    again = await api.post("asample", three_samples(ephemeral_id))
    a = await api.sample_output(first["request_id"])
    b = await api.sample_output(again["request_id"])
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]  # same weights
    assert all(len(s.tokens) == 5 and s.stop_reason == "length" for s in a.sequences)
    assert a.prompt_logprobs is not None and a.prompt_logprobs[0] is None
    # Prompt logprobs equal the training forward's logprobs on the same tokens.
    forward = await api.forward_backward(model, 3, [datum([1, 2, 3])], forward_only=True)
    training = (await api.forward_output(forward["request_id"])).loss_fn_outputs[0]["logprobs"]
    assert a.prompt_logprobs[1:] == training.data
    # A JSON-era client gets JSON.
    as_json = await api.result(first["request_id"])
    assert [s["tokens"] for s in as_json["sequences"]] == [s.tokens for s in a.sequences]


@pytest.mark.spec("SMP-1", "SMP-8")
async def test_base_model_sampler_and_join(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    body = {"session_id": session, "sampling_session_seq_id": 0, "base_model": TINY}
    sampler = (await api.post("create_sampling_session", body))["sampling_session_id"]
    assert sampler == f"{session}:sample:0"
    joined = await api.post("join_sampling_session", {"sampling_session_id": sampler})
    assert joined == {"type": "join_sampling_session", "client_counter": 1}
    sample = {
        "sampling_session_id": sampler,
        "seq_id": 0,
        "prompt": {"chunks": [{"tokens": [4, 5, 6, 7], "type": "encoded_text"}]},
        "sampling_params": {"max_tokens": 1},
        "prompt_logprobs": True,
        "target_prompt_logprobs": {
            "data": [5, 9],
            "dtype": "int64",
            "shape": [3, 2],
            "sparse_crow_indices": [0, 1, 1, 2],
            "sparse_col_indices": [0, 1],
        },
    }
    submitted = await api.post("asample", sample)
    output = await api.sample_output(submitted["request_id"])
    target = output.target_prompt_logprobs
    assert target is not None and target.is_sparse and target.dense_shape == (3, 2)
    assert output.prompt_logprobs is not None
    # Cell [0, 0] asks for token 5 at position 1 — which is the prompt's own next token.
    assert target.data[0] == pytest.approx(output.prompt_logprobs[1], abs=0)


@pytest.mark.spec("FUT-2")
async def test_retrieve_long_polls_then_answers_try_again(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api(long_poll_seconds=0.3, seq_gap_timeout_seconds=30)
    model = await api.model()
    # seq 2 waits for seq 1, which is never sent: the future stays pending.
    pending = await api.forward_backward(model, 2, [datum(TOKENS)])
    status, content_type, body = await api.poll(pending["request_id"])
    assert (status, content_type) == (200, "application/json")
    assert b'"type":"try_again"' in body and b'"queue_state":"active"' in body


async def _large_result_not_yet_announced(make_mock_api: MakeMockApi) -> tuple[MockApi, str]:
    """An app that announces results over 16 bytes with `complete_metadata`, and the request id
    of a finished forward_backward whose result it has not announced yet."""
    api = await make_mock_api(metadata_threshold_bytes=16)
    model = await api.model()
    submitted = await api.forward_backward(model, 1, [datum(TOKENS)])
    await api.forward_output(submitted["request_id"])  # waits until done
    api.service.ctx.futures.get(submitted["request_id"]).metadata_sent = False
    return api, submitted["request_id"]


@pytest.mark.spec("FUT-3")
async def test_complete_metadata_is_sent_once_for_large_results(
    make_mock_api: MakeMockApi,
) -> None:
    api, request_id = await _large_result_not_yet_announced(make_mock_api)
    status, _, body = await api.poll(request_id, PROTOBUF)
    assert status == 200 and b"complete_metadata" in body
    status, content_type, body = await api.poll(request_id, PROTOBUF)
    assert content_type == PROTOBUF  # never announced twice


@pytest.mark.spec("FUT-3")
async def test_complete_metadata_is_never_sent_to_a_poll_that_does_not_allow_it(
    make_mock_api: MakeMockApi,
) -> None:
    api, request_id = await _large_result_not_yet_announced(make_mock_api)
    status, content_type, _ = await api.poll(request_id, PROTOBUF, allow_metadata_only=False)
    assert (status, content_type) == (200, PROTOBUF)  # the payload, not an announcement


@pytest.mark.spec("SMP-3")
async def test_samples_without_a_seed_are_drawn_the_same_on_a_rerun_of_the_scenario(
    make_mock_api: MakeMockApi,
) -> None:
    async def draw(api: MockApi) -> list[list[int]]:
        session = await api.session()
        sampler = await api.sampler(session)
        tokens = []
        for seq_id in (0, 1):
            sample = sample_body(
                sampler, seq_id, [4, 5, 6], 2, max_tokens=8, temperature=1.0, stop=[]
            )
            output = await api.sample_output((await api.post("asample", sample))["request_id"])
            tokens += [s.tokens for s in output.sequences]
        return tokens

    first, rerun = await draw(await make_mock_api()), await draw(await make_mock_api())
    assert first == rerun
    assert first[:2] != first[2:]  # another seq_id, another derived seed


@pytest.mark.spec("FUT-4", "CKPT-6", "CKPT-7", "SEQ-8")
async def test_failed_future_is_request_failed_with_category(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.model()
    for seq_id in (1, 2):  # the second save of the same name fails in order, as a user error
        body = {"model_id": model, "path": "dup", "seq_id": seq_id}
        last = await api.post("save_weights", body)
    failure = await api.result(last["request_id"])
    assert failure["category"] == "user" and "already exists" in failure["error"]
    missing = {"model_id": model, "seq_id": 3, "path": f"tinker://{model}/weights/nope"}
    failure = await api.result((await api.post("load_weights", missing))["request_id"])
    assert failure["category"] == "user" and "no checkpoint" in failure["error"]
    after = await api.forward_backward(model, 4, [datum(TOKENS)])  # ids were consumed
    await api.forward_output(after["request_id"])


@pytest.mark.spec("FUT-8")
async def test_cancel_future(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.model()
    submitted = await api.forward_backward(model, 1, [datum(TOKENS)])
    assert await api.post("cancel_future", {"request_id": submitted["request_id"]}) == {}
    await api.forward_output(submitted["request_id"])  # training ops are not cancelled


@pytest.mark.spec("LOSS-15")
async def test_server_side_custom_loss(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    model = await api.create_model(session)
    graph = {
        "format": 1,
        "nodes": [
            {
                "op": "placeholder",
                "name": "logprobs",
                "target": "logprobs",
                "args": [],
                "kwargs": {},
            },
            {"op": "placeholder", "name": "weights", "target": "weights", "args": [], "kwargs": {}},
            {
                "op": "call_function",
                "name": "mul",
                "target": "operator.mul",
                "args": [{"ref": "logprobs"}, {"ref": "weights"}],
                "kwargs": {},
            },
            {
                "op": "call_method",
                "name": "sum_1",
                "target": "sum",
                "args": [{"ref": "mul"}],
                "kwargs": {},
            },
            {
                "op": "call_function",
                "name": "neg",
                "target": "operator.neg",
                "args": [{"ref": "sum_1"}],
                "kwargs": {},
            },
            {
                "op": "output",
                "name": "output",
                "target": "output",
                "args": [
                    {"tuple": [{"ref": "neg"}, {"dict": {"custom/neg_ll:sum": {"ref": "neg"}}}]}
                ],
                "kwargs": {},
            },
        ],
    }
    body = {
        "session_id": session,
        "custom_loss_seq_id": 0,
        "name": "neg_ll",
        "inputs": [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}],
        "graph": graph,
        "type": "create_custom_loss",
    }
    loss_id = (await api.result((await api.post("create_custom_loss", body))["request_id"]))[
        "loss_id"
    ]
    assert loss_id == f"{session}:loss:0"
    custom = await api.forward_backward(
        model, 1, [datum(TOKENS)], "custom", config={"loss_id": loss_id}
    )
    builtin = await api.forward_backward(model, 2, [datum(TOKENS)], forward_only=True)
    custom_out = await api.forward_output(custom["request_id"])
    builtin_out = await api.forward_output(builtin["request_id"])
    assert custom_out.metrics["loss:sum"] == builtin_out.metrics["loss:sum"]
    assert custom_out.metrics["custom/neg_ll:sum"] == pytest.approx(custom_out.metrics["loss:sum"])
    grads = {
        name: p.grad.clone()
        for name, p in api.service.ctx.registry.models[model].training.adapter.items()  # type: ignore[union-attr]
        if p.grad is not None
    }
    assert grads and all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.spec("WIRE-2")
async def test_jwt_mode(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api(client_config_overrides={"pjwt_auth_enabled": True})
    assert (await api.post("client/config", {}))["pjwt_auth_enabled"] is True
    token = (await api.post("auth/token", {}))["jwt"]
    assert token.startswith("eyJ") and token.count(".") == 2
    api.api_key = token
    assert (await api.session()).startswith("sess-")
    api.api_key = token[:-2] + ("AA" if not token.endswith("AA") else "BB")  # forged signature
    response = await api.client.post("/api/v1/create_session", json={}, headers=api.headers())
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_request_record_keeps_what_arrived(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.model()
    await api.forward_backward(
        model,
        1,
        [datum(TOKENS)],
        headers={"X-Conformance-Case": "case-7", "X-Idempotency-Key": "k1"},
    )
    response = await api.client.get("/_mock/requests?case=case-7", headers=api.headers())
    (record,) = (await response.json())["requests"]
    assert record["endpoint"] == "/api/v1/forward_backward" and record["seq_id"] == 1
    assert record["headers"]["x-idempotency-key"] == "k1"
    assert "x-api-key" not in record["headers"]
    assert record["body"]["data"][0]["loss_fn_inputs"]["weights"]["shape"] == [7]
    assert record["status"] == 200


@pytest.mark.spec("WIRE-6")
async def test_weights_info_and_json_era_forward_leniency(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.create_model(await api.session(), rank=3)
    saved = await api.post("save_weights", {"model_id": model, "path": "w", "seq_id": 1})
    path = (await api.result(saved["request_id"]))["path"]
    info = await api.post("weights_info", {"tinker_path": path})
    assert info == {
        "base_model": TINY,
        "is_lora": True,
        "lora_rank": 3,
        "train_unembed": True,
        "train_mlp": True,
        "train_attn": True,
    }
    missing = await api.post("weights_info", {"tinker_path": f"{path}-nope"}, status=404)
    assert missing["field"] == "tinker_path"
    # SDK 0.15's custom-loss forward sends the caller's datums unchanged to /forward.
    extra = {
        "model_input": {"chunks": [{"tokens": TOKENS[:-1]}]},  # no "type": 0.15 leaves it unset
        "loss_fn_inputs": {
            "target_tokens": {"data": TOKENS[1:], "dtype": "int64", "shape": [7]},
            "weights": {"data": [1.0] * 7, "dtype": "float32", "shape": [7]},
            "advantages": {"data": [0.5] * 7, "dtype": "float32", "shape": [7]},
        },
    }
    body = {
        "model_id": model,
        "seq_id": 2,
        "forward_input": {"data": [extra], "loss_fn": "cross_entropy", "loss_fn_config": None},
    }
    result = await api.result((await api.post("forward", body))["request_id"])
    assert len(result["loss_fn_outputs"][0]["logprobs"]["data"]) == 7
