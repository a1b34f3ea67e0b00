"""The stored expectations hold on every CPU kernel path this machine can run.

ATen dispatches its CPU kernels per machine (scalar `default`, `avx2`, `avx512`; others on ARM),
and each rounds differently in the last bits. `ATEN_CPU_CAPABILITY` selects a path, so one
machine can stand in for several: for each path, the whole suite runs against the reference
client (tinker_ref over HTTP) and must pass, and regenerating the expectations must leave every
case file byte-identical (nothing stored moves with a kernel path, and regeneration does not
churn the files with last-bit noise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import CASES_DIR, ROOT

ADAPTER = f"{sys.executable} {ROOT / 'adapters' / 'python' / 'adapter.py'} --sdk tinker_ref"


def _capability(requested: str | None) -> str:
    env = dict(os.environ)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if requested is not None:
        env["ATEN_CPU_CAPABILITY"] = requested
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip().lower()


NATIVE = _capability(None)
# Every x86 machine runs `default`; AVX2 runs on AVX-512 machines too. Other architectures
# (ARM: `sve256`, ...) run `default` and their own.
PATHS = ["default", *(["avx2"] if NATIVE in ("avx2", "avx512") else []), NATIVE]
PATHS = list(dict.fromkeys(PATHS))


def _conformance(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": path}
    return subprocess.run(
        [sys.executable, "-m", "conformance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("path", PATHS)
def test_the_kernel_path_is_the_one_requested(path: str) -> None:
    assert _capability(path) == path  # otherwise the runs below would all test one path


@pytest.mark.spec("DET-6")
@pytest.mark.parametrize("path", PATHS)
def test_the_reference_passes_every_case_on_kernel_path(path: str, tmp_path: Path) -> None:
    result = _conformance(
        path,
        "run",
        "--adapter",
        ADAPTER,
        "--features",
        str(ROOT / "adapters" / "tinker_ref.features.json"),
        "--out",
        str(tmp_path),
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{path}:\n{result.stdout}\n{result.stderr[-3000:]}"
    cases = len(list(CASES_DIR.glob("*.json")))
    assert summary.startswith(f"{cases} passed, 0 failed"), summary


@pytest.mark.spec("DET-6")
@pytest.mark.parametrize("path", PATHS)
def test_regenerating_on_kernel_path_changes_no_case_file(path: str, tmp_path: Path) -> None:
    copy = tmp_path / "cases"
    shutil.copytree(CASES_DIR, copy)
    result = _conformance(path, "regenerate", "--case-dir", str(copy))
    assert result.returncode == 0, f"{path}:\n{result.stdout}\n{result.stderr[-3000:]}"
    stored = sorted(CASES_DIR.glob("*.json"))
    changed = [p.name for p in stored if (copy / p.name).read_bytes() != p.read_bytes()]
    assert not changed, f"regenerating under ATEN_CPU_CAPABILITY={path} rewrote {changed}"
