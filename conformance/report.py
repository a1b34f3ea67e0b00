"""Outcomes of a run and their three renderings: the console summary, report.json, junit.xml.

Per case: `passed`, `failed`, `skipped` (with the reason) or `errored` (the adapter could not
run it). A failure listed in the known-failing file is `expected_failure`; a listed case that
passes is `unexpected_pass`, which fails the run (the list must shrink when an SDK improves).
`ok` is true only when nothing unexpected happened.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

UNEXPECTED = frozenset({"failed", "errored", "unexpected_pass"})


@dataclass
class CaseOutcome:
    name: str
    status: str  # passed | failed | skipped | errored | expected_failure | unexpected_pass
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # "where: expected X, got Y"
    reason: str | None = None  # skip reason, adapter error, or known-failure reason


@dataclass
class Report:
    adapter: dict[str, Any]
    outcomes: list[CaseOutcome]
    seconds: float

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return not any(o.status in UNEXPECTED for o in self.outcomes)

    def summary(self) -> str:
        counts = self.counts
        order = ("passed", "failed", "errored", "skipped", "expected_failure", "unexpected_pass")
        parts = [f"{counts[s]} {s.replace('_', ' ')}" for s in order if counts[s] or s in order[:2]]
        return f"{', '.join(parts)} ({self.seconds:.1f}s, adapter {self.adapter.get('name')})"

    def details(self) -> str:
        lines = []
        for outcome in sorted(self.outcomes, key=lambda o: o.name):
            if outcome.status in UNEXPECTED:
                lines.append(f"{outcome.status.upper()} {outcome.name}")
                lines += [f"    {failure}" for failure in outcome.failures]
                if outcome.reason:
                    lines += [f"    {line}" for line in outcome.reason.splitlines()[-15:]]
        return "\n".join(lines)

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        report = {
            "adapter": self.adapter,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "counts": dict(self.counts),
            "cases": [asdict(o) for o in sorted(self.outcomes, key=lambda o: o.name)],
        }
        (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        ET.ElementTree(self._junit()).write(
            directory / "junit.xml", encoding="utf-8", xml_declaration=True
        )

    def _junit(self) -> ET.Element:
        counts = self.counts
        suite = ET.Element(
            "testsuite",
            name=f"tinker-conformance[{self.adapter.get('name')}]",
            tests=str(len(self.outcomes)),
            failures=str(counts["failed"] + counts["unexpected_pass"]),
            errors=str(counts["errored"]),
            skipped=str(counts["skipped"] + counts["expected_failure"]),
            time=f"{self.seconds:.3f}",
        )
        for outcome in sorted(self.outcomes, key=lambda o: o.name):
            case = ET.SubElement(
                suite,
                "testcase",
                classname="conformance",
                name=outcome.name,
                time=f"{outcome.seconds:.3f}",
            )
            text = "\n".join(outcome.failures + ([outcome.reason] if outcome.reason else []))
            if outcome.status in ("failed", "unexpected_pass"):
                message = (
                    "passed but is listed as known-failing"
                    if outcome.status == "unexpected_pass"
                    else (outcome.failures or ["failed"])[0]
                )
                ET.SubElement(case, "failure", message=message).text = text
            elif outcome.status == "errored":
                ET.SubElement(
                    case, "error", message="the adapter could not run the case"
                ).text = text
            elif outcome.status in ("skipped", "expected_failure"):
                ET.SubElement(case, "skipped", message=f"{outcome.status}: {outcome.reason}")
        return suite
