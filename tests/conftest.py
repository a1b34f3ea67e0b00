"""Root conftest: what every test directory shares, declared once.

- the plugin that adds the `--tinker-*` options (they must be registered before the command line
  is parsed, which a plugin named here guarantees);
- the suite's shared fixtures (tests/support/fixtures.py);
- the hypothesis profiles, registered here so that every directory (`pytest tests/unit` too)
  runs under the same one.

Profiles, chosen by the env var HYPOTHESIS_PROFILE:
- "dev" (default): 20 examples per test, derandomized, so every run (and CI) draws the same
  examples and no example database is needed; what `make test` runs.
- "ci": the deeper run, 10x the examples, still derandomized so a failure reproduces exactly.
- "fast": a quarter of dev's examples, for `make test-fast`, the loop run before each commit.

None has a deadline: a CPU torch op's first call can take far longer than its later ones. A test
that needs its own count takes it from `tests.support.profiles.examples`, which scales it with
the profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# tests.support.fixtures: fixtures every test directory shares (one definition each).
pytest_plugins = ["tinker_ref.testing.pytest_plugin", "tests.support.fixtures"]

settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", settings.get_profile("dev"), max_examples=200)
settings.register_profile("fast", settings.get_profile("dev"), max_examples=5)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
