"""The Tinker SDK conformance suite: cases as data, any-language adapters, wire-level checks.

Modelled on the Connect RPC conformance suite. `cases/v1/*.json` are the test vectors (inputs
and the reference implementation's expected results); an adapter is any executable that speaks
`PROTOCOL.md` (NDJSON on stdin/stdout) and runs a case with its SDK against the mock server; the
runner (`tinker-conformance run`) starts the mock, feeds the adapter, compares results, checks
what the mock received per case (the `X-Conformance-Case` header) and writes report.json and
junit.xml. Modules: `cases` (load and validate), `servers` (mocks per server setting, fault
plans), `session` (the adapter process), `checks` (expected vs got, wire checks), `report`,
`runner`, `cli`.
"""

from pathlib import Path

PROTOCOL_VERSION = 1
CASE_TIMEOUT_S = 120.0  # a case with no result within this many seconds is errored
ROOT = Path(__file__).resolve().parent
CASES_DIR = ROOT / "cases" / "v1"
