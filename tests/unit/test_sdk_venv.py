"""Unit tests of tests/support/sdk_venv.py: caching, atomic placement, failure reporting.

`_build` (venv + pip, minutes and a network) is replaced by a stub that writes a fake venv, so
these tests check the cache logic only; the real build runs in the integration tests.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from tests.support import sdk_venv


def _fake_build(calls: list[str], fail: bool = False) -> object:
    def build(folder: Path, version: str) -> None:
        calls.append(version)
        (folder / "bin").mkdir()
        (folder / "bin" / "python").write_text("#!fake\n")
        if fail:
            raise sdk_venv.SdkVenvError("could not install: pip said no")
        (folder / sdk_venv._READY_MARKER).write_text(version)

    return build


def test_venv_is_built_once_into_the_cache_and_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINKER_REF_SDK_CACHE", str(tmp_path))
    calls: list[str] = []
    monkeypatch.setattr(sdk_venv, "_build", _fake_build(calls))
    first = sdk_venv.ensure_sdk_venv("9.9.9")
    second = sdk_venv.ensure_sdk_venv("9.9.9")
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert first == second == tmp_path / f"tinker-9.9.9-{tag}" / "bin" / "python"
    assert first.is_file()
    assert calls == ["9.9.9"]
    assert not list(tmp_path.glob(".tinker-*-build-*"))


def test_parallel_callers_share_one_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_REF_SDK_CACHE", str(tmp_path))
    calls: list[str] = []
    monkeypatch.setattr(sdk_venv, "_build", _fake_build(calls))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(sdk_venv.ensure_sdk_venv("1.0.0")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert calls == ["1.0.0"]


def test_failed_build_raises_with_its_output_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINKER_REF_SDK_CACHE", str(tmp_path))
    calls: list[str] = []
    monkeypatch.setattr(sdk_venv, "_build", _fake_build(calls, fail=True))
    with pytest.raises(sdk_venv.SdkVenvError, match="pip said no"):
        sdk_venv.ensure_sdk_venv("2.0.0")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_leftovers_of_a_crashed_build_are_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINKER_REF_SDK_CACHE", str(tmp_path))
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / f".tinker-3.0.0-{tag}-build-dead").mkdir()
    incomplete = tmp_path / f"tinker-3.0.0-{tag}"
    (incomplete / "bin").mkdir(parents=True)  # no ready marker: a half-placed entry
    calls: list[str] = []
    monkeypatch.setattr(sdk_venv, "_build", _fake_build(calls))
    python = sdk_venv.ensure_sdk_venv("3.0.0")
    assert calls == ["3.0.0"]
    assert (python.parent.parent / sdk_venv._READY_MARKER).is_file()
    assert not (tmp_path / f".tinker-3.0.0-{tag}-build-dead").exists()


def test_cache_defaults_to_the_user_cache_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINKER_REF_SDK_CACHE", raising=False)
    assert sdk_venv.cache_root() == Path.home() / ".cache" / "tinker-ref" / "sdk-venvs"
