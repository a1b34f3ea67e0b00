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
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "TORCH_PIN",
    "SdkVenvError",
    "cache_root",
    "ensure_cached_venv",
    "ensure_cookbook_venv",
    "ensure_sdk_venv",
]

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
    # The python minor version is part of the key: wheels (torch's above all) are per-ABI.
    name = f"tinker-{version}-py{sys.version_info.major}{sys.version_info.minor}"
    return ensure_cached_venv(name, lambda folder: _build(folder, version))


def ensure_cached_venv(name: str, build: Callable[[Path], None]) -> Path:
    """Python of the cached venv `name`, made by `build(folder)` on first use; `build` must
    write `_READY_MARKER` into the folder last."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
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
        folder = Path(tempfile.mkdtemp(prefix=f".{name}-build-", dir=root))
        try:
            build(folder)
            if target.exists():
                shutil.rmtree(target)  # an incomplete entry without the marker
            os.rename(folder, target)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
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


# The offline-development venv: the official SDK 0.38, tinker-cookbook and what a user's own
# test suite needs to run the `tinker_mock` fixture (tinker-ref's runtime dependencies and
# pytest; tinker-ref itself is installed per test run from the checkout, see
# tests/integration/test_fixture_project.py). Used by the cookbook example tests too.
#
# tinker-cookbook 0.6.1 declares `tml-renderers>=0.4.1`, which the package index here lacks, so
# plain `pip install` cannot resolve it; tml-renderers is imported only for Inkling / Kimi-K3
# tokenizers and the audio recipes, none of which the examples use. The venv gets the cookbook
# with `--no-deps` plus every other dependency it declares (read from its own metadata, extras
# excluded).
COOKBOOK_VERSION = "0.6.1"
COOKBOOK_SDK_VERSION = "0.38.0"
COOKBOOK_UNAVAILABLE_DEPENDENCIES = ("tml-renderers",)
_REPO_ROOT = Path(__file__).resolve().parents[2]
_TEST_RUNNER = ("pytest>=8", "pytest-timeout>=2.3")
# The cookbook's `math-rl` extra (sympy comes with torch): the math-RL recipe imports them.
_COOKBOOK_RECIPE_EXTRAS = ("math-verify>=0.5.0", "pylatexenc>=2.0")


def ensure_cookbook_venv(version: str = COOKBOOK_VERSION) -> Path:
    """Python of a cached venv with `tinker-cookbook==version` on `tinker==0.38.0` and torch,
    plus tinker-ref's runtime dependencies and pytest (not tinker-ref itself).

    The first call builds it (many minutes on a small machine). tinker-ref's dependency list
    changes more often than the cookbook: requirements it does not satisfy any more are
    installed into the cached venv (under its lock) instead of rebuilding it.
    """
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    name = f"tinker-cookbook-{version}-tinker-{COOKBOOK_SDK_VERSION}-{tag}"
    extras = [*_tinker_ref_dependencies(), *_TEST_RUNNER, *_COOKBOOK_RECIPE_EXTRAS]
    python = ensure_cached_venv(name, lambda folder: _build_cookbook(folder, version, extras))
    with open(cache_root() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = json.loads(_run([str(python), "-c", _UNSATISFIED, *extras], "check the venv"))
        if missing:
            pins = [f"tinker=={COOKBOOK_SDK_VERSION}", TORCH_PIN]  # keep them as they are
            _run([*_pip_install(python), *missing, *pins], f"add {missing} to the cookbook venv")
    return python


# Run in the venv: which requirement strings (argv) the installed distributions do not meet.
_UNSATISFIED = """
import json, sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
missing = []
for text in sys.argv[1:]:
    requirement = Requirement(text)
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        missing.append(text)
        continue
    if not requirement.specifier.contains(installed, prereleases=True):
        missing.append(text)
print(json.dumps(missing))
"""


def _pip_install(python: Path) -> list[str]:
    return [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]


def _tinker_ref_dependencies() -> list[str]:
    with open(_REPO_ROOT / "pyproject.toml", "rb") as pyproject:
        return list(tomllib.load(pyproject)["project"]["dependencies"])


def _build_cookbook(folder: Path, version: str, extras: list[str]) -> None:
    # The SDK venv first (it writes a ready marker too; only the renamed folder's counts, and
    # a failure below discards the whole folder).
    _build(folder, COOKBOOK_SDK_VERSION)
    python = str(folder / "bin" / "python")
    pip = _pip_install(Path(python))
    cookbook = f"tinker-cookbook=={version}"
    _run([*pip, "--no-deps", cookbook], f"install {cookbook} without dependencies")
    declared = json.loads(
        _run(
            [
                python,
                "-c",
                "import importlib.metadata as m, json; "
                "print(json.dumps(m.requires('tinker-cookbook')))",
            ],
            "read the cookbook's declared dependencies",
        )
    )
    wanted = [req for req in declared if not _is_extra(req) and not _unavailable(req)]
    # The SDK and torch pins go in the same resolution, so `tinker>=0.38.0` cannot upgrade them.
    _run(
        [*pip, *wanted, *extras, f"tinker=={COOKBOOK_SDK_VERSION}", TORCH_PIN],
        f"install the dependencies of {cookbook}, tinker-ref and pytest",
    )
    probe = _run(
        [
            python,
            "-c",
            "import importlib.metadata as m, tinker, tinker_cookbook.preference.train_dpo, "
            "tinker_cookbook.recipes.decisions.forecasting, pytest; "
            "print(m.version('tinker-cookbook'), tinker.__version__)",
        ],
        "import the cookbook recipes",
    )
    if probe.split() != [version, COOKBOOK_SDK_VERSION]:
        raise SdkVenvError(f"cookbook venv reports {probe.strip()!r}")
    (folder / _READY_MARKER).write_text(f"{cookbook} tinker=={COOKBOOK_SDK_VERSION}\n")


def _is_extra(requirement: str) -> bool:
    _, _, marker = requirement.partition(";")
    return "extra" in marker


def _unavailable(requirement: str) -> bool:
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
    return name.lower().replace("_", "-") in COOKBOOK_UNAVAILABLE_DEPENDENCIES


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
