"""Typed errors raised by the engine.

Front ends map them onto their error model (HTTP 4xx bodies, gRPC status codes). Every
error names the offending field, so a client sees *what* was wrong, not only *that* it was.
An engine method that raises has changed no state.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(EngineError, ValueError):
    """A request is malformed or semantically invalid; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownBaseModelError(InvalidInputError):
    """The requested base model is not in the catalogue."""

    def __init__(self, name: str, supported: list[str]) -> None:
        super().__init__(
            "base_model", f"unknown base model {name!r}; supported: {', '.join(supported)}"
        )
        self.name = name
        self.supported = supported


class CheckpointError(EngineError):
    """A checkpoint is missing, unreadable, or does not fit the model it is loaded into."""
