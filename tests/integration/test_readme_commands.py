"""The README's commands run (the doc test): every shell block of README.md, as it is at test
time, is executed line by line in bash from the repository root, and must exit 0.

Rules, so that nothing is skipped silently:
- A fenced block tagged `sh`, `bash`, `shell` or `console` is a list of commands: each block
  runs as one bash script (`set -euo pipefail`: `export` and `&` carry across its lines, the
  first failing line fails the test); background jobs are killed when the block ends.
- A command listed in `EXCLUDED` is not run, for the reason given there; an exclusion that no
  longer matches a README command fails the test (stale reasons are not kept).
- A `python` block is a fragment of a user's code, not a command: it must compile.
- A `text` block is a diagram or a formula: shown as written, nothing to run.
- Any other tag, or a block with no tag, fails the test until it is classified here.

Adaptations, all mechanical: fixed ports become free ones (8080 and 50051 in a block are
replaced, and a `tinker-mock serve` without `--grpc-port` gets a free one: tests never bind
fixed ports); after a backgrounded `tinker-mock serve` the script waits until the port accepts
connections (the README's reader does that by eye). `python` on PATH is the offline-development
venv's (official SDK 0.38, tinker-cookbook, torch), `tinker-mock` and `make` as installed here.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mock_process import REPO_ROOT
from tests.support.sdk_venv import ensure_cookbook_venv

README = REPO_ROOT / "README.md"
SHELL_TAGS = frozenset({"sh", "bash", "shell", "console"})
SHOWN_TAGS = frozenset({"text"})  # diagrams and formulas
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
BLOCK_TIMEOUT_S = 900

# Canonical command (shell words, comments dropped) -> why this test does not run it.
EXCLUDED = {
    "make test": "this test is part of `make test` (CI's .ci/run): running it would recurse",
    "make test-fast": "its tests (tests/unit, tests/property) run in `make test` beside this one",
    "make generate": "run by `make checkgenerate`, a prerequisite of `make test`; here it would "
    "rewrite tinker_ref/_proto while other tests import it",
    "make checkgenerate": "a prerequisite of `make test`, run before pytest starts",
    "make lint typecheck": "prerequisites of `make test` (`lint`, `typecheck`), run before "
    "pytest starts",
}


@dataclass(frozen=True)
class Block:
    index: int  # 0-based among the README's fenced blocks
    line: int  # 1-based line of the opening fence
    tag: str
    body: str

    def commands(self) -> list[str]:
        """Logical lines (backslash continuations joined), blank and comment-only ones out."""
        joined = re.sub(r"\\\n", " ", self.body)
        return [line for line in joined.splitlines() if canonical(line)]


def canonical(command: str) -> str:
    return " ".join(shlex.split(command, comments=True))


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(i, text.count("\n", 0, m.start()) + 1, m.group(1).lower(), m.group(2))
        for i, m in enumerate(FENCE.finditer(text))
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def script_for(block: Block) -> str:
    http_port, grpc_port = free_port(), free_port()
    lines = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for command in block.commands():
        if canonical(command) in EXCLUDED:
            lines.append(f": excluded: {shlex.quote(canonical(command))}")
            continue
        command = command.replace("8080", str(http_port)).replace("50051", str(grpc_port))
        words = shlex.split(command, comments=True)
        serves = len(words) >= 2 and words[0].endswith("tinker-mock") and words[1] == "serve"
        if serves and "--grpc-port" not in words:
            command = command.replace("serve", f"serve --grpc-port {grpc_port}", 1)
        lines.append(command)
        if serves and words[-1] == "&":
            port = words[words.index("--port") + 1] if "--port" in words else "8080"
            lines.append(
                f"for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null "
                "&& break; sleep 0.1; done"
            )
    return "\n".join(lines) + "\n"


BLOCKS = readme_blocks()


def test_every_exclusion_names_a_command_that_is_in_the_readme() -> None:
    commands = {canonical(c) for b in BLOCKS if b.tag in SHELL_TAGS for c in b.commands()}
    assert set(EXCLUDED) <= commands, sorted(set(EXCLUDED) - commands)


def test_every_block_is_classified() -> None:
    unknown = [(b.line, b.tag) for b in BLOCKS if b.tag not in SHELL_TAGS | SHOWN_TAGS | {"python"}]
    assert not unknown, f"README blocks (line, tag) this test does not know how to check: {unknown}"
    assert any(b.tag in SHELL_TAGS for b in BLOCKS)


@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if b.tag == "python"],
    ids=lambda b: f"line{b.line}",
)
def test_python_block_compiles(block: Block) -> None:
    compile(block.body, f"README.md:{block.line}", "exec")


@pytest.mark.sdk
@pytest.mark.timeout(BLOCK_TIMEOUT_S + 2400)  # + the first build of the cookbook venv
@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if b.tag in SHELL_TAGS],
    ids=lambda b: f"line{b.line}-" + "-".join(canonical(b.commands()[0]).split()[:3]),
)
def test_readme_shell_block_runs(block: Block, tmp_path: Path) -> None:
    runnable = [c for c in block.commands() if canonical(c) not in EXCLUDED]
    if not runnable:
        pytest.skip(
            f"every command of this block is excluded: {[*map(canonical, block.commands())]}"
        )
    venv_bin = ensure_cookbook_venv().parent
    env = {name: value for name, value in os.environ.items() if not name.startswith("TINKER_")}
    env.update(
        PATH=os.pathsep.join([str(venv_bin), str(REPO_ROOT / ".venv" / "bin"), env["PATH"]]),
        HF_HUB_OFFLINE="1",
        TINKER_TELEMETRY="0",
        TMPDIR=str(tmp_path),
    )
    script = script_for(block)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"README.md line {block.line} failed (exit {done.returncode})\n--- script ---\n{script}"
        f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
    )
