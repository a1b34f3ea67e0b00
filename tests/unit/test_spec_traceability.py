"""The spec (spec/*.md) and the tests prove each other: every MUST clause is verified by a test or
a conformance case, every citation names a real clause, and nothing points outside the
repository. The rules live in scripts/spec_coverage.py (which also writes the coverage table);
each test here checks one of them, so a failure says which rule broke and where."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_generator() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "spec_coverage.py"
    spec = importlib.util.spec_from_file_location("spec_coverage", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("spec_coverage", module)
    spec.loader.exec_module(module)
    return module


coverage = _load_generator()


@pytest.fixture(scope="module")
def collected() -> tuple[list, object]:
    return coverage.collect()


def _report(problems: list[str]) -> str:
    return "\n".join(problems)


def test_every_must_clause_is_verified_and_every_citation_names_a_clause(collected) -> None:
    clauses, citations = collected
    problems = coverage.coverage_problems(clauses, citations)
    assert not problems, _report(problems)


def test_the_spec_has_clauses_of_every_area_with_unique_ids(collected) -> None:
    clauses, _ = collected
    prefixes = {c.id.split("-")[0] for c in clauses}
    assert prefixes == {"CL", "LOSS", "SEQ", "FUT", "OPT", "CKPT", "SMP", "WIRE", "DET"}
    assert len({c.id for c in clauses}) == len(clauses)
    assert {c.keyword for c in clauses} <= {"MUST", "SHOULD", "MAY"}


def test_the_committed_coverage_table_is_what_make_spec_writes(collected) -> None:
    clauses, citations = collected
    problems = coverage.table_problems(clauses, citations)
    assert not problems, _report(problems)


def test_links_between_spec_documents_land_on_clauses(collected) -> None:
    clauses, _ = collected
    problems = coverage.link_problems(clauses)
    assert not problems, _report(problems)


def test_nothing_in_the_repository_points_outside_it_or_at_a_missing_clause(collected) -> None:
    clauses, _ = collected
    problems = coverage.reference_problems(clauses)
    assert not problems, _report(problems)


def test_removing_a_clauses_citations_is_reported(collected) -> None:
    """The rule itself: take every citation of one MUST clause away, and it is reported."""
    clauses, citations = collected
    victim = next(c for c in clauses if c.keyword == "MUST")
    citations.cited.discard(victim.id)
    try:
        problems = coverage.coverage_problems(clauses, citations)
    finally:
        citations.cited.add(victim.id)
    assert any(f"MUST clause {victim.id} " in p for p in problems)
