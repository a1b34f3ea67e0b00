"""Every error class of the HTTP front end: its status, a JSON body naming the field, a
Content-Length, and no change to any model (checked with `TrainingModel.digest`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.support.http_api import PROTOBUF, TINY, MakeMockApi, MockApi, alice_and_bob
from tests.support.training import datum
from tinker_ref.codec import encode_forward_backward_request

pytestmark = pytest.mark.asyncio

TOKENS = [1, 5, 9, 12, 3, 7]


async def raw_post(
    api: MockApi, path: str, data: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = await api.client.post(f"/api/v1/{path}", data=data, headers=headers)
    assert response.headers.get("Content-Length") not in (None, "0")  # never a bare 4xx
    return response.status, await response.json(), dict(response.headers)


async def trained_model(api: MockApi) -> str:
    """A model with one step taken and one gradient pending: state worth protecting."""
    model = await api.model()
    await api.forward_output((await api.forward_backward(model, 1, [datum(TOKENS)]))["request_id"])
    await api.result((await api.optim_step(model, 2))["request_id"])
    await api.forward_output((await api.forward_backward(model, 3, [datum(TOKENS)]))["request_id"])
    return model


async def assert_next_seq_runs(api: MockApi, model: str, seq_id: int) -> None:
    """The rejected op consumed its seq_id: the next one runs (its future finishes)."""
    submitted = await api.forward_backward(model, seq_id, [datum(TOKENS)], forward_only=True)
    await api.forward_output(submitted["request_id"])


# ----- 400 -----


@pytest.mark.spec("WIRE-13", "WIRE-14")
async def test_400_malformed_protobuf_names_the_message(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await trained_model(api)
    before = api.digest(model)
    status, body, _ = await raw_post(
        api, "forward_backward", b"\xff\xff\xff", api.headers({"Content-Type": PROTOBUF})
    )
    assert status == 400 and body["field"] == "ForwardBackwardRequest"
    assert "not a valid protobuf" in body["detail"]
    assert api.digest(model) == before


@pytest.mark.spec("WIRE-13")
async def test_400_missing_json_field_and_bad_json(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    body = await api.post("create_model", {"session_id": session, "model_seq_id": 0}, status=400)
    assert body == {"detail": "required field is missing", "field": "base_model"}
    body = await api.post(
        "create_model",
        {"session_id": session, "model_seq_id": "zero", "base_model": TINY},
        status=400,
    )
    assert body["field"] == "model_seq_id" and "expected an integer" in body["detail"]
    status, body, _ = await raw_post(
        api, "create_session", b"{not json", api.headers({"Content-Type": "application/json"})
    )
    assert status == 400 and body["field"] == "body" and "not valid JSON" in body["detail"]


@pytest.mark.spec("SEQ-4")
async def test_400_seq_id_zero_is_reserved_for_creation(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await trained_model(api)
    before = api.digest(model)
    body = await api.forward_backward(model, 0, [datum(TOKENS)], status=400)
    assert body["field"] == "seq_id" and "creation" in body["detail"]
    assert api.digest(model) == before


# ----- 401 / 403 -----


@pytest.mark.spec("WIRE-2", "WIRE-13")
async def test_401_without_or_with_a_malformed_key(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    status, body, headers = await raw_post(api, "create_session", b"{}", {})
    assert (status, body["field"]) == (401, "X-API-Key")
    assert headers["WWW-Authenticate"] == "Bearer"
    status, body, _ = await raw_post(api, "create_session", b"{}", {"x-api-key": "sk-nope"})
    assert status == 401 and "tml-" in body["detail"]


@pytest.mark.spec("WIRE-2")
async def test_api_keys_file_admits_listed_keys_and_isolates_sessions(
    make_mock_api: MakeMockApi, tmp_path: Path
) -> None:
    keys = "# team keys\ntml-alice\ntml-bob  # second\n"
    alice, bob = await alice_and_bob(make_mock_api, tmp_path / "keys.txt", keys)
    mallory = MockApi(alice.client, "tml-mallory")
    await mallory.post("create_session", {}, status=401)
    model = await trained_model(alice)
    before = alice.digest(model)
    # Another key's ids answer 404 like missing ones (a 403 would confirm they exist).
    body = await bob.forward_backward(model, 4, [datum(TOKENS)], status=404)
    assert body["field"] == "model_id" and body["detail"] == f"no model {model!r}"
    session = model.split(":")[0]
    create = {"session_id": session, "model_seq_id": 1, "base_model": TINY}
    await bob.post("create_model", create, status=404)
    assert alice.digest(model) == before
    request_id = (await alice.forward_backward(model, 4, [datum(TOKENS)]))["request_id"]
    body = await bob.post("retrieve_future", {"request_id": request_id}, status=404)
    assert body["field"] == "request_id"
    assert (await bob.session()) != session  # bob works in his own session


# ----- 404 -----


@pytest.mark.spec("WIRE-13", "FUT-7")
async def test_404_unknown_model_session_future_sampler_and_route(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api()
    body = await api.forward_backward("sess-x:train:0", 1, [datum(TOKENS)], status=404)
    assert body["field"] == "model_id" and "sess-x:train:0" in body["detail"]
    body = await api.post(
        "create_model", {"session_id": "sess-x", "model_seq_id": 0, "base_model": TINY}, status=404
    )
    assert body["field"] == "session_id"
    body = await api.post("retrieve_future", {"request_id": "req-nope"}, status=404)
    assert body["field"] == "request_id"
    response = await api.client.get("/api/v1/samplers/nope", headers=api.headers())
    assert response.status == 404 and (await response.json())["field"] == "sampler_id"
    body = await api.post("no_such_endpoint", {}, status=404)
    assert "no endpoint" in body["detail"]


# ----- 409 -----


@pytest.mark.spec("SEQ-7", "WIRE-13")
async def test_409_same_seq_id_with_a_different_body(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await trained_model(api)
    await api.forward_output((await api.forward_backward(model, 4, [datum(TOKENS)]))["request_id"])
    before = api.digest(model)
    status, body, headers = await raw_post(
        api,
        "forward_backward",
        encode_forward_backward_request(model, 4, [datum([2, 3, 4])], "cross_entropy"),
        api.headers({"Content-Type": PROTOBUF}),
    )
    assert status == 409 and body["field"] == "seq_id" and "different request" in body["detail"]
    assert headers["x-should-retry"] == "false"  # the SDK must not resend a conflict
    assert api.digest(model) == before


# ----- 410 -----


@pytest.mark.spec("FUT-7")
async def test_410_expired_future(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api(result_grace_seconds=0.01)
    model = await api.model()
    request_id = (await api.optim_step(model, 1))["request_id"]
    await api.result(request_id)
    api.service.ctx.futures.get(request_id).retrieved_at = -1e9  # long ago
    api.service.ctx.futures.sweep(force=True)
    body = await api.post("retrieve_future", {"request_id": request_id}, status=410)
    assert body["field"] == "request_id" and "expired" in body["detail"]


# ----- 413 -----


@pytest.mark.spec("WIRE-13")
async def test_413_oversized_body(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api(max_body_bytes=2000)
    model = await api.model()
    before = api.digest(model)
    big = [datum([1, 2, 3] * 200)]
    body = await api.forward_backward(model, 1, big, status=413)
    assert body["field"] == "body" and "2000-byte limit" in body["detail"]
    assert api.digest(model) == before


@pytest.mark.spec("WIRE-13")
async def test_413_zstd_bomb(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api(max_decompressed_bytes=1_000_000)
    model = await api.model()
    before = api.digest(model)
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * 50_000_000)
    assert len(bomb) < 10_000
    status, body, _ = await raw_post(
        api,
        "forward_backward",
        bomb,
        api.headers({"Content-Type": PROTOBUF, "Content-Encoding": "zstd"}),
    )
    assert status == 413 and "decompresses to more than" in body["detail"]
    assert api.digest(model) == before


# ----- 415 -----


@pytest.mark.spec("WIRE-5", "WIRE-13")
async def test_415_wrong_content_type_or_encoding(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    model = await api.model()
    payload = encode_forward_backward_request(model, 1, [datum(TOKENS)], "cross_entropy")
    status, body, _ = await raw_post(
        api, "forward_backward", payload, api.headers({"Content-Type": "text/plain"})
    )
    assert status == 415 and body["field"] == "Content-Type" and "text/plain" in body["detail"]
    status, body, _ = await raw_post(
        api,
        "forward_backward",
        payload,
        api.headers({"Content-Type": PROTOBUF, "Content-Encoding": "br"}),
    )
    assert status == 415 and body["field"] == "Content-Encoding"
    status, body, _ = await raw_post(
        api, "optim_step", b"{}", api.headers({"Content-Type": PROTOBUF})
    )
    assert status == 415


# ----- 422 -----


@pytest.mark.spec("SEQ-6", "LOSS-17", "LOSS-19", "WIRE-14")
@pytest.mark.parametrize(
    ("data", "loss_fn", "field", "detail"),
    [
        ([datum([99, 1, 2])], "cross_entropy", "data[0].model_input", "outside the vocabulary"),
        (
            [datum([1, 2, 99])],
            "cross_entropy",
            "data[0].loss_fn_inputs.target_tokens",
            "outside the vocabulary",
        ),
        ([datum(TOKENS)], "no_such_loss", "loss_fn", "unknown loss"),
        (
            [datum(TOKENS, [1.0, 1.0])],
            "cross_entropy",
            "data[0].loss_fn_inputs.weights",
            "expected shape [5]",
        ),
        ([datum(TOKENS)], "ppo", "data[0].loss_fn_inputs.weights", "does not take this input"),
        ([], "cross_entropy", "data", "at least one datum"),
    ],
)
async def test_422_invalid_forward_backward_consumes_seq_and_changes_nothing(
    make_mock_api: MakeMockApi, data: list[Any], loss_fn: str, field: str, detail: str
) -> None:
    api = await make_mock_api()
    model = await trained_model(api)
    before = api.digest(model)
    body = await api.forward_backward(model, 4, data, loss_fn, status=422)
    assert body["field"] == field and detail in body["detail"]
    assert api.digest(model) == before
    retry = await api.forward_backward(model, 4, data, loss_fn, status=422)
    assert retry == body  # a retry of a rejected op gets the same answer
    await assert_next_seq_runs(api, model, 5)
    assert api.digest(model) == before


@pytest.mark.spec("OPT-7", "CKPT-9", "SEQ-6")
async def test_422_other_invalid_requests(make_mock_api: MakeMockApi) -> None:
    api = await make_mock_api()
    session = await api.session()
    body = await api.post(
        "create_model",
        {"session_id": session, "model_seq_id": 0, "base_model": "nope/model"},
        status=422,
    )
    assert body["field"] == "base_model" and "tinker-ref/tiny-64" in body["detail"]
    model = await trained_model(api)
    before = api.digest(model)
    body = await api.optim_step(model, 4, learning_rate=-1.0, status=422)
    assert body["field"] == "adam_params.learning_rate"
    body = await api.post(
        "save_weights", {"model_id": model, "path": "../../etc", "seq_id": 5}, status=422
    )
    assert body["field"] == "path" and "no path separators" in body["detail"]
    body = await api.post(
        "load_weights",
        {"model_id": model, "seq_id": 6, "path": "tinker://../x/weights/a", "optimizer": False},
        status=422,
    )
    assert body["field"] == "path"
    assert api.digest(model) == before
    await assert_next_seq_runs(api, model, 7)


# ----- every rejection consumes a readable seq_id, whatever layer rejects it -----


def _malformed_bodies(model: str) -> dict[str, tuple[str, bytes, str, str]]:
    """layer -> (endpoint, raw body, content type, the field the 400 names), all at seq_id 4."""
    adam = {"learning_rate": "fast", "beta1": 0.9, "beta2": 0.95, "eps": 1e-12}
    valid = encode_forward_backward_request(model, 4, [datum(TOKENS)], "cross_entropy")
    return {
        # the JSON parser: a field of the wrong JSON type
        "json field type": (
            "optim_step",
            json.dumps({"model_id": model, "seq_id": 4, "adam_params": adam}).encode(),
            "application/json",
            "adam_params.learning_rate",
        ),
        # the JSON parser: a required field missing
        "json missing field": (
            "save_weights",
            json.dumps({"model_id": model, "seq_id": 4}).encode(),
            "application/json",
            "path",
        ),
        # the JSON-era forward_backward codec: datums that are not datums
        "json-era datums": (
            "forward_backward",
            json.dumps(
                {
                    "model_id": model,
                    "seq_id": 4,
                    "forward_backward_input": {"loss_fn": "cross_entropy", "data": [7]},
                }
            ).encode(),
            "application/json",
            "data[0]",
        ),
        # the protobuf codec: model_id and seq_id intact, then a truncated datum
        "protobuf body": ("forward_backward", valid + b"\x1a\x05\x0a", PROTOBUF, ""),
        # the service, after parsing: neither a name nor a sampling session
        "service": (
            "save_weights_for_sampler",
            json.dumps({"model_id": model, "seq_id": 4}).encode(),
            "application/json",
            "path",
        ),
    }


@pytest.mark.spec("SEQ-6")
@pytest.mark.parametrize(
    "layer",
    ["json field type", "json missing field", "json-era datums", "protobuf body", "service"],
)
async def test_a_malformed_request_with_readable_ids_consumes_its_seq_id(
    make_mock_api: MakeMockApi, layer: str
) -> None:
    api = await make_mock_api()
    model = await trained_model(api)
    before = api.digest(model)
    endpoint, raw, content_type, field = _malformed_bodies(model)[layer]
    headers = api.headers({"Content-Type": content_type})
    status, body, _ = await raw_post(api, endpoint, raw, headers)
    assert status == 400 and body["field"].startswith(field), body
    assert (await raw_post(api, endpoint, raw, headers))[:2] == (400, body)  # a retry: same answer
    # Without the seq_id consumed, seq_id 5 would wait behind 4 and fail after the gap timeout.
    await assert_next_seq_runs(api, model, 5)
    assert api.digest(model) == before
    # The consumed id is not reusable by another op.
    body = await api.forward_backward(model, 4, [datum(TOKENS)], forward_only=True, status=409)
    assert body["field"] == "seq_id"


@pytest.mark.spec("SEQ-6")
async def test_a_malformed_request_without_readable_ids_consumes_nothing(
    make_mock_api: MakeMockApi,
) -> None:
    api = await make_mock_api()
    model = await trained_model(api)
    headers = api.headers({"Content-Type": "application/json"})
    no_seq = json.dumps({"model_id": model, "seq_id": "four", "adam_params": {}}).encode()
    assert (await raw_post(api, "optim_step", no_seq, headers))[0] == 400
    assert (await raw_post(api, "optim_step", b"{not json", headers))[0] == 400
    await assert_next_seq_runs(api, model, 4)  # seq_id 4 was still free
