"""List the public names of an SDK package: `tinker` (official) or `tinker_ref`, as JSON.

    python sdk_surface.py tinker|tinker_ref

Runs under the official SDK's interpreter as well, so it imports nothing from this repository.
What counts as a public name (tests/integration/test_sdk_surface.py compares the two lists):

* `top:<name>` — each name of the package's top-level `__all__`;
* `method:<Class>.<name>` — each public method (no leading `_`, `*_async` twins included) of
  the user-facing clients, and `__init__` of the ones users construct;
* `param:<Class>.<method>(<name>)` — each parameter of those methods (not `self`; `*args` and
  `**kwargs` by their names);
* `type:<name>` — each public name of `<package>.types` (modules and `__future__` leaks left out);
* `env:<NAME>` — each environment variable the package's source reads by a literal name
  (`os.environ.get("X")`, `os.environ["X"]`, `os.getenv("X")`), test files left out.

It also prints `fields:<type>`: the field names of each `types` class that has any (pydantic
model or dataclass), for the record-shape comparison.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

CLIENTS = ("ServiceClient", "TrainingClient", "SamplingClient", "RestClient", "AdminClient")
CONSTRUCTED = ("ServiceClient", "RestClient", "AdminClient")  # users call their __init__
_ENV_READ = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")


def methods(cls: type) -> dict[str, list[str]]:
    found = {}
    for name in dir(cls):
        if name.startswith("_") and not (name == "__init__" and cls.__name__ in CONSTRUCTED):
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, property):
            continue
        member = getattr(cls, name)
        if not callable(member) or inspect.isclass(member):
            continue
        try:
            signature = inspect.signature(member)
        except (TypeError, ValueError):
            continue
        found[name] = [p for p in signature.parameters if p not in ("self", "cls")]
    return found


def env_vars(package: types.ModuleType) -> list[str]:
    root = Path(package.__file__ or "").parent
    names: set[str] = set()
    for path in root.rglob("*.py"):
        if path.name.endswith("_test.py") or path.name.startswith("test_"):
            continue
        names.update(_ENV_READ.findall(path.read_text(encoding="utf-8", errors="replace")))
    return sorted(names)


def fields(obj: Any) -> list[str] | None:
    model_fields = getattr(obj, "model_fields", None)
    if isinstance(model_fields, dict):
        return sorted(model_fields)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        return sorted(f.name for f in dataclasses.fields(obj) if not f.name.startswith("_"))
    return None


def surface(package_name: str) -> dict[str, Any]:
    package = importlib.import_module(package_name)
    type_module = importlib.import_module(f"{package_name}.types")
    names: list[str] = [f"top:{n}" for n in package.__all__]
    for client in CLIENTS:
        cls = getattr(package, client, None)
        if cls is None:
            continue
        for method, params in methods(cls).items():
            names.append(f"method:{client}.{method}")
            names.extend(f"param:{client}.{method}({p})" for p in params)
    type_fields = {}
    for name in dir(type_module):
        obj = getattr(type_module, name)
        if name.startswith("_") or isinstance(obj, types.ModuleType) or name == "annotations":
            continue
        names.append(f"type:{name}")
        shape = fields(obj)
        if shape is not None:
            type_fields[name] = shape
    names.extend(f"env:{n}" for n in env_vars(package))
    return {"names": sorted(set(names)), "fields": type_fields}


if __name__ == "__main__":
    print(json.dumps(surface(sys.argv[1])))
