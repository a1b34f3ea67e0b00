"""Which CPU settings make the mock's results bit-identical across x86 machines? A table.

Runs every conformance case through the reference client once per setting below (each in its
own process, so the environment variables take effect before torch loads) and compares the
bitwise digest of each case's final weights and Adam state with those of a reference setting:
an AVX2-only machine as this one emulates it (ATen's `avx2` kernels, MKL and oneDNN capped at
AVX2). A setting whose digests all match would make stored bitwise expectations portable
between AVX2 and AVX-512 machines; one that does not shows why the suite compares stored
expectations with a tolerance (conformance/state.py).

    .venv/bin/python scripts/kernel_path_table.py          # prints a Markdown table

Takes about 12 s per setting on 2 cores. ARM machines have other paths entirely, so no x86
setting could make them agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

AVX2_MACHINE = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SETTINGS: dict[str, dict[str, str]] = {
    # what each kind of machine runs by default
    "AVX2 machine (reference)": {"ATEN_CPU_CAPABILITY": "avx2", **AVX2_MACHINE},
    "AVX-512 machine": {},
    # ATen's kernel path pinned, on either machine
    "AVX-512 machine, ATen pinned to avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "AVX-512 machine, ATen pinned to default": {"ATEN_CPU_CAPABILITY": "default"},
    "AVX2 machine, ATen pinned to default": {"ATEN_CPU_CAPABILITY": "default", **AVX2_MACHINE},
    # ... and MKL asked for results that do not depend on the CPU (conditional reproducibility)
    "AVX-512 machine, ATen avx2, MKL_CBWR=COMPATIBLE": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "COMPATIBLE",
    },
    "AVX2 machine, ATen avx2, MKL_CBWR=COMPATIBLE": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "COMPATIBLE",
        **AVX2_MACHINE,
    },
    "AVX-512 machine, ATen default, MKL_CBWR=COMPATIBLE": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
    },
    "AVX2 machine, ATen default, MKL_CBWR=COMPATIBLE": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        **AVX2_MACHINE,
    },
}

_CHILD = """
import json, sys
from conformance.cases import Expectations, load_cases
from conformance.cli import REFERENCE_ADAPTER
from conformance.runner import run_suite
observed = {}
run_suite(load_cases(), REFERENCE_ADAPTER, Expectations(None, {}), record=observed)
print(json.dumps({name: o["digest"] for name, o in observed.items()}))
"""


def digests(settings: dict[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")
        and key != "ONEDNN_MAX_CPU_ISA"
    }
    env.update(settings)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    runs = {name: digests(settings) for name, settings in SETTINGS.items()}
    names = list(SETTINGS)
    reference = runs[names[0]]
    print("| setting | cases bit-identical to the AVX2 machine | ... to the row above |")
    print("| --- | --- | --- |")
    previous: dict[str, str] | None = None
    for name in names:
        run = runs[name]
        same = sum(run[case] == reference[case] for case in reference)
        above = "" if previous is None else str(sum(run[c] == previous[c] for c in reference))
        print(f"| {name} | {same}/{len(reference)} | {above} |")
        previous = run


if __name__ == "__main__":
    main()
