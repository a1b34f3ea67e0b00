"""Hostile input to every endpoint: never a 500, never a dead server, no model changed.

Every route the HTTP app registers (enumerated from its router, so a new endpoint is fuzzed
without editing this file) gets hypothesis-generated requests: random bytes, random JSON, a
plausible body for that endpoint with one field replaced by a hostile value (wrong type,
+-2**80, NaN/Infinity, unicode, 100 kB strings, nesting) or removed, protobuf that is random,
truncated or built from hostile datums, garbage zstd, odd content types, hostile path
parameters. Ids in plausible bodies come from a pool that holds the *real* ids of a trained
model, its session, a sampler and a checkpoint, so input reaches the service, not just the
parser. Plausible training bodies carry a seq_id far past the model's position: if one happens
to be valid it is buffered, never run, so any change of the victims' digests is a bug.

The server journals (crash safety on), so everything accepted must also be journalable; after
the fuzzing a restart on the same data directory replays the journal with no divergence and the
same digests. `FUZZ_EXAMPLES` inputs per strategy; the total sent is printed (run with -s).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tinker_ref
from mock_server.embedded import EmbeddedServer, serve
from mock_server.http import create_app
from mock_server.service import ServerConfig
from mock_server.service.ids import IdMinter
from tests.reliability.runs import ADAM, BASE_MODEL, batch
from tests.support.profiles import examples
from tests.support.strategies import datums
from tinker_ref import types
from tinker_ref.codec import encode_forward_backward_request

pytestmark = pytest.mark.spec("WIRE-13", "WIRE-14")

# Per strategy below (x5); HYPOTHESIS_PROFILE=ci is the deep run (profiles: tests/conftest.py).
FUZZ_EXAMPLES = examples(200, ci=1000)
FAR_SEQ = 1_000_000  # a seq_id no victim will reach: a body that happens to be valid is buffered
API_KEY = "tml-fuzzer"


# ----- the victims -----


class Target:
    """A live server with a trained model, a sampler and a checkpoint; an HTTP connection."""

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        split = urlsplit(server.url)
        self._address = (split.hostname or "127.0.0.1", split.port or 80)
        self._connection: http.client.HTTPConnection | None = None
        self.sent = 0
        self.statuses: dict[int, int] = {}

    def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(*self._address, timeout=30)
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                payload = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server may close a connection after a 4xx with an unread body; a second
                # failure on a fresh connection is a dead or broken server.
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                self._connection.close()
                self._connection = None
            break
        self.sent += 1
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        return response.status, payload

    def digests(self, model_ids: list[str]) -> dict[str, str]:
        models = self.server.service.ctx.registry.models

        def read() -> dict[str, str]:
            return {m: models[m].training.digest(include_optimizer=True) for m in model_ids}  # type: ignore[union-attr]

        result: dict[str, str] = self.server.call(read)
        return result


@pytest.fixture(scope="module")
def victims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    with serve(data_dir=data_dir, journal=True, long_poll_seconds=1.0) as server:
        client = tinker_ref.ServiceClient(base_url=server.url, api_key=API_KEY)
        try:
            training = client.create_lora_training_client(base_model=BASE_MODEL, rank=4, seed=5)
            training = training.result(timeout=60)
            training.forward_backward(batch(0), "cross_entropy").result(timeout=60)
            training.optim_step(ADAM).result(timeout=60)
            checkpoint = training.save_state("victim").result(timeout=60).path
            sampler = training.save_weights_and_get_sampling_client()
            minter = IdMinter(0)
            ids = {
                "model": training.model_id,
                "session": training.model_id.split(":")[0],
                "sampler": sampler.sampling_session_id,
                "checkpoint": checkpoint,
                "requests": [minter.request_id() for _ in range(8)],
            }
            target = Target(server)
            before = target.digests([training.model_id])
            yield {"target": target, "ids": ids, "before": before, "data_dir": data_dir}
        finally:
            client.close()


# ----- what gets sent -----


def _routes() -> list[tuple[str, str]]:
    app = create_app(ServerConfig(port=0))
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method in ("GET", "POST"):
            routes.add((route.method, path))
    return sorted(routes)


ROUTES = _routes()

hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.sampled_from([-1, 0, 2**31, 2**63, -(2**63) - 1, 10**30]),
    st.floats(),  # includes NaN and +-inf: json.dumps writes NaN / Infinity tokens
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "../../etc/passwd", "tinker://../..", "\ud800", "x" * 100_000]),
)
hostile_json = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


def _templates(ids: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Plausible bodies per endpoint (the path after /api/v1/), with real ids."""
    model, session, sampler = ids["model"], ids["session"], ids["sampler"]
    adam = {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8}
    prompt = {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]}
    datum = {
        "model_input": prompt,
        "loss_fn_inputs": {"target_tokens": {"data": [2, 3, 4], "dtype": "int64"}},
    }
    return {
        "create_session": {"tags": ["t"], "user_metadata": {"k": "v"}, "sdk_version": "0.38.0"},
        "session_heartbeat": {"session_id": session, "type": "session_heartbeat"},
        "create_model": {
            "session_id": session,
            "model_seq_id": FAR_SEQ,
            "base_model": BASE_MODEL,
            "lora_config": {"rank": 4},
        },
        "get_info": {"model_id": model},
        "forward": {"model_id": model, "seq_id": FAR_SEQ, "forward_input": {"data": [datum]}},
        "forward_backward": {
            "model_id": model,
            "seq_id": FAR_SEQ,
            "forward_backward_input": {"data": [datum], "loss_fn": "cross_entropy"},
        },
        "optim_step": {"model_id": model, "seq_id": FAR_SEQ, "adam_params": adam},
        "save_weights": {"model_id": model, "seq_id": FAR_SEQ, "path": "fuzzed"},
        "save_weights_for_sampler": {"model_id": model, "seq_id": FAR_SEQ, "path": "fuzzed"},
        "load_weights": {"model_id": model, "seq_id": FAR_SEQ, "path": ids["checkpoint"]},
        "weights_info": {"tinker_path": ids["checkpoint"]},
        "create_custom_loss": {
            "session_id": session,
            "custom_loss_seq_id": FAR_SEQ,
            "name": "fuzz",
            "inputs": [{"name": "logprobs", "rank": 1}],
            "graph": {"format": 1, "nodes": []},
        },
        "create_sampling_session": {
            "session_id": session,
            "sampling_session_seq_id": FAR_SEQ,
            "model_path": ids["checkpoint"],
        },
        "join_sampling_session": {"sampling_session_id": sampler},
        "asample": {
            "sampling_session_id": sampler,
            "seq_id": FAR_SEQ,
            "prompt": prompt,
            "num_samples": 1,
            "sampling_params": {"max_tokens": 2, "seed": 1},
        },
        "retrieve_future": {"request_id": ids["requests"][0], "allow_metadata_only": True},
        "cancel_future": {"request_id": ids["requests"][1]},
        "client/config": {"sdk_version": "0.38.0"},
        "telemetry": {"events": [], "session_id": session},
    }


