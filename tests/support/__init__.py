"""Helpers shared by the test suites (official-SDK virtualenvs, subprocess drivers)."""
