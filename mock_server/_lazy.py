"""Lazy package exports, so that importing a light module of a package costs no torch.

A package's `__init__` keeps its public names (`from mock_server.engine import Engine` works
as before) but imports the heavy submodules behind them only when a name is first read:

    __getattr__ = lazy_exports(__name__, {"Engine": "engine", ...})

Type checkers see the names through the package's `if TYPE_CHECKING:` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: name -> the submodule (relative) that defines it.
    The first read imports the submodule and caches the value in the package's namespace."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
