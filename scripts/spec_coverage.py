"""The spec's traceability: which tests and conformance cases verify which clause.

Reads the clauses of `spec/*.md` (a heading `### <ID> <title>` followed by a line
`*<KEYWORD> · <who it binds>*`), finds the citations statically — `@pytest.mark.spec("ID", ...)`
on test functions and classes and `pytestmark` in test modules (read with `ast`, nothing is
imported or run), and the `clauses` list of every conformance case — and writes the coverage
table (clause -> tests and cases) into `spec/README.md` between its coverage markers.

    .venv/bin/python scripts/spec_coverage.py           # rewrite the table (make spec)
    .venv/bin/python scripts/spec_coverage.py --check   # exit 1 when the table is stale

`problems()` lists every broken traceability rule; `tests/unit/test_spec_traceability.py`
asserts it is empty. This module imports nothing from the project.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = ROOT / "spec"
INDEX = SPEC_DIR / "README.md"
TESTS_DIR = ROOT / "tests"
CASES_DIR = ROOT / "conformance" / "cases" / "v1"
BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"

KEYWORDS = ("MUST", "SHOULD", "MAY")
CLAUSE_ID = re.compile(r"\b(?:CL|LOSS|SEQ|FUT|OPT|CKPT|SMP|WIRE|DET)-[0-9]+\b")
_HEADING = re.compile(r"^### (?P<id>[A-Z]+-[0-9]+) (?P<title>\S.*)$")
_STRENGTH = re.compile(r"^\*(?P<keyword>MUST|SHOULD|MAY)(?: NOT)? · (?P<binds>[^*]+)\*$")
_LINK = re.compile(r"\]\((?P<file>[a-z-]*\.md)?#(?P<anchor>[^)\s]+)\)")
# Pointers to the notes this spec was written from, which live outside the repository, and the
# section-number references that pointed into them. Built from pieces, so that this file does
# not match them itself.
_OUTSIDE = re.compile(
    "|".join(
        re.escape(p)
        for p in ("shared" + "/spec", "tinker-http-wire" + ".md", "losses-and-custom-loss" + ".md")
    )
)
_SECTION_SIGN = "\u00a7"
_OLD_SECTION_REF = re.compile(
    rf"\bspec\b[^\n{_SECTION_SIGN}]{{0,40}}{_SECTION_SIGN}"
    r"|\b(?:wire|losses) spec\b|\bspec section\b",
    re.IGNORECASE,
)
# Code has no numbered sections of its own, so any section sign in it points at another text.
_CODE_SUFFIXES = (".py", ".proto")


@dataclass(frozen=True)
class Clause:
    id: str
    keyword: str  # MUST / SHOULD / MAY ("MUST NOT" counts as MUST)
    binds: str  # client, server, both (with a note)
    title: str
    document: str  # file name under spec/
    line: int

    @property
    def anchor(self) -> str:
        return slug(f"{self.id} {self.title}")


@dataclass
class Citations:
    tests: dict[str, list[str]] = field(default_factory=dict)  # clause id -> test ids
    cases: dict[str, list[str]] = field(default_factory=dict)  # clause id -> case names
    problems: list[str] = field(default_factory=list)
    uncited_property_tests: list[str] = field(default_factory=list)
    uncited_cases: list[str] = field(default_factory=list)
    cited: set[str] = field(default_factory=set)  # every clause id cited anywhere


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# The order of the index's list of documents (the coverage table follows it).
DOCUMENT_ORDER = (
    "custom-loss.md",
    "losses.md",
    "ordering.md",
    "futures.md",
    "optimizer.md",
    "sampling.md",
    "wire.md",
    "determinism.md",
)


def spec_documents() -> list[Path]:
    documents = [p for p in SPEC_DIR.glob("*.md") if p != INDEX]
    rank = {name: i for i, name in enumerate(DOCUMENT_ORDER)}
    return sorted(documents, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def read_clauses(problems: list[str] | None = None) -> list[Clause]:
    problems = problems if problems is not None else []
    clauses: list[Clause] = []
    for path in spec_documents():
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            heading = _HEADING.match(line)
            if heading is None:
                if line.startswith("### ") and CLAUSE_ID.match(line[4:]):
                    problems.append(f"spec/{path.name}:{number}: malformed clause heading {line!r}")
                continue
            strength = next(
                (_STRENGTH.match(s) for s in lines[number : number + 3] if s.strip()), None
            )
            if strength is None:
                problems.append(
                    f"spec/{path.name}:{number}: clause {heading['id']} has no "
                    "'*KEYWORD · binds*' line under its heading"
                )
                continue
            clauses.append(
                Clause(
                    heading["id"],
                    strength["keyword"],
                    strength["binds"].strip(),
                    heading["title"].strip(),
                    path.name,
                    number,
                )
            )
    seen: dict[str, Clause] = {}
    for clause in clauses:
        if clause.id in seen:
            first = seen[clause.id]
            problems.append(
                f"clause id {clause.id} is used twice: spec/{first.document}:{first.line} and "
                f"spec/{clause.document}:{clause.line}"
            )
        seen[clause.id] = clause
    return clauses


# ----- citations in tests -----


def _spec_marks(node: ast.expr, named: Mapping[str, ast.Call] | None = None) -> Iterator[ast.Call]:
    """`pytest.mark.spec(...)` calls in a decorator or a `pytestmark` value; `named` resolves a
    module-level `NAME = pytest.mark.spec(...)` used as `@NAME`."""
    if isinstance(node, ast.List | ast.Tuple):
        for element in node.elts:
            yield from _spec_marks(element, named)
    elif isinstance(node, ast.Name) and named and node.id in named:
        yield named[node.id]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "spec"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "mark"
    ):
        yield node


def _ids_of(calls: Iterable[ast.Call], where: str, problems: list[str]) -> list[str]:
    ids: list[str] = []
    for call in calls:
        if call.keywords or not call.args:
            problems.append(f"{where}: pytest.mark.spec takes clause ids as positional strings")
        for arg in call.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                ids.append(arg.value)
            else:
                problems.append(
                    f"{where}: pytest.mark.spec needs string literals (the scan is static)"
                )
    return ids


def _pytestmark(body: list[ast.stmt]) -> ast.expr | None:
    for statement in body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets
        ):
            return statement.value
    return None


def _test_functions(
    body: list[ast.stmt], prefix: str
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]]:
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            prefix_wanted = "Test" if isinstance(node, ast.ClassDef) else "test"
            if node.name.startswith(prefix_wanted):
                yield f"{prefix}::{node.name}", node


def test_citations(problems: list[str]) -> dict[str, list[str]]:
    """Who cites what: a module's `pytestmark` under the module's path, a test's (or a test
    class's) own marks under `path::test`. Every test function appears, with [] when it cites
    nothing itself."""
    cited: dict[str, list[str]] = {}
    for path in sorted(TESTS_DIR.rglob("test_*.py")):
        if "fixture_project" in path.parts:
            continue  # a user's project that tests/integration runs; not a test of this repo
        where = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), filename=where)
        named = {
            target.id: call
            for statement in tree.body
            if isinstance(statement, ast.Assign)
            for call in _spec_marks(statement.value)
            for target in statement.targets
            if isinstance(target, ast.Name) and target.id != "pytestmark"
        }
        module_mark = _pytestmark(tree.body)
        if module_mark is not None:
            cited[where] = _ids_of(_spec_marks(module_mark, named), where, problems)
        for test_id, node in _test_functions(tree.body, where):
            ids = _ids_of(
                [c for d in node.decorator_list for c in _spec_marks(d, named)], test_id, problems
            )
            if isinstance(node, ast.ClassDef):
                class_mark = _pytestmark(node.body)
                if class_mark is not None:
                    ids += _ids_of(_spec_marks(class_mark, named), test_id, problems)
                for method_id, method in _test_functions(node.body, test_id):
                    marks = [c for d in method.decorator_list for c in _spec_marks(d, named)]
                    cited[method_id] = ids + _ids_of(marks, method_id, problems)
                continue
            cited[test_id] = ids
    return cited


def case_citations(problems: list[str]) -> dict[str, list[str]]:
    """conformance case name -> the clause ids in its `clauses` field."""
    cited: dict[str, list[str]] = {}
    for path in sorted(CASES_DIR.glob("*.json")):
        case = json.loads(path.read_text())
        clauses = case.get("clauses")
        if not isinstance(clauses, list) or not all(isinstance(c, str) for c in clauses):
            problems.append(f"{path.relative_to(ROOT)}: 'clauses' must be a list of clause ids")
            clauses = []
        cited[path.stem] = list(clauses)
    return cited


def collect() -> tuple[list[Clause], Citations]:
    citations = Citations()
    clauses = read_clauses(citations.problems)
    known = {c.id for c in clauses}
    tests = test_citations(citations.problems)
    cases = case_citations(citations.problems)
    for source, cited, kind in ((tests, citations.tests, "test"), (cases, citations.cases, "case")):
        for name, ids in source.items():
            for clause_id in ids:
                if clause_id not in known:
                    citations.problems.append(f"{kind} {name} cites unknown clause {clause_id}")
                    continue
                citations.cited.add(clause_id)
                entries = cited.setdefault(clause_id, [])
                if name not in entries:
                    entries.append(name)
    citations.uncited_property_tests = [
        name
        for name, ids in tests.items()
        if name.startswith("tests/property/")
        and "::" in name
        and not ids
        and not tests.get(name.split("::")[0])  # the module's pytestmark covers its tests
    ]
    citations.uncited_cases = [name for name, ids in cases.items() if not ids]
    return clauses, citations


# ----- the table -----


def render_table(clauses: list[Clause], citations: Citations) -> str:
    rows = [
        "| clause | keyword | binds | tests | conformance cases |",
        "| --- | --- | --- | --- | --- |",
    ]
    for clause in clauses:
        tests = "<br>".join(f"`{t}`" for t in sorted(citations.tests.get(clause.id, [])))
        cases = ", ".join(f"`{c}`" for c in sorted(citations.cases.get(clause.id, [])))
        link = f"[{clause.id}]({clause.document}#{clause.anchor})"
        rows.append(
            f"| {link} | {clause.keyword} | {clause.binds} | {tests or '—'} | {cases or '—'} |"
        )
    counts = {k: sum(c.keyword == k for c in clauses) for k in KEYWORDS}
    uncovered = [c.id for c in clauses if c.id not in citations.cited]
    summary = (
        f"{len(clauses)} clauses: {counts['MUST']} MUST, {counts['SHOULD']} SHOULD, "
        f"{counts['MAY']} MAY. Not cited by any test or case: "
        f"{', '.join(uncovered) if uncovered else 'none'}."
    )
    return "\n".join([summary, "", *rows])


def rewritten_index(clauses: list[Clause], citations: Citations) -> str:
    text = INDEX.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{INDEX}: the markers {BEGIN} / {END} are missing")
    table = render_table(clauses, citations)
    return text[: start + len(BEGIN)] + "\n" + table + "\n" + text[end:]


# ----- the rules -----


def _repository_files() -> list[Path]:
    """Files a fresh clone would contain (tracked, plus new files git does not ignore)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout.decode()
        return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (UnicodeDecodeError, OSError):
        return None


