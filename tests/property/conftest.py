"""Hypothesis profiles for the property tests, chosen by the env var HYPOTHESIS_PROFILE.

- "dev" (default): ~20 examples per test, derandomized, so every run (and CI) draws the same
  examples and no example database is needed; fast enough for every `make test`.
- "ci": the deeper run, 10x the examples, still derandomized so a failure reproduces exactly.

Neither has a deadline: a CPU torch op's first call can take far longer than its later ones.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
