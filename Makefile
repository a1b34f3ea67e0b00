# The README's commands. Every target that needs Python sets up .venv first (once).
#   make demo           set up, then run the custom-loss example against an embedded mock server
#   make test           set up, then codegen check + lint + type check + the whole test suite
#   make test-fast      the loop to run before every commit (under a minute on 2 cores): lint,
#                       then tests/unit and tests/property except the tests marked `slow`,
#                       under the "fast" hypothesis profile (a quarter of the examples)
#   make generate       regenerate tinker_ref/_proto from proto/
#   make checkgenerate  fail if regenerating would change a committed file
#   make bench          side-by-side benchmarks; updates README.md "Benchmarks"
#   make conformance-tinkex  build Tinkex 0.4.0 offline (cached) and run the 48 cases through it
#   make spec           regenerate the spec's coverage table (spec/README.md)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint typecheck generate checkgenerate bench spec clean

# torch is pinned first: `torch==2.13.0` is the CPU wheel already on disk here; an unpinned
# torch would pull a multi-GB CUDA build. pyproject.toml only declares a compatible range.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,tokenizer-data]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python examples/custom_loss_training.py

# Two workers: most of the suite waits on subprocesses and servers, so 2 cores overlap well
# (10.6 -> 6.5 minutes measured). --dist loadfile keeps each file's module-scoped fixtures
# (servers, SDK runs) in one worker. pytest exits 5 when nothing is collected: make fails then.
test: checkgenerate lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile

# What it leaves out, `make test` runs: tests/integration, tests/reliability, tests/conformance
# (servers, subprocesses, official SDKs), the `slow` tests (fresh interpreters, real vocabularies)
# and the dev profile's 4x examples. mypy is `make typecheck` (seconds once cached). One process:
# with the cores busy, two xdist workers took more wall time (each starts up and collects).
test-fast: lint
	HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -m "not slow" -q tests/unit tests/property

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

generate: setup
	$(BIN)/python scripts/generate_proto.py

checkgenerate: generate
	git diff --exit-code -- tinker_ref/_proto
	@test -z "$$(git status --porcelain -- tinker_ref/_proto)" || \
		{ echo "make generate produced files that are not committed:"; git status --porcelain -- tinker_ref/_proto; exit 1; }

# Rewrite the expected results of conformance/cases/v1 from the reference implementation
# (tinker_ref over HTTP against the mock); CI's conformance run fails when they drift.
.PHONY: regenerate-conformance
regenerate-conformance: setup
	$(BIN)/tinker-conformance regenerate

bench: setup
	$(BIN)/python -m benchmarks

# Tinkex (the Elixir SDK) through the conformance suite. The first run installs Debian's Erlang
# (when missing) and builds Elixir and Tinkex from ../shared/vendor into ~/.cache (minutes);
# later runs start in about a second. Exits 0 when every case outside the known-failing list
# passes and nothing on it passes unexpectedly. `make test` runs the same through pytest.
.PHONY: conformance-tinkex
conformance-tinkex: setup
	conformance/adapters/elixir/build >/dev/null
	$(BIN)/tinker-conformance run --adapter conformance/adapters/elixir/run-adapter \
		--features conformance/adapters/tinkex-0.4.0.features.json \
		--known-failing conformance/adapters/tinkex-0.4.0.known-failing.txt \
		--out conformance-report/tinkex

# Rewrite the clause -> tests/cases table in spec/README.md from the tests' @pytest.mark.spec
# markers and the cases' `clauses`; tests/unit/test_spec_traceability.py fails when it is stale.
spec: setup
	$(BIN)/python scripts/spec_coverage.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