def coverage_problems(clauses: list[Clause], citations: Citations) -> list[str]:
    """Unknown or malformed citations, MUST clauses nobody verifies, cases and property tests
    that cite nothing."""
    found = list(citations.problems)
    for clause in clauses:
        if clause.keyword == "MUST" and clause.id not in citations.cited:
            found.append(
                f"MUST clause {clause.id} (spec/{clause.document}:{clause.line}) has no verifying "
                f'test or conformance case: add @pytest.mark.spec("{clause.id}") to the tests '
                "that fail without it, or the id to a case's 'clauses'"
            )
    found += [f"conformance case {name} cites no clause" for name in citations.uncited_cases]
    found += [
        f"property test {name} cites no clause (@pytest.mark.spec)"
        for name in citations.uncited_property_tests
    ]
    return found


def table_problems(clauses: list[Clause], citations: Citations) -> list[str]:
    if INDEX.read_text() != rewritten_index(clauses, citations):
        return ["spec/README.md: the coverage table is stale; run `make spec`"]
    return []


def link_problems(clauses: list[Clause]) -> list[str]:
    """Links between spec documents that do not land on a clause."""
    found = []
    for document in [INDEX, *spec_documents()]:
        for number, line in enumerate(document.read_text().splitlines(), 1):
            for link in _LINK.finditer(line):
                target = link["file"] or document.name
                anchors = {c.anchor for c in clauses if c.document == target}
                if not (SPEC_DIR / target).exists() or (
                    CLAUSE_ID.match(link["anchor"].upper()) and link["anchor"] not in anchors
                ):
                    found.append(
                        f"spec/{document.name}:{number}: link to {target}#{link['anchor']} "
                        "points at no clause"
                    )
    return found


