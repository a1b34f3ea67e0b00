"""`CodecError`: the one exception every decoder of untrusted bytes or JSON raises.

It names the offending field with a path (`data[2].loss_fn_inputs['weights'].dense`) and says
what is wrong, expected vs got, so a server can answer HTTP 400 with it verbatim. It subclasses
`ValueError` so callers that only know "bad value" still catch it.
"""

from __future__ import annotations

__all__ = ["CodecError"]


class CodecError(ValueError):
    """A wire value that cannot be decoded: `field` is its path, `message` the problem."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[CodecError], tuple[str, str]]:
        # Keeps the two-argument constructor working through pickle (multiprocessing, pytest-xdist).
        return (CodecError, (self.field, self.message))