def _fill(path: str, value: str) -> str:
    return path.replace("{session_id}", quote(value, safe="")).replace(
        "{sampler_id}", quote(value, safe="")
    )


def _send_json(target: Target, method: str, path: str, body: bytes, ctype: str) -> int:
    headers = {"X-API-Key": API_KEY, "Content-Type": ctype}
    status, payload = target.request(method, path, body if method == "POST" else b"", headers)
    assert status < 500, f"{method} {path} {body[:300]!r} -> {status} {payload[:500]!r}"
    return status


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", errors="surrogatepass")


SLOW = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SLOW
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=300), path_value=st.text(max_size=20))
def test_random_bytes_to_every_route(
    victims: dict[str, Any], route: tuple[str, str], body: bytes, path_value: str
) -> None:
    method, path = route
    ctype = "application/x-protobuf" if path.endswith("forward_backward") else "application/json"
    _send_json(victims["target"], method, _fill(path, path_value or "x"), body, ctype)


@SLOW
@given(route=st.sampled_from(ROUTES), value=hostile_json)
@example(route=("POST", "/api/v1/optim_step"), value=[2**63])  # beyond int64: was a 500
def test_random_json_to_every_route(
    victims: dict[str, Any], route: tuple[str, str], value: Any
) -> None:
    method, path = route
    _send_json(victims["target"], method, _fill(path, "s"), _dumps(value), "application/json")


@SLOW
@given(data=st.data())
def test_plausible_bodies_with_one_hostile_field(victims: dict[str, Any], data: Any) -> None:
    templates = _templates(victims["ids"])
    endpoint = data.draw(st.sampled_from(sorted(templates)))
    body = json.loads(json.dumps(templates[endpoint]))
    # Walk to a random field (nested objects included) and replace or delete it.
    holder: Any = body
    while True:
        key = data.draw(st.sampled_from(sorted(holder)))
        if isinstance(holder[key], dict) and holder[key] and data.draw(st.booleans()):
            holder = holder[key]
            continue
        break
    if data.draw(st.integers(0, 4)) == 0:
        del holder[key]
    else:
        holder[key] = data.draw(hostile_json)
    _send_json(victims["target"], "POST", f"/api/v1/{endpoint}", _dumps(body), "application/json")


