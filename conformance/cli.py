"""`tinker-conformance`: run the conformance suite against an adapter, or regenerate expectations.

    tinker-conformance run --adapter "CMD ..." [--features FILE] [--known-failing FILE]
                           [--cases GLOB] [--jobs N] [--grpc] [--out DIR]
    tinker-conformance regenerate [--adapter "CMD ..."] [--cases GLOB]

`run` prints `N passed, N failed, ...`, the failures with expected vs got, writes
`DIR/report.json` and `DIR/junit.xml`, and exits 0 only when nothing unexpected happened.
`regenerate` rewrites the `expected` block of the case files from the reference adapter
(tinker_ref over HTTP unless --adapter says otherwise).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

# The runner (torch, the mock server) is imported only when a command runs, so `--help` and a
# usage error answer at once.
from conformance import CASE_TIMEOUT_S, CASES_DIR, ROOT

REFERENCE_ADAPTER = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'adapters/python/adapter.py'))} "
    "--sdk tinker_ref --transport http"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinker-conformance", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run cases through an adapter and judge them")
    run.add_argument("--adapter", required=True, metavar="CMD", help="the adapter command line")
    run.add_argument("--features", type=Path, help='JSON {"features": [...]} the SDK offers')
    run.add_argument("--known-failing", type=Path, help="lines 'case-or-glob  # reason'")
    run.add_argument("--cases", default="*", metavar="GLOB", help="globs, comma-separated")
    run.add_argument("--jobs", type=int, default=4, help="cases in flight at once (default 4)")
    run.add_argument("--grpc", action="store_true", help="also serve gRPC (gRPC adapters)")
    run.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="seconds per case")
    run.add_argument(
        "--engine-processes",
        type=int,
        default=0,
        metavar="N",
        help="run the mock's engine work in N processes (default 0: in its threads); results "
        "are the same either way",
    )
    run.add_argument("--out", type=Path, default=Path("conformance-report"), help="report folder")
    run.add_argument("--case-dir", type=Path, default=CASES_DIR, help=argparse.SUPPRESS)
    regen = commands.add_parser("regenerate", help="rewrite expectations from the reference")
    regen.add_argument("--adapter", default=REFERENCE_ADAPTER, metavar="CMD")
    regen.add_argument("--cases", default="*", metavar="GLOB")
    regen.add_argument("--case-dir", type=Path, default=CASES_DIR, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from conformance.cases import CaseError, load_cases, load_expectations
    from conformance.runner import regenerate, run_suite
    from conformance.session import ProtocolError

    try:
        if args.command == "regenerate":
            report = regenerate(args.case_dir, args.adapter, args.cases)
            print(f"regenerated {len(report.outcomes)} case(s) in {report.seconds:.1f}s")
            return 0
        cases = load_cases(args.case_dir, args.cases)
        expectations = load_expectations(args.features, args.known_failing)
        report = run_suite(
            cases,
            args.adapter,
            expectations,
            jobs=args.jobs,
            grpc=args.grpc,
            case_timeout=args.timeout,
            engine_processes=args.engine_processes,
        )
    except (CaseError, ProtocolError) as exc:
        print(f"tinker-conformance: {exc}", file=sys.stderr)
        return 2
    report.write(args.out)
    details = report.details()
    if details:
        print(details)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
