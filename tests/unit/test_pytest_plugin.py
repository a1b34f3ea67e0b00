"""The pytest plugin's fixtures and `MockServer` helpers, used as an outside test suite would:
through the installed `pytest11` entry point, with the reference client doing the training.

`tinker_mock_session` is exercised by tests/fixture_project (in its own pytest process): used
here it would leave TINKER_BASE_URL set for every later test of this suite."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import urllib.request

import pytest

import tinker_ref.mock
from mock_server.testing import MockServer
from tests.support.training import datum
from tinker_ref import ServiceClient, errors, types

BASE_MODEL = "tinker-ref/tiny-bytes"
TEXT = b"offline tests need a faithful backend"


def train(mock: MockServer, steps: int) -> str:
    """`steps` cross-entropy steps on one sentence; returns the model id."""
    with ServiceClient(base_url=mock.url, api_key=mock.api_key) as service:
        training = service.create_lora_training_client(BASE_MODEL, rank=4, seed=0)
        for _ in range(steps):
            training.forward_backward([datum(TEXT)], "cross_entropy").result()
            training.optim_step(types.AdamParams(learning_rate=5e-2)).result()
        return training.model_id


def test_the_plugin_is_registered_under_the_pytest11_entry_point() -> None:
    plugins = {e.name: e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("tinker_mock") == "mock_server.pytest_plugin"


def test_tinker_mock_points_the_sdk_variables_at_a_live_server(tinker_mock: MockServer) -> None:
    assert os.environ["TINKER_BASE_URL"] == tinker_mock.url
    assert os.environ["TINKER_API_KEY"] == tinker_mock.api_key
    assert tinker_mock.api_key.startswith("tml-")  # the official SDK refuses other keys
    with urllib.request.urlopen(f"{tinker_mock.url}/_mock/requests", timeout=10) as answer:
        assert answer.status == 200
        assert isinstance(json.load(answer), (list, dict))


@pytest.mark.tinker_mock(seed=7, client_config_overrides={"fwdbwd_max_chunk_len": 2})
def test_the_marker_passes_server_config_fields(tinker_mock: MockServer) -> None:
    assert tinker_mock.config.seed == 7
    assert tinker_mock.config.client_config()["fwdbwd_max_chunk_len"] == 2


@pytest.mark.tinker_mock(grpc=True, api_keys=["tml-owner", "tml-other"])
def test_the_marker_serves_grpc_and_admits_only_the_listed_keys(tinker_mock: MockServer) -> None:
    assert tinker_mock.api_key == os.environ["TINKER_API_KEY"] == "tml-owner"
    target = tinker_mock.grpc_target
    with ServiceClient(base_url=target, api_key="tml-other", transport="grpc") as service:
        assert service.get_server_capabilities().supported_models
    with (
        ServiceClient(base_url=tinker_mock.url, api_key="tml-stranger") as service,
        pytest.raises(errors.AuthenticationError),
    ):
        service.get_server_capabilities()


@pytest.mark.parametrize(
    ("api_keys", "error", "message"),
    [
        ("tml-one", TypeError, "a list of keys"),
        ([], ValueError, "expected keys"),
        (["tml-a b"], ValueError, "expected keys"),
    ],
)
def test_serve_refuses_api_keys_the_server_could_not_read(
    api_keys: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message), tinker_ref.mock.serve(api_keys=api_keys):
        pass


def test_helpers_report_losses_steps_requests_and_digests(tinker_mock: MockServer) -> None:
    model_id = train(tinker_mock, steps=3)
    assert tinker_mock.model_ids() == [model_id]
    losses = tinker_mock.losses(model_id)
    assert len(losses) == 3
    assert losses[2] < losses[1] < losses[0]
    assert tinker_mock.optimizer_steps(model_id) == 3
    ops = [event["op"] for event in tinker_mock.history(model_id)]
    assert ops == ["forward_backward", "optim_step"] * 3
    optim_requests = tinker_mock.requests("optim_step")
    assert [r["seq_id"] for r in optim_requests] == [2, 4, 6]
    assert tinker_mock.requests("/api/v1/optim_step") == optim_requests
    assert len(tinker_mock.weights_digest(model_id)) == 64
    assert tinker_mock.weights_digest(model_id) != tinker_mock.weights_digest(
        model_id, include_optimizer=True
    )


def test_same_seed_and_requests_give_the_same_digest_and_another_seed_does_not() -> None:
    digests = []
    for seed in (0, 0, 1):
        with tinker_ref.mock.serve(seed=seed) as mock:
            model_id = train(mock, steps=2)
            digests.append(mock.weights_digest(model_id, include_optimizer=True))
    assert digests[0] == digests[1] != digests[2]


def test_an_unknown_model_id_names_the_known_ones(tinker_mock: MockServer) -> None:
    model_id = train(tinker_mock, steps=1)
    with pytest.raises(LookupError, match=f"no model 'nope' \\(models: {model_id}\\)"):
        tinker_mock.weights_digest("nope")


def test_loading_the_plugin_or_tinker_ref_imports_no_server_or_torch() -> None:
    # pytest imports every installed plugin in every run; tinker_ref promises a client free of
    # server code. Both must stay cheap to import (aiohttp is the client's own transport).
    heavy = ("torch", "mock_server.embedded", "mock_server.engine", "mock_server.service")
    probe = (
        "import sys, mock_server.pytest_plugin, tinker_ref.mock\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
