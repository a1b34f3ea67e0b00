"""Each security rule of issue 8, attacked: another key's ids, checkpoint names and tinker://
paths outside the data directory, pickle, and the listen address.

(Body limits and zstd bombs: test_http_errors.py::test_413_*; the custom-loss interpreter's
allow-list: tests/unit/test_custom_loss.py, and here once more end to end over HTTP.)
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mock_server.cli import build_parser, config_from_args
from mock_server.service import ServerConfig
from tests.support.http_api import TINY, MakeMockApi, MockApi, alice_and_bob
from tests.support.profiles import examples
from tests.support.training import datum

TOKENS = [1, 5, 9, 12, 3, 7]
REPO = Path(__file__).resolve().parents[2]


async def _save(api: MockApi, model: str, seq_id: int, name: str) -> str:
    saved = await api.post("save_weights", {"model_id": model, "path": name, "seq_id": seq_id})
    return str((await api.result(saved["request_id"]))["path"])


@pytest.mark.spec("WIRE-2")
@pytest.mark.asyncio
async def test_every_kind_of_id_of_another_key_is_not_found_word_for_word_like_a_missing_one(
    make_mock_api: MakeMockApi, tmp_path: Path
) -> None:
    alice, bob = await alice_and_bob(make_mock_api, tmp_path / "keys.txt")
    session = await alice.session()
    model = await alice.create_model(session)
    await alice.forward_output(
        (await alice.forward_backward(model, 1, [datum(TOKENS)]))["request_id"]
    )
    checkpoint = await _save(alice, model, 2, "private")
    snapshot = await alice.post(
        "save_weights_for_sampler", {"model_id": model, "sampling_session_seq_id": 0, "seq_id": 3}
    )
    sampler = (await alice.result(snapshot["request_id"]))["sampling_session_id"]
    pending = await alice.optim_step(model, 4)
    await alice.result(pending["request_id"])
    before = alice.digest(model)
    bob_session = await bob.session()

    async def same_404(path: str, mine: dict[str, Any], missing: dict[str, Any]) -> None:
        """Bob's request for Alice's id and for an id that never existed get the same answer,
        up to the id itself."""
        seen = await bob.post(path, mine, status=404)
        absent = await bob.post(path, missing, status=404)
        assert seen["field"] == absent["field"]
        for value_mine, value_missing in zip(mine.values(), missing.values(), strict=True):
            if value_mine != value_missing and isinstance(value_mine, str):
                seen["detail"] = seen["detail"].replace(value_mine, "<id>")
                absent["detail"] = absent["detail"].replace(value_missing, "<id>")
        assert seen == absent

    ghost = "sess-999-000000000000"
    await same_404("session_heartbeat", {"session_id": session}, {"session_id": ghost})
    await same_404(
        "create_model",
        {"session_id": session, "model_seq_id": 5, "base_model": TINY},
        {"session_id": ghost, "model_seq_id": 5, "base_model": TINY},
    )
    await same_404("get_info", {"model_id": model}, {"model_id": f"{ghost}:train:0"})
    adam = {"learning_rate": 0.1}
    await same_404(
        "optim_step",
        {"model_id": model, "seq_id": 5, "adam_params": adam},
        {"model_id": f"{ghost}:train:0", "seq_id": 5, "adam_params": adam},
    )
    await same_404(
        "save_weights",
        {"model_id": model, "path": "stolen", "seq_id": 5},
        {"model_id": f"{ghost}:train:0", "path": "stolen", "seq_id": 5},
    )
    await same_404(
        "retrieve_future",
        {"request_id": pending["request_id"]},
        {"request_id": "req-999-000000000000"},
    )
    await same_404(
        "asample",
        {"sampling_session_id": sampler, "seq_id": 0, "prompt": {"chunks": []}},
        {"sampling_session_id": f"{ghost}:sample:0", "seq_id": 0, "prompt": {"chunks": []}},
    )
    response = await alice.client.get(f"/api/v1/samplers/{sampler}", headers=bob.headers())
    assert response.status == 404
    # Alice's checkpoint through every door that reads one: 404 at once, nothing loaded.
    ghost_checkpoint = f"tinker://{ghost}:train:0/weights/private"
    await same_404(
        "create_sampling_session",
        {"session_id": bob_session, "sampling_session_seq_id": 0, "model_path": checkpoint},
        {"session_id": bob_session, "sampling_session_seq_id": 1, "model_path": ghost_checkpoint},
    )
    await same_404(
        "load_weights",
        {"session_id": bob_session, "model_seq_id": 0, "path": checkpoint},
        {"session_id": bob_session, "model_seq_id": 1, "path": ghost_checkpoint},
    )
    await same_404("weights_info", {"tinker_path": checkpoint}, {"tinker_path": ghost_checkpoint})
    assert alice.digest(model) == before
    assert not bob.service.ctx.registry.samplers.keys() - {sampler}
    await alice.result(pending["request_id"])  # Alice still reads her own future


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


NAME_ATTACKS = [
    "..",
    ".",
    "../../escape",
    "a/../../escape",
    "/etc/passwd",
    "..\\..\\escape",
    "a/b",
    "~",
    "name\x00.txt",
    "%2e%2e%2fescape",
    "\u2025escape",  # two-dot leader
    "．．",  # fullwidth full stops
    ".hidden",
    "x" * 129,
    "",
]


@pytest.mark.spec("CKPT-9")
@pytest.mark.asyncio
async def test_checkpoint_names_and_tinker_paths_cannot_leave_the_data_directory(
    make_mock_api: MakeMockApi, tmp_path: Path
) -> None:
    api = await make_mock_api()
    session = await api.session()
    model = await api.create_model(session)
    data_dir = api.service.ctx.checkpoints.root.parent
    outside_before = _files(tmp_path) - _files(data_dir)
    seq_id = 1
    for name in NAME_ATTACKS:
        for endpoint in ("save_weights", "save_weights_for_sampler"):
            body = await api.post(
                endpoint, {"model_id": model, "path": name, "seq_id": seq_id}, status=422
            )
            assert body["field"] == "path", (name, body)
            seq_id += 1
    paths = [
        f"tinker://{model}/weights/../../../escape",
        f"tinker://{model}/weights/..",
        "tinker://../../../../etc/weights/passwd",
        f"tinker://{model}/../weights/x",
        f"tinker://{model}/weights/x/y",
        "tinker:///etc/passwd",
        "file:///etc/passwd",
        "/etc/passwd",
        f"tinker://{model}/weights/%2e%2e",
        "tinker://sess-0:train:0/weights/\x00",
    ]
    for path in paths:
        for endpoint, body in (
            ("load_weights", {"model_id": model, "seq_id": seq_id, "path": path}),
            ("load_weights", {"session_id": session, "model_seq_id": seq_id, "path": path}),
            ("weights_info", {"tinker_path": path}),
            (
                "create_sampling_session",
                {"session_id": session, "sampling_session_seq_id": seq_id, "model_path": path},
            ),
        ):
            answer = await api.post(endpoint, body, status=422)
            assert answer["field"] in ("path", "tinker_path", "model_path"), (path, answer)
            seq_id += 1
    assert _files(tmp_path) - _files(data_dir) == outside_before  # nothing written outside


@pytest.mark.spec("CKPT-9")
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(max_size=140))
def test_any_name_that_passes_validation_stays_one_directory_below_its_kind(name: str) -> None:
    from mock_server.service.checkpoints import CheckpointStore, parse_address
    from mock_server.service.errors import InvalidArgument

    root = Path("/data")
    store = CheckpointStore(root)
    try:
        address = parse_address(f"tinker://sess-0:train:0/weights/{name}", "path")
    except InvalidArgument:
        return
    directory = store.directory(address)
    assert directory.parent == root / "checkpoints" / "sess-0~train~0" / "weights"
    assert directory.resolve().parent == directory.parent and directory.name == name


# ----- no pickle -----

UNPICKLERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("torch", "load"),
    ("marshal", "loads"),
    ("shelve", "open"),
    ("dill", "loads"),
    ("joblib", "load"),
    ("numpy", "load"),
}


def unpickling_uses(source: str, filename: str = "<source>") -> list[str]:
    """Imports of pickle-family modules, torch.load / np.load (numpy's allows pickles), and
    eval/exec/__import__ calls in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for name in [module, *(alias.name for alias in node.names)]:
                if name and name.split(".")[0] in {"pickle", "marshal", "shelve", "dill"}:
                    found.append(f"{filename}:{node.lineno} imports {name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (
                (node.value.id, node.attr) in UNPICKLERS
                or (node.value.id, node.attr) == ("np", "load")
            )
        ):
            found.append(f"{filename}:{node.lineno} uses {node.value.id}.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"eval", "exec", "__import__"}
        ):
            found.append(f"{filename}:{node.lineno} calls {node.func.id}")
    return found