def reference_problems(clauses: list[Clause]) -> list[str]:
    """Files of the repository that point outside it, use section numbers of the old notes,
    or name a clause that does not exist."""
    known = {c.id for c in clauses}
    found = []
    for path in _repository_files():
        text = _text(path)
        if text is None:
            continue
        name = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                found.append(f"{name}:{number}: points outside the repository: {line.strip()!r}")
            if _OLD_SECTION_REF.search(line) or (
                name.endswith(_CODE_SUFFIXES) and _SECTION_SIGN in line
            ):
                found.append(f"{name}:{number}: a section reference instead of a clause id")
            for clause_id in CLAUSE_ID.findall(line):
                if clause_id not in known:
                    found.append(f"{name}:{number}: refers to unknown clause {clause_id}")
    return found


def problems() -> list[str]:
    """Every broken traceability rule, as readable lines (empty when all hold)."""
    clauses, citations = collect()
    return (
        coverage_problems(clauses, citations)
        + table_problems(clauses, citations)
        + link_problems(clauses)
        + reference_problems(clauses)
    )


def main(argv: list[str]) -> int:
    clauses, citations = collect()
    text = rewritten_index(clauses, citations)
    if "--check" in argv:
        if INDEX.read_text() != text:
            print("spec/README.md: the coverage table is stale; run `make spec`", file=sys.stderr)
            return 1
        return 0
    INDEX.write_text(text)
    print(render_table(clauses, citations).splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