@SLOW
@given(
    data=st.lists(datums(with_spans=False), min_size=1, max_size=3),
    loss_fn=st.sampled_from(["cross_entropy", "importance_sampling", "ppo", "custom", "", "∑"]),
    config=st.dictionaries(st.text(max_size=8), st.floats() | st.text(max_size=8), max_size=3),
    seq_id=st.sampled_from([FAR_SEQ, FAR_SEQ + 1, 0, -1, 2**31 - 1]),
    forward_only=st.booleans(),
    cut=st.integers(0, 400),
    compress=st.sampled_from(["none", "zstd", "garbage-zstd"]),
)
def test_hostile_protobuf_forward_backward(
    victims: dict[str, Any],
    data: list[types.Datum],
    loss_fn: str,
    config: dict[str, Any],
    seq_id: int,
    forward_only: bool,
    cut: int,
    compress: str,
) -> None:
    """Datums with any tensors (wrong dtypes, ranks, out-of-vocabulary tokens, NaN weights),
    any loss and config, truncated or not, zstd-compressed, or not zstd at all."""
    body = encode_forward_backward_request(
        victims["ids"]["model"], seq_id, data, loss_fn, config, forward_only=forward_only
    )
    if cut:
        body = body[: len(body) * cut // 400]
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/x-protobuf"}
    if compress != "none":
        headers["Content-Encoding"] = "zstd"
        body = zstandard.ZstdCompressor().compress(body) if compress == "zstd" else body
    target = victims["target"]
    status, payload = target.request("POST", "/api/v1/forward_backward", body, headers)
    assert status < 500, f"-> {status} {payload[:500]!r}"


@SLOW
@given(
    route=st.sampled_from(ROUTES),
    content_type=st.sampled_from(
        [
            "",
            "text/plain",
            "application/json; charset=latin-1",
            "application/x-protobuf",
            "∑/∑".encode().decode("latin-1"),
        ]
    ),
    encoding=st.sampled_from(["", "gzip", "zstd", "br", "zstd, zstd", "identity"]),
    body=st.binary(max_size=64),
)
def test_odd_content_types_and_encodings(
    victims: dict[str, Any], route: tuple[str, str], content_type: str, encoding: str, body: bytes
) -> None:
    method, path = route
    headers = {"X-API-Key": API_KEY, "Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    status, payload = victims["target"].request(
        method, _fill(path, "x"), body if method == "POST" else b"", headers
    )
    assert status < 500, f"{method} {path} -> {status} {payload[:500]!r}"


def test_inputs_the_fuzzing_found_are_refused_with_a_4xx(victims: dict[str, Any]) -> None:
    """Regressions: a JSON-escaped lone surrogate (valid JSON, not encodable text) reached the
    fingerprint and answered 500; an image chunk without expected_tokens broke the request
    record's summary before the service could refuse it."""
    target: Target = victims["target"]
    model = victims["ids"]["model"]
    body = b'{"model_id": "%s", "seq_id": %d, "path": "\\ud800"}' % (model.encode(), FAR_SEQ)
    assert _send_json(target, "POST", "/api/v1/load_weights", body, "application/json") == 400
    image = types.ModelInput([types.ImageChunk(data=b"\x89PNG", format="png")])
    datum = types.Datum(model_input=image, loss_fn_inputs={"target_tokens": [1]})
    raw = encode_forward_backward_request(model, FAR_SEQ, [datum], "cross_entropy")
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/x-protobuf"}
    status, payload = target.request("POST", "/api/v1/forward_backward", raw, headers)
    assert 400 <= status < 500, payload


def test_after_the_fuzzing_the_server_lives_the_victims_are_unchanged_and_the_journal_replays(
    victims: dict[str, Any],
) -> None:
    """Runs after the fuzz tests above (file order); holds whichever of them ran."""
    target: Target = victims["target"]
    status, _ = target.request("GET", "/api/v1/healthz", b"", {})
    assert status == 200
    assert target.digests(list(victims["before"])) == victims["before"]
    print(f"\nfuzz: {target.sent} requests, statuses {dict(sorted(target.statuses.items()))}")
    with serve(data_dir=victims["data_dir"], journal=True) as replayed:
        recovery = replayed.service.recovery
        assert recovery is not None and recovery.mismatches == 0, recovery
        again = Target(replayed).digests(list(victims["before"]))
        assert again == victims["before"]
