"""Every public client method of tinker_ref has a docstring in the official SDK's (Google) style.

"Public client method", as this test finds it by introspection (no hard-coded list, so a new
public method without a docstring fails here):

- the *client classes*: the classes named in `tinker_ref.__all__` that tinker_ref defines outside
  `tinker_ref.types` and `tinker_ref.errors` (those two hold the data records and the error
  tree, not clients). Today: ServiceClient, TrainingClient, SamplingClient, RestClient,
  AdminClient, APIFuture and LossHandle (BackcompatTrainingClientFuture and
  BackcompatSamplingClientFuture are other names of TrainingClient and SamplingClient);
- their *public members*: every attribute whose name has no leading underscore that is a
  function, a staticmethod, a classmethod or a property, defined on the class or inherited from
  a tinker_ref base class (not from `object`): `*_async` twins included, dunders excluded;
- the *public module-level functions*: functions named in `tinker_ref.__all__`, and those in the
  `__all__` of the modules it exports, other than `types` and `errors` (today: the three of
  `tinker_ref.auth`).

At the last count that is 119 members of the 7 classes (117 distinct definitions: `result`,
from ResolvedClientFuture, is shared by TrainingClient and SamplingClient, and `get_telemetry`
by RestClient and AdminClient) plus 3 functions; the classes themselves are checked too.

The rule each one must meet (what "documented" means here):

1. a docstring of its own (`__doc__`, not inherited), whose first line is a one-line summary
   sentence: at least three words, ending with a period;
2. every parameter it takes (not `self`/`cls`, not one named with a leading underscore) has an
   entry (`name:` or `name (type):`) in an `Args:` section. An `x_async` twin whose parameters
   are exactly those of `x` on the same class may instead name `x` in backticks ("Async version
   of `x`") and leave the arguments to it;
3. a function (not a property) annotated to return something other than None has a `Returns:`
   section; the async twins too, since what they give (a future or the result) differs;
4. a class documents its constructor's public parameters in `Args:` (or `Attributes:` for a
   dataclass).

The central calls also carry an `Example:` section (checked for the few named below).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
from collections.abc import Callable
from typing import Any

import pytest

import tinker_ref

NOT_CLIENT_MODULES = ("tinker_ref.types", "tinker_ref.errors")
WITH_EXAMPLE = (
    "ServiceClient.create_lora_training_client",
    "TrainingClient.forward_backward_custom",
    "TrainingClient.optim_step",
    "TrainingClient.save_state",
    "TrainingClient.load_state",
    "SamplingClient.sample",
)


def _is_client_module(module_name: str) -> bool:
    return module_name.startswith("tinker_ref") and not any(
        module_name == excluded or module_name.startswith(excluded + ".")
        for excluded in NOT_CLIENT_MODULES
    )


def client_classes() -> list[type]:
    found: list[type] = []
    for name in tinker_ref.__all__:
        obj = getattr(tinker_ref, name)
        if inspect.isclass(obj) and _is_client_module(obj.__module__) and obj not in found:
            found.append(obj)
    return found


def _function_of(raw: Any) -> Callable[..., Any] | None:
    """The function behind a class attribute (None: not a method or property)."""
    if isinstance(raw, property):
        return raw.fget
    if isinstance(raw, (staticmethod, classmethod)):
        return raw.__func__  # type: ignore[no-any-return]
    if inspect.isfunction(raw):
        return raw
    return None


def public_members() -> list[tuple[str, type | None, Any]]:
    """(qualified name, class or None, raw attribute) for every public client method."""
    members: list[tuple[str, type | None, Any]] = []
    for cls in client_classes():
        for name in sorted(dir(cls)):
            if name.startswith("_"):
                continue
            owner = next(base for base in cls.__mro__ if name in vars(base))
            if owner is object:
                continue
            raw = inspect.getattr_static(cls, name)
            if _function_of(raw) is not None:
                members.append((f"{cls.__name__}.{name}", cls, raw))
    modules = [getattr(tinker_ref, name) for name in tinker_ref.__all__]
    for module in [tinker_ref, *(m for m in modules if isinstance(m, types.ModuleType))]:
        if not _is_client_module(module.__name__):
            continue
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                members.append((f"{module.__name__}.{name}", None, obj))
    return members


MEMBERS = public_members()
CLASSES = client_classes()


def _section(doc: str, title: str) -> str | None:
    """The body of a Google-style section (`Args:` ...), up to the next unindented line."""
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == title and not line.startswith(" "):
            body = []
            for following in lines[index + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                body.append(following)
            return "\n".join(body)
    return None


def _documented_params(doc: str) -> set[str]:
    section = _section(doc, "Args:") or _section(doc, "Attributes:") or ""
    return set(re.findall(r"^ {4}\**(\w+)(?: \([^)]*\))?:", section, re.MULTILINE))


def _params(function: Callable[..., Any]) -> list[str]:
    names = list(inspect.signature(function).parameters)
    return [n for n in names if n not in ("self", "cls") and not n.startswith("_")]


def _summary_problem(doc: str | None) -> str | None:
    if not doc or not doc.strip():
        return "has no docstring"
    summary = inspect.cleandoc(doc).splitlines()[0]
    if len(summary.split()) < 3 or not summary.endswith("."):
        return f"needs a one-line summary sentence first, got {summary!r}"
    return None


def _problems(qualname: str, cls: type | None, raw: Any) -> list[str]:
    function = _function_of(raw)
    assert function is not None
    problem = _summary_problem(function.__doc__)
    if problem is not None:
        return [problem]
    doc = inspect.cleandoc(function.__doc__ or "")
    problems = []
    params = _params(function)
    name = qualname.rsplit(".", 1)[1]
    twin_name = name.removesuffix("_async")
    twin = None
    if cls is not None and twin_name != name:
        twin = _function_of(inspect.getattr_static(cls, twin_name, None))
    defers_to_twin = twin is not None and _params(twin) == params and f"`{twin_name}`" in doc
    if params and not defers_to_twin:
        missing = [p for p in params if p not in _documented_params(doc)]
        if missing:
            problems.append(f"has no `Args:` entry for {', '.join(missing)}")
    returns = inspect.signature(function).return_annotation
    if (
        not isinstance(raw, property)
        and returns not in (None, "None", inspect.Signature.empty)
        and _section(doc, "Returns:") is None
    ):
        problems.append("has no `Returns:` section")
    return problems


@pytest.mark.parametrize(("qualname", "cls", "raw"), MEMBERS, ids=[m[0] for m in MEMBERS])
def test_public_client_method_is_documented(qualname: str, cls: type | None, raw: Any) -> None:
    problems = _problems(qualname, cls, raw)
    assert not problems, f"{qualname} " + "; ".join(problems)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_client_class_is_documented(cls: type) -> None:
    doc = cls.__dict__.get("__doc__")
    problem = _summary_problem(doc)
    assert problem is None, f"{cls.__name__} {problem}"
    if dataclasses.is_dataclass(cls):
        params = [f.name for f in dataclasses.fields(cls)]
    else:
        params = _params(cls.__init__)  # type: ignore[misc]
    missing = [p for p in params if p not in _documented_params(inspect.cleandoc(doc or ""))]
    assert not missing, f"{cls.__name__} has no `Args:` entry for {', '.join(missing)}"


@pytest.mark.parametrize("qualname", WITH_EXAMPLE)
def test_central_calls_have_an_example(qualname: str) -> None:
    docs = {name: _function_of(raw) for name, _, raw in MEMBERS}
    function = docs[qualname]
    assert function is not None
    assert _section(inspect.cleandoc(function.__doc__ or ""), "Example:") is not None, (
        f"{qualname} has no `Example:` section"
    )


def test_the_introspection_finds_the_client_surface() -> None:
    """Guards the enumeration itself: an empty or partial walk would pass everything above."""
    names = {name for name, _, _ in MEMBERS}
    assert {c.__name__ for c in CLASSES} >= {
        "ServiceClient",
        "TrainingClient",
        "SamplingClient",
        "RestClient",
        "AdminClient",
        "APIFuture",
        "LossHandle",
    }
    assert {
        "ServiceClient.create_lora_training_client",
        "ServiceClient.create_lora_training_client_async",
        "TrainingClient.forward_backward_custom_async",
        "TrainingClient.result",
        "SamplingClient.retry_config",
        "RestClient.get_telemetry",
        "tinker_ref.auth.get_tinker_token",
    } <= names
    assert len(MEMBERS) >= 120
