"""The REST API (spec WIRE-19), refused features (WIRE-20) and inflight samplers (SMP-9),
through tinker_ref's RestClient, ServiceClient and TrainingClient against the embedded mock."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mock_server.embedded import EmbeddedServer, serve
from mock_server.service import checkpoint_meta
from tests.support.http_api import MakeMockApi, assert_endpoint_served
from tests.support.training import datum
from tinker_ref import RestClient, ServiceClient, TrainingClient, errors, types

MODEL = "tinker-ref/tiny-bytes"
TEXT = b"the cat sat on the mat"
ADAM = types.AdamParams(learning_rate=5e-2)
TIMEOUT = 60


def train_step(training: TrainingClient) -> None:
    training.forward_backward([datum(TEXT)], "cross_entropy").result(TIMEOUT)
    training.optim_step(ADAM).result(TIMEOUT)


def prompt_logprobs(sampler: object) -> list[float | None]:
    prompt = types.ModelInput.from_ints(list(b"the cat"))
    return sampler.compute_logprobs(prompt).result(TIMEOUT)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with serve(seed=0, data_dir=tmp_path_factory.mktemp("rest-data")) as server:
        yield server


@pytest.fixture(scope="module")
def service(mock: EmbeddedServer) -> Iterator[ServiceClient]:
    with ServiceClient(
        base_url=mock.url, api_key="tml-rest", project_id="proj-a", display_name="rest run"
    ) as client:
        yield client


@pytest.fixture(scope="module")
def rest(mock: EmbeddedServer) -> RestClient:
    return RestClient(base_url=mock.url, api_key="tml-rest")


@pytest.mark.spec("WIRE-19")
def test_a_training_run_and_its_checkpoints_read_back_with_their_metadata(
    service: ServiceClient, rest: RestClient
) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=1, user_metadata={"k": "v"})
    state = training.save_state("step-1", ttl_seconds=7200, user_metadata={"step": "1"})
    sampler_path = training.save_weights_for_sampler("sampler-1").result(TIMEOUT).path
    state_path = state.result(TIMEOUT).path
    run = rest.get_training_run_by_tinker_path(state_path).result(TIMEOUT)
    assert (run.training_run_id, run.base_model, run.lora_rank) == (training.model_id, MODEL, 4)
    assert run.user_metadata == {"k": "v"}
    assert run.last_checkpoint is not None and run.last_checkpoint.tinker_path == state_path
    assert run.last_checkpoint.user_metadata == {"step": "1"}
    assert run.last_checkpoint.expires_at is not None
    assert run.last_sampler_checkpoint is not None
    assert run.last_sampler_checkpoint.tinker_path == sampler_path
    listed = rest.list_checkpoints(training.model_id).result(TIMEOUT).checkpoints
    assert [(c.checkpoint_id, c.checkpoint_type) for c in listed] == [
        ("weights/step-1", "training"),
        ("sampler_weights/sampler-1", "sampler"),
    ]
    assert all(c.size_bytes and c.size_bytes > 0 for c in listed)
    runs = rest.list_training_runs(project_id="proj-a").result(TIMEOUT)
    assert training.model_id in [r.training_run_id for r in runs.training_runs]
    assert rest.list_training_runs(project_id="nowhere").result(TIMEOUT).training_runs == []
    mine = rest.list_user_checkpoints().result(TIMEOUT).checkpoints
    assert {state_path, sampler_path} <= {c.tinker_path for c in mine}


@pytest.mark.spec("WIRE-19")
def test_deleted_and_expired_checkpoints_answer_404_and_ttl_bounds_are_enforced(
    mock: EmbeddedServer, service: ServiceClient, rest: RestClient
) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=2)
    old, new, gone = (training.save_state(n).result(TIMEOUT).path for n in ("s1", "s2", "s3"))
    rest.delete_checkpoint_from_tinker_path(old).result(TIMEOUT)  # the cookbook's rolling cleanup
    ids = [
        c.checkpoint_id
        for c in rest.list_checkpoints(training.model_id).result(TIMEOUT).checkpoints
    ]
    assert ids == ["weights/s2", "weights/s3"]
    with pytest.raises(errors.NotFoundError):
        rest.delete_checkpoint_from_tinker_path(old).result(TIMEOUT)
    with pytest.raises(errors.APIStatusError) as too_short:
        rest.set_checkpoint_ttl_from_tinker_path(new, 60).result(TIMEOUT)
    assert too_short.value.status_code in (400, 422) and "ttl_seconds" in str(too_short.value)
    rest.set_checkpoint_ttl_from_tinker_path(new, 3600).result(TIMEOUT)
    rest.publish_checkpoint_from_tinker_path(new).result(TIMEOUT)
    checkpoint = rest.get_training_run(training.model_id).result(TIMEOUT).last_checkpoint
    assert checkpoint is not None and checkpoint.tinker_path == gone
    published = {
        c.tinker_path: c
        for c in rest.list_checkpoints(training.model_id).result(TIMEOUT).checkpoints
    }
    assert published[new].public and published[new].expires_at is not None
    rest.unpublish_checkpoint_from_tinker_path(new).result(TIMEOUT)
    rest.set_checkpoint_ttl_from_tinker_path(new, None).result(TIMEOUT)
    again = {
        c.tinker_path: c
        for c in rest.list_checkpoints(training.model_id).result(TIMEOUT).checkpoints
    }
    assert not again[new].public and again[new].expires_at is None
    # A TTL that has run out: the checkpoint is gone at the next look.
    directory = (
        mock.service.ctx.checkpoints.root / training.model_id.replace(":", "~") / "weights" / "s3"
    )
    checkpoint_meta.update(directory, expires_at=time.time() - 1)
    assert [
        c.tinker_path for c in rest.list_checkpoints(training.model_id).result(TIMEOUT).checkpoints
    ] == [new]
    assert not directory.exists()


@pytest.mark.spec("WIRE-19")
@pytest.mark.filterwarnings("ignore::tinker_ref.errors.ExperimentalWarning")
def test_sessions_read_list_search_and_move_to_another_project(
    service: ServiceClient, rest: RestClient
) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=3)
    session_id = service._session_id
    assert session_id is not None
    session = rest.get_session(session_id).result(TIMEOUT)
    assert training.model_id in session.training_run_ids and session.display_name == "rest run"
    assert session_id in rest.list_sessions().result(TIMEOUT).sessions
    rest.assign_session_project(session_id, "proj-b").result(TIMEOUT)
    found = rest.search_sessions(types.SessionSearchRequest(project_ids=["proj-b"])).result(TIMEOUT)
    assert [s.session_id for s in found.sessions] == [session_id]
    assert isinstance(found.sessions[0].status, types.SessionActive)
    by_name = rest.search_sessions(types.SessionSearchRequest(display_name="REST")).result(TIMEOUT)
    assert session_id in [s.session_id for s in by_name.sessions]
    with pytest.raises(RuntimeError, match="no session traces"):
        rest.export_session_trace(session_id).result(TIMEOUT)
    assert (
        rest.get_billing_usage("2024-01-01T00:00:00", "2024-02-01T00:00:00").result(TIMEOUT).data
        == []
    )
    assert rest.get_audit_log().result(TIMEOUT).entries == []
    rest.assign_session_project(session_id, "proj-a").result(TIMEOUT)


@pytest.mark.spec("WIRE-19")
def test_copies_and_external_weights_are_checkpoints_like_the_others(
    service: ServiceClient, rest: RestClient
) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=4)
    train_step(training)
    source = training.save_state("to-copy").result(TIMEOUT).path
    copy = service.copy_weights(source).result(TIMEOUT)
    assert copy != source and copy.endswith("/weights/to-copy")
    copied_run = rest.get_training_run_by_tinker_path(copy).result(TIMEOUT)
    assert copied_run.base_model == MODEL
    resumed = service.create_training_client_from_state(copy)
    assert (
        resumed.forward([datum(TEXT)], "cross_entropy")
        .result(TIMEOUT)
        .loss_fn_outputs[0]["logprobs"]
        .tolist()
        == training.forward([datum(TEXT)], "cross_entropy")
        .result(TIMEOUT)
        .loss_fn_outputs[0]["logprobs"]
        .tolist()
    )
    export = training.save_weights_external("export-1").result(TIMEOUT).path
    urls = rest.get_external_weights_urls(export).result(TIMEOUT).urls
    assert sorted(urls) == ["adapter.safetensors", "metadata.json"]
    with urllib.request.urlopen(urls["metadata.json"], timeout=TIMEOUT) as answer:
        assert MODEL.encode() in answer.read()
    types_by_id = {
        c.checkpoint_id: c.checkpoint_type
        for c in rest.list_checkpoints(training.model_id).result(TIMEOUT).checkpoints
    }
    assert types_by_id["external_weights/export-1"] == "external"
    with pytest.raises(ValueError, match="external weights"):
        rest.get_external_weights_urls(source)


@pytest.mark.spec("WIRE-19")
def test_a_training_run_reads_back_from_its_checkpoints_after_a_restart(tmp_path: Path) -> None:
    with (
        serve(seed=0, data_dir=tmp_path) as first,
        ServiceClient(base_url=first.url, api_key="tml-restart") as client,
    ):
        training = client.create_lora_training_client(MODEL, rank=4, seed=5)
        path = training.save_state("before-restart").result(TIMEOUT).path
    with serve(seed=0, data_dir=tmp_path) as second:
        rest = RestClient(base_url=second.url, api_key="tml-restart")
        run = rest.get_training_run_by_tinker_path(path).result(TIMEOUT)
        assert (run.base_model, run.lora_rank) == (MODEL, 4)
        assert run.last_checkpoint is not None and run.last_checkpoint.tinker_path == path


@pytest.mark.spec("WIRE-20")
def test_features_the_docs_do_not_define_are_refused_by_name_and_change_nothing(
    service: ServiceClient,
) -> None:
    with pytest.raises(errors.APIStatusError, match=r"optimizer_config\.type"):
        service.create_lora_training_client(MODEL, rank=4, optimizer=types.DimuonOptimizerConfig())
    training = service.create_lora_training_client(MODEL, rank=4, seed=6)
    before = training.forward([datum(TEXT)], "cross_entropy").result(TIMEOUT).loss_fn_outputs
    with pytest.raises(errors.APIStatusError, match=r"optimizer_params\.type"):
        training.optim_step(types.DimuonParams(learning_rate=0.1)).result(TIMEOUT)
    reinforce = types.Datum(
        model_input=datum(TEXT).model_input,
        loss_fn_inputs={
            "target_tokens": datum(TEXT).loss_fn_inputs["target_tokens"],
            "advantages": [1.0] * (len(TEXT) - 1),
        },
    )
    with pytest.raises(errors.APIStatusError, match="stable_reinforce") as loss:
        training.forward_backward([reinforce], "stable_reinforce").result(TIMEOUT)
    assert "loss_fn" in str(loss.value)
    with pytest.raises(errors.APIStatusError, match="age_encryption_recipients"):
        training.save_weights_external("secret", age_encryption_recipients=["age1x"]).result(
            TIMEOUT
        )
    training.optim_step(ADAM).result(TIMEOUT)  # no gradient was accumulated: nothing moves
    after = training.forward([datum(TEXT)], "cross_entropy").result(TIMEOUT).loss_fn_outputs
    assert after[0]["logprobs"].tolist() == before[0]["logprobs"].tolist()


@pytest.mark.spec("SMP-9")
def test_inflight_samplers_adopt_later_inflight_saves_and_snapshots_stay_frozen(
    service: ServiceClient,
) -> None:
    training = service.create_lora_training_client(MODEL, rank=4, seed=7)
    snapshot = training.save_weights_and_get_sampling_client()
    first = training.save_weights_and_get_sampling_client(kind="inflight")
    at_first = prompt_logprobs(first)
    assert prompt_logprobs(snapshot) == at_first
    train_step(training)
    assert prompt_logprobs(first) == at_first  # no inflight save since: still W1
    second = training.save_weights_and_get_sampling_client(kind="inflight")
    at_second = prompt_logprobs(second)
    assert at_second != at_first
    assert prompt_logprobs(first) == at_second  # adopted W2
    assert prompt_logprobs(snapshot) == at_first  # snapshots never change


@pytest.mark.spec("WIRE-21")
def test_environment_variables_reach_the_session(
    mock: EmbeddedServer, rest: RestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINKER_PROJECT_ID", "proj-env")
    monkeypatch.setenv("TINKER_TAGS", "alpha,beta,alpha")
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-id")
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", "echo tml-from-command")
    monkeypatch.setenv("TINKER_BASE_URL", mock.url)
    with ServiceClient() as client:
        assert client.transport.default_headers["CF-Access-Client-Id"] == "cf-id"  # type: ignore[attr-defined]
        training = client.create_lora_training_client(MODEL, rank=4, seed=8)
        session_id = client._session_id
        assert session_id is not None
        session = mock.call(lambda: mock.service.ctx.registry.sessions[session_id])
        assert (session.project_id, session.tags) == ("proj-env", ("alpha", "beta"))
        runs = rest.list_training_runs(project_id="proj-env").result(TIMEOUT).training_runs
        assert [r.training_run_id for r in runs] == [training.model_id]


RUN = "sess-x:train:0"
REST_ENDPOINTS = [
    ("GET", "training_runs"),
    ("GET", f"training_runs/{RUN}"),  # read on resume (tinker-cookbook)
    ("GET", f"training_runs/{RUN}/checkpoints"),
    ("DELETE", f"training_runs/{RUN}/checkpoints/weights/step-1"),  # rolling cleanup
    ("PUT", f"training_runs/{RUN}/checkpoints/weights/step-1/ttl"),
    ("POST", f"training_runs/{RUN}/checkpoints/weights/step-1/publish"),
    ("DELETE", f"training_runs/{RUN}/checkpoints/weights/step-1/publish"),
    ("GET", f"training_runs/{RUN}/checkpoints/external_weights/e/external_weights_urls"),
    ("GET", "checkpoints"),
    ("POST", "copy_weights"),
    ("POST", "save_weights_external"),
    ("GET", "sessions"),
    ("GET", "sessions/sess-x"),
    ("PUT", "sessions/sess-x/project"),
    ("POST", "sessions/search"),
    ("GET", "sessions/sess-x/trace_export"),
    ("GET", "audit"),
    ("GET", "billing/usage/events"),
    ("GET", "billing/usage/checkpoints/current"),
]


@pytest.mark.spec("WIRE-19")
@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "path"), REST_ENDPOINTS)
async def test_every_rest_endpoint_is_served(
    make_mock_api: MakeMockApi, method: str, path: str
) -> None:
    api = await make_mock_api()
    await assert_endpoint_served(api, method, path, {"Content-Type": "application/json"})