def test_the_unpickler_scan_finds_each_way_in() -> None:
    bad = "import pickle\nfrom marshal import loads\ntorch.load(f)\nnp.load(f)\neval('1')\n"
    assert len(unpickling_uses(bad)) == 5


@pytest.mark.spec("CKPT-10")
def test_no_source_file_of_the_server_or_client_imports_or_calls_an_unpickler() -> None:
    offenders = []
    for package in ("mock_server", "tinker_ref"):
        for path in (REPO / package).rglob("*.py"):
            if "_proto" not in path.parts:
                offenders += unpickling_uses(path.read_text(), str(path))
    assert offenders == []


@pytest.mark.spec("CKPT-10")
@pytest.mark.asyncio
async def test_a_full_workflow_with_checkpoints_and_a_journal_replay_never_unpickles(
    make_mock_api: MakeMockApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The dynamic half: every unpickling entry point raises while the server saves, loads,
    samples from a checkpoint and replays its journal."""
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def trap(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called")

        return trap

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    monkeypatch.setattr(pickle, "Unpickler", refuse("pickle.Unpickler"))
    data_dir = tmp_path / "journaled"
    api = await make_mock_api(data_dir=data_dir, journal=True)
    session = await api.session()
    model = await api.create_model(session)
    await api.forward_output((await api.forward_backward(model, 1, [datum(TOKENS)]))["request_id"])
    path = await _save(api, model, 2, "w")
    body = {"session_id": session, "model_seq_id": 1, "path": path, "optimizer": True}
    await api.result((await api.post("load_weights", body))["request_id"])
    body = {"session_id": session, "sampling_session_seq_id": 0, "model_path": path}
    await api.post("create_sampling_session", body)
    replayed = await make_mock_api(data_dir=data_dir, journal=True)
    assert replayed.service.recovery is not None and replayed.service.recovery.mismatches == 0
    assert replayed.digest(f"{session}:train:1") == api.digest(f"{session}:train:1")
    assert calls == []


# ----- the uploaded loss interpreter, end to end -----


@pytest.mark.spec("LOSS-15")
@pytest.mark.asyncio
async def test_an_uploaded_graph_that_calls_outside_the_allow_list_is_refused_over_http(
    make_mock_api: MakeMockApi, tmp_path: Path
) -> None:
    api = await make_mock_api()
    session = await api.session()
    marker = tmp_path / "pwned"
    for target in ("builtins.open", "os.system", "builtins.eval", "torch.save", "subprocess.run"):
        graph = {
            "format": 1,
            "nodes": [
                {"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": []},
                {"op": "call_function", "name": "attack", "target": target, "args": [str(marker)]},
                {
                    "op": "output",
                    "name": "output",
                    "target": "output",
                    "args": [{"tuple": [{"ref": "attack"}, {"dict": {}}]}],
                },
            ],
        }
        body = {
            "session_id": session,
            "custom_loss_seq_id": 0,
            "name": "attack",
            "inputs": [{"name": "logprobs", "rank": 1}],
            "graph": graph,
        }
        answer = await api.post("create_custom_loss", body, status=422)
        assert answer["field"] == "graph.nodes[1].target", answer
        assert "allow-list" in answer["detail"], answer
    assert not marker.exists()


# ----- listen address -----


def test_the_default_listen_address_is_loopback_everywhere() -> None:
    assert ServerConfig().host == "127.0.0.1"
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and config_from_args(args).host == "127.0.0.1"
