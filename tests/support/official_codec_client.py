"""Talks to `official_codec_driver.py` running in an official-SDK virtualenv.

One driver process serves many batches (JSON lines over pipes), so the seconds the SDK needs to
import are paid once per test session rather than once per hypothesis example.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DRIVER", "OfficialCodecDriver"]

DRIVER = Path(__file__).with_name("official_codec_driver.py")


class OfficialCodecDriver:
    """A running driver; `run(cases)` returns one `{"ok": ...}` / `{"error": ...}` per case."""

    def __init__(self, python: Path) -> None:
        # stderr goes to a file, so a chatty SDK can never fill a pipe and block; it lives as
        # long as the driver and is closed in close().
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._process = subprocess.Popen(
            [str(python), str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def run(self, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stdin, stdout = self._process.stdin, self._process.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("driver pipes are closed")
        try:
            stdin.write(json.dumps({"cases": cases}) + "\n")
            stdin.flush()
            line = stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"official codec driver died:\n{self._stderr_text()}")
        results: list[dict[str, Any]] = json.loads(line)["results"]
        if len(results) != len(cases):
            raise RuntimeError(f"driver answered {len(results)} results for {len(cases)} cases")
        return results

    def run_ok(self, cases: list[dict[str, Any]]) -> list[Any]:
        """Like `run`, but every case must succeed."""
        results = self.run(cases)
        failures = [(i, r["error"]) for i, r in enumerate(results) if "error" in r]
        if failures:
            index, error = failures[0]
            raise AssertionError(
                f"{len(failures)} case(s) failed in the official SDK; first, case {index}: "
                f"{error}\ncase: {json.dumps(cases[index])[:4000]}"
            )
        return [result["ok"] for result in results]

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-20000:]

    def close(self) -> None:
        # The driver holds no state worth a graceful exit, and the SDK's interpreter shutdown
        # (torch) takes seconds: end it at once.
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.kill()
        self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()
