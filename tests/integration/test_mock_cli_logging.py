"""What `tinker-mock` tells its operator: the model list, the start-up banner and one
structured stderr line per request (stdout carries only the ready line)."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from mock_server.cli import main
from mock_server.engine.catalog import load_catalog
from tests.support.mock_process import running_mock_server

REQUEST_LINE = re.compile(
    r"tinker_mock\.requests: (?P<method>\w+) (?P<endpoint>\S+) model=(?P<model>\S+) "
    r"seq_id=(?P<seq>\S+) status=(?P<status>\d+) ms=(?P<ms>\d+\.\d)"
    r"(?: detail=(?P<detail>\".*\") field=(?P<field>\S+))?$",
    re.MULTILINE,
)


def test_models_lists_the_whole_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["base", "model", "vocab", "kind"]
    listed = {line.split()[0]: int(line.split()[1]) for line in lines[1:]}
    assert listed == {name: spec.vocab_size for name, spec in load_catalog().items()}
    assert lines[1].startswith("tinker-ref/")  # test models first


def post(url: str, path: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(
        f"{url}/api/v1/{path}",
        data=json.dumps(body).encode(),
        headers={"X-API-Key": "tml-log", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_banner_and_one_line_per_request_on_stderr() -> None:
    with running_mock_server("--seed", "3") as server:
        assert post(server.url, "get_info", {"model_id": "nope:train:0"}) == 404
        stderr = server.stderr()
    assert "models: " in stderr and "tinker-ref/tiny-bytes" in stderr
    assert "auth: any tml- key; seed: 3" in stderr
    lines = {m["endpoint"]: m for m in REQUEST_LINE.finditer(stderr)}
    info = lines["/api/v1/get_info"]
    assert (info["method"], info["model"], info["seq"], info["status"]) == (
        "POST",
        "nope:train:0",
        "-",
        "404",
    )
    # An error answer's line carries what the client is told: the detail and the field.
    assert json.loads(info["detail"]) == "no model 'nope:train:0'"
    assert info["field"] == "model_id"
