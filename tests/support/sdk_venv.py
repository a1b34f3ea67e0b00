"""Cached virtualenvs holding an official `tinker` SDK release, for differential tests.

`ensure_sdk_venv("0.38.0")` returns the python of a virtualenv with `tinker==0.38.0` and
`torch==2.13.0` installed. The exact torch pin matters: it resolves to the CPU wheel already on
disk (the pip config's find-links), where an unpinned torch would download a multi-GB CUDA build.

The first call builds the venv (about two minutes) into a temporary folder beside the cache entry
and renames it into place, so a half-built venv is never visible; an fcntl lock per version keeps
parallel test processes (pytest-xdist, several checkouts) from building it twice. The cache is
`$TINKER_REF_SDK_CACHE`, or `~/.cache/tinker-ref/sdk-venvs`. A failed build raises
`SdkVenvError` carrying pip's output; nothing is skipped silently.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["TORCH_PIN", "SdkVenvError", "cache_root", "ensure_sdk_venv"]

TORCH_PIN = "torch==2.13.0"
_READY_MARKER = ".tinker-ref-ready"  # written last: its presence means the venv is complete
_BUILD_TIMEOUT_S = 1800


class SdkVenvError(RuntimeError):
    """Building an SDK virtualenv failed; the message holds the failing command's output."""


def cache_root() -> Path:
    configured = os.environ.get("TINKER_REF_SDK_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tinker-ref" / "sdk-venvs"


def ensure_sdk_venv(version: str) -> Path:
    """Path of the python executable of a cached venv with `tinker==version` (and torch)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    # The python minor version is part of the key: wheels (torch's above all) are per-ABI.
    name = f"tinker-{version}-py{sys.version_info.major}{sys.version_info.minor}"
    target = root / name
    python = target / "bin" / "python"
    if (target / _READY_MARKER).is_file():
        return python
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        if (target / _READY_MARKER).is_file():
            return python  # another process built it while we waited
        for leftover in root.glob(f".{name}-build-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a build that died
        build = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=root))
        try:
            _build(build, version)
            if target.exists():
                shutil.rmtree(target)  # an incomplete entry without the marker
            os.rename(build, target)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    return python


def _build(folder: Path, version: str) -> None:
    # `python -m venv` from inside a venv still bases the new one on the base interpreter. The
    # venv is renamed after the build: its python works from anywhere (pyvenv.cfg sits beside
    # it), only console-script shebangs keep the old path, and nothing here uses them.
    _run([sys.executable, "-m", "venv", str(folder)], "create the virtualenv")
    python = str(folder / "bin" / "python")
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            f"tinker=={version}",
            TORCH_PIN,
        ],
        f"install tinker=={version} and {TORCH_PIN}",
    )
    probe = _run(
        [python, "-c", "import tinker, torch; print(tinker.__version__)"], "import the SDK"
    )
    if probe.strip() != version:
        raise SdkVenvError(f"installed tinker reports version {probe.strip()!r}, not {version!r}")
    (folder / _READY_MARKER).write_text(version + "\n")


def _run(command: list[str], purpose: str) -> str:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SdkVenvError(f"could not {purpose}: timed out after {_BUILD_TIMEOUT_S}s") from exc
    if result.returncode != 0:
        raise SdkVenvError(
            f"could not {purpose} (exit {result.returncode}): {' '.join(command)}\n"
            f"--- stdout ---\n{result.stdout[-20000:]}\n--- stderr ---\n{result.stderr[-20000:]}"
        )
    return result.stdout
