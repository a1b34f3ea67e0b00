"""Raw-HTTP helpers for talking to the mock server the way an SDK does (used by HTTP tests).

`MockApi` wraps an aiohttp `TestClient` (in-process server) and offers the calls of the
workflow: JSON posts with the key header, protobuf forward/backward bodies encoded with
`tinker_ref.codec`, and `result()`, which polls `retrieve_future` like the SDK until the future
is no longer `try_again`. Tests reach the server's state (models, request records) through
`service`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import zstandard
from aiohttp.test_utils import TestClient

from mock_server.http import SERVICE_KEY
from mock_server.service import TinkerService
from tinker_ref.codec import (
    decode_forward_backward_output,
    decode_sample_response,
    encode_forward_backward_request,
)
from tinker_ref.types import Datum, ForwardBackwardOutput, SampleResponse

API_KEY = "tml-test"
PROTOBUF = "application/x-protobuf"
TINY = "tinker-ref/tiny-64"  # vocabulary 64: token ids 0..63


class ApiError(AssertionError):
    """An unexpected status; carries the body for the assertion message."""


class MockApi:
    def __init__(self, client: TestClient[Any, Any], api_key: str = API_KEY) -> None:
        self.client = client
        self.api_key = api_key

    @property
    def service(self) -> TinkerService:
        app = self.client.app
        if app is None:
            raise ApiError("the test client has no application")
        service: TinkerService = app[SERVICE_KEY]
        return service

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"X-API-Key": self.api_key, **(extra or {})}

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Any:
        """POST JSON (or raw `data`) to /api/v1/<path>; assert the status; return the JSON."""
        all_headers = self.headers(headers)
        if data is None:
            data = json.dumps(body if body is not None else {}).encode()
            all_headers.setdefault("Content-Type", "application/json")
        response = await self.client.post(f"/api/v1/{path}", data=data, headers=all_headers)
        text = await response.text()
        if response.status != status:
            raise ApiError(f"POST {path}: expected {status}, got {response.status}: {text}")
        return json.loads(text) if text else None

    async def session(self) -> str:
        body = await self.post("create_session", {"tags": [], "user_metadata": {}})
        return str(body["session_id"])

    async def create_model(
        self,
        session_id: str,
        model_seq_id: int = 0,
        base_model: str = TINY,
        rank: int = 4,
        seed: int | None = 11,
    ) -> str:
        lora: dict[str, Any] = {"rank": rank}
        if seed is not None:
            lora["seed"] = seed
        body = await self.post(
            "create_model",
            {
                "session_id": session_id,
                "model_seq_id": model_seq_id,
                "base_model": base_model,
                "lora_config": lora,
                "type": "create_model",
            },
        )
        result = await self.result(body["request_id"])
        return str(result["model_id"])

    async def sampler(self, session: str, base_model: str = TINY) -> str:
        """A new sampling session (seq 0) on `base_model` in `session`: its id."""
        body = {"session_id": session, "sampling_session_seq_id": 0, "base_model": base_model}
        return str((await self.post("create_sampling_session", body))["sampling_session_id"])

    async def model(self, base_model: str = TINY, seed: int | None = 11) -> str:
        return await self.create_model(await self.session(), base_model=base_model, seed=seed)

    async def forward_backward(
        self,
        model_id: str,
        seq_id: int,
        data: Sequence[Datum],
        loss_fn: str = "cross_entropy",
        forward_only: bool = False,
        config: Mapping[str, float | str] | None = None,
        *,
        status: int = 200,
        zstd: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        body = encode_forward_backward_request(
            model_id, seq_id, data, loss_fn, config, forward_only=forward_only
        )
        extra = {"Content-Type": PROTOBUF, **(headers or {})}
        if zstd:
            body = zstandard.ZstdCompressor().compress(body)
            extra["Content-Encoding"] = "zstd"
        return await self.post("forward_backward", data=body, status=status, headers=extra)

    async def optim_step(
        self, model_id: str, seq_id: int, learning_rate: float = 1e-2, status: int = 200
    ) -> Any:
        adam = {
            "learning_rate": learning_rate,
            "beta1": 0.9,
            "beta2": 0.95,
            "eps": 1e-12,
            "weight_decay": 0.0,
            "grad_clip_norm": 0.0,
        }
        return await self.post(
            "optim_step",
            {"model_id": model_id, "seq_id": seq_id, "adam_params": adam, "type": "optim_step"},
            status=status,
        )

    async def poll(
        self, request_id: str, accept: str = "application/json", allow_metadata_only: bool = True
    ) -> tuple[int, str, bytes]:
        """One retrieve_future call: (status, content type, body)."""
        response = await self.client.post(
            "/api/v1/retrieve_future",
            json={"request_id": request_id, "allow_metadata_only": allow_metadata_only},
            headers=self.headers({"Accept": accept}),
        )
        return response.status, response.content_type, await response.read()

    async def result(self, request_id: str, accept: str = "application/json") -> Any:
        """Poll until done like the SDK; JSON results as dicts, protobuf ones as bytes."""
        allow_metadata_only = True
        for _ in range(100):
            status, content_type, body = await self.poll(request_id, accept, allow_metadata_only)
            if status != 200:
                raise ApiError(f"retrieve_future {request_id}: {status} {body!r}")
            if content_type == PROTOBUF:
                return body
            value = json.loads(body)
            if value.get("type") == "try_again":
                continue
            if value.get("status") == "complete_metadata":
                allow_metadata_only = False
                continue
            return value
        raise ApiError(f"future {request_id} never finished")

    async def forward_output(self, request_id: str) -> ForwardBackwardOutput:
        body = await self.result(request_id, accept=PROTOBUF)
        if not isinstance(body, bytes):
            raise ApiError(f"expected a protobuf result, got {body!r}")
        return decode_forward_backward_output(body)

    async def sample_output(self, request_id: str) -> SampleResponse:
        body = await self.result(request_id, accept=PROTOBUF)
        if not isinstance(body, bytes):
            raise ApiError(f"expected a protobuf result, got {body!r}")
        return decode_sample_response(body)

    def digest(self, model_id: str) -> str:
        training = self.service.ctx.registry.models[model_id].training
        if training is None:
            raise ApiError(f"model {model_id} has no weights")
        return training.digest(include_optimizer=True)


# The `make_mock_api` fixture (tests/support/fixtures.py): `await make_mock_api(**overrides)`
# starts a fresh in-process app with `ServerConfig` overrides (plus `api_key=` for the client).
MakeMockApi = Callable[..., Awaitable[MockApi]]


def sample_body(
    sampler_id: str, seq_id: int, tokens: Sequence[int], num_samples: int, **params: Any
) -> dict[str, Any]:
    """An `asample` body: `num_samples` samples of the prompt `tokens` with sampling `params`."""
    return {
        "sampling_session_id": sampler_id,
        "seq_id": seq_id,
        "num_samples": num_samples,
        "prompt": {"chunks": [{"tokens": list(tokens), "type": "encoded_text"}]},
        "sampling_params": params,
    }


async def alice_and_bob(
    make_mock_api: MakeMockApi, keys_file: Path, keys: str = "tml-alice\ntml-bob\n"
) -> tuple[MockApi, MockApi]:
    """A fresh app that admits the keys listed in `keys_file` (written with `keys`), and a
    client for each of the keys `tml-alice` and `tml-bob`."""
    keys_file.write_text(keys)
    alice = await make_mock_api(api_keys_file=keys_file, api_key="tml-alice")
    return alice, MockApi(alice.client, "tml-bob")


async def assert_endpoint_served(
    api: MockApi, method: str, path: str, headers: Mapping[str, str] | None = None
) -> None:
    """`method /api/v1/<path>` (with a `{}` body for POST and PUT) reaches a handler: no 405
    and not the catch-all's "no endpoint", whatever the handler makes of the empty body."""
    response = await api.client.request(
        method,
        f"/api/v1/{path}",
        data=b"{}" if method in ("POST", "PUT") else None,
        headers=api.headers(headers),
    )
    body = await response.json() if response.status != 204 else {}
    assert response.status != 405 and "no endpoint" not in body.get("detail", ""), body
