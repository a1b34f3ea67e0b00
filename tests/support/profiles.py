"""Example counts for hypothesis tests that need their own, scaled with the loaded profile.

The profiles ("dev" by default, "ci", "fast") are registered in tests/conftest.py. A test whose
count differs from its profile's (a cheap fuzz target wants hundreds) writes
`@settings(max_examples=examples(600))`: 600 under "dev", and the same multiple of the profile's
own count under the others (10x under "ci", a quarter under "fast").
"""

from __future__ import annotations

from hypothesis import settings


def examples(dev: int, ci: int | None = None) -> int:
    """`max_examples` for a test that runs `dev` examples under the "dev" profile; `ci`, when
    given, replaces the scaled count under "ci"."""
    if ci is not None and settings.get_current_profile_name() == "ci":
        return ci
    scale = settings.default.max_examples / settings.get_profile("dev").max_examples
    return max(1, round(dev * scale))
