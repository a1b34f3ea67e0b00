"""The commands that need no server answer without importing one: `tinker-mock --help`,
`tinker-mock models` and `tinker-conformance --help` leave torch, the engine, aiohttp and grpc
unimported (what made each take seconds). Each runs in a fresh interpreter: this one has
them all."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.mock_process import REPO_ROOT

HEAVY = ("torch", "aiohttp", "grpc", "mock_server.engine.engine", "mock_server.service.service")

# Runs an entry point's `main(argv)` and reports which heavy modules it imported and its output.
_PROBE = """
import contextlib, io, json, sys
module, argv, heavy = sys.argv[1], sys.argv[2:], {heavy!r}
main = __import__(module, fromlist=["main"]).main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
loaded = sorted(name for name in heavy if name in sys.modules)
print(json.dumps({{"code": code, "loaded": loaded, "out": out.getvalue()}}))
"""


def _probe(module: str, *argv: str) -> dict[str, object]:
    script = _PROBE.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, module, *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("module", "argv", "expected"),
    [
        ("mock_server.cli", ["--help"], "usage: tinker-mock"),
        ("mock_server.cli", ["serve", "--help"], "--grpc-port"),
        ("mock_server.cli", ["models"], "tinker-ref/tiny-64"),
        ("conformance.cli", ["--help"], "usage: tinker-conformance"),
        ("conformance.cli", ["run", "--help"], "--adapter"),
    ],
)
def test_commands_that_need_no_server_import_none(
    module: str, argv: list[str], expected: str
) -> None:
    result = _probe(module, *argv)
    assert result["code"] in (0, None)
    assert expected in str(result["out"])
    assert result["loaded"] == []


def test_the_engine_package_is_light_until_a_torch_name_is_read() -> None:
    script = (
        "import sys, mock_server.engine as engine, mock_server.service as service\n"
        "print('torch' in sys.modules, engine.load_catalog()['tinker-ref/tiny-64'].vocab_size)\n"
        "engine.Engine, service.TinkerService\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "64", "True"]  # lazy, and still what they name
