"""Loading the suite's inputs: cases (validated against the JSON Schema), features files and
known-failing lists.

A case file is one JSON object (`schema/case.v1.schema.json`). Beyond the schema, loading checks
what a schema cannot: unique names, step ids that exist, and `same_as` twins whose stored states
agree within tolerance (a fault case must end like its fault-free twin — if the reference applied
a retried op twice, its regenerated state would differ and loading fails, loudly, before any run;
that the two end on the very same bits is checked when both run, `runner.judge_twins`).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from conformance import CASES_DIR, ROOT, state

SCHEMA_PATH = ROOT / "schema" / "case.v1.schema.json"
Case = dict[str, Any]


class CaseError(ValueError):
    """A case file, features file or known-failing list is invalid."""


def _validator(require_expected: bool) -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    if not require_expected:  # authoring: expectations do not exist before regeneration
        schema["required"] = [name for name in schema["required"] if name != "expected"]
    return jsonschema.Draft202012Validator(schema)


def load_cases(
    directory: Path = CASES_DIR, pattern: str = "*", require_expected: bool = True
) -> list[Case]:
    """Cases whose name matches `pattern` (globs separated by commas), sorted by name."""
    validator = _validator(require_expected)
    every: dict[str, Case] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            case = json.loads(path.read_text())
        except ValueError as exc:
            raise CaseError(f"{path.name}: not JSON: {exc}") from exc
        errors = sorted(validator.iter_errors(case), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
            raise CaseError(f"{path.name}: {where}: {errors[0].message}")
        if path.stem != case["name"]:
            raise CaseError(f"{path.name}: the file must be named after the case ({case['name']})")
        _check_steps(case)
        every[case["name"]] = case
    if require_expected:
        _check_twins(every)
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    selected = [
        every[name] for name in sorted(every) if any(fnmatch.fnmatchcase(name, g) for g in globs)
    ]
    if not selected:
        raise CaseError(f"no case matches {pattern!r} in {directory}")
    return selected


def _check_steps(case: Case) -> None:
    ids = [step["id"] for step in case["steps"]]
    if len(set(ids)) != len(ids):
        raise CaseError(f"{case['name']}: duplicate step ids in {ids}")
    for step in case["steps"]:
        for ref in [step.get("from"), *step.get("steps", [])]:
            if ref is not None and ref not in ids:
                raise CaseError(f"{case['name']}: step {step['id']} refers to unknown {ref!r}")
        if "data" in step and step["data"] not in case["data"]:
            raise CaseError(f"{case['name']}: step {step['id']} uses unknown data {step['data']}")


def _check_twins(cases: dict[str, Case]) -> None:
    for case in cases.values():
        twin_name = case.get("same_as")
        if twin_name is None:
            continue
        twin = cases.get(twin_name)
        if twin is None:
            raise CaseError(f"{case['name']}: same_as names unknown case {twin_name!r}")
        failures = state.compare("state", twin["expected"]["state"], case["expected"]["state"])
        if failures:
            raise CaseError(
                f"{case['name']}: its stored state differs from its twin {twin_name}'s: "
                + "; ".join(failures)
            )


def without_expectations(case: Case) -> Case:
    """What the adapter gets: the case minus everything it must not see."""
    hidden = {"expected", "wire", "same_as", "faults", "tolerance", "clauses"}
    return {key: value for key, value in case.items() if key not in hidden}


@dataclass(frozen=True)
class Expectations:
    """An adapter's features (cases needing others are skipped) and known failures."""

    features: frozenset[str] | None  # None: no features file, every feature assumed
    known_failing: dict[str, str]  # case-name glob -> reason

    def missing_features(self, case: Case) -> list[str]:
        if self.features is None:
            return []
        return sorted(set(case["features"]) - self.features)

    def known_failure(self, name: str) -> str | None:
        for pattern, reason in self.known_failing.items():
            if fnmatch.fnmatchcase(name, pattern):
                return reason
        return None

    def flaky(self, name: str) -> bool:
        """A known failure whose reason starts with "flaky": it fails in most runs and may
        pass in some (a race in the SDK), so a pass is not an unexpected pass."""
        reason = self.known_failure(name)
        return reason is not None and reason.lower().startswith("flaky")


def load_expectations(features: Path | None, known_failing: Path | None) -> Expectations:
    feature_set: frozenset[str] | None = None
    if features is not None:
        data = json.loads(features.read_text())
        if not isinstance(data.get("features"), list):
            raise CaseError(f'{features}: expected {{"features": [...]}}')
        known = set(json.loads(SCHEMA_PATH.read_text())["$defs"]["feature"]["enum"])
        unknown = sorted(set(data["features"]) - known)
        if unknown:
            raise CaseError(f"{features}: unknown feature(s) {unknown}; known: {sorted(known)}")
        feature_set = frozenset(data["features"])
    entries: dict[str, str] = {}
    if known_failing is not None:
        entries = dict(_known_failing_lines(known_failing.read_text().splitlines(), known_failing))
    return Expectations(feature_set, entries)


def _known_failing_lines(lines: Iterable[str], path: Path) -> Iterable[tuple[str, str]]:
    """`case-name-or-glob  # reason` per line; a reason is mandatory (say why it fails). A reason
    starting with "flaky" marks a case that fails in most runs but not all."""
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pattern, _, reason = line.partition("#")
        if not reason.strip():
            raise CaseError(f"{path}:{number}: a known failure needs '# reason'")
        yield pattern.strip(), reason.strip()
