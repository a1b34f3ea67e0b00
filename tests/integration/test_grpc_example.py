"""`examples/custom_loss_training.py --transport grpc`: runs from its command line, and trains
exactly as the HTTP run does (the losses it returns are equal as floats, not only as printed)."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import pytest

from mock_server.embedded import serve
from tests.support.mock_process import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "custom_loss_training.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_loss_training", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grpc_run_of_the_example_equals_the_http_run_exactly() -> None:
    example = load_example()
    losses = {}
    for transport in ("http", "grpc"):
        # A fresh server per run, as the script does: ids and seeds start over.
        with serve(seed=0, grpc=transport == "grpc") as mock:
            address = mock.grpc_target if transport == "grpc" else mock.url
            losses[transport] = example.train(address, transport, steps=3)
    assert losses["grpc"] == losses["http"]
    assert losses["grpc"][-1] < losses["grpc"][0]


def test_the_example_runs_over_grpc_from_its_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (main() parses sys.argv as the command would): a subprocess would spend most
    # of its time importing torch; test_examples.py runs the script as a process already.
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--transport", "grpc", "--steps", "2"])
    load_example().main()
    stdout = capsys.readouterr().out
    assert re.search(r"^mock server at 127\.0\.0\.1:\d+$", stdout, re.MULTILINE)
    assert re.findall(r"^step (\d): mean NLL \d+\.\d+ tokens 60$", stdout, re.MULTILINE) == [
        "0",
        "1",
    ]
    assert "sample: b'the " in stdout
