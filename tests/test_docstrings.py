"""Every public class and function has a docstring (the API reference is built from them).

Public means: the names of ``pyro_vae.__all__``, of every module's ``__all__`` and every
component registered in a registry, and the public methods and properties those classes
define. A method that overrides one of a base class (``forward`` of ``nn.Module``, ``loss``
of a Pyro ELBO, ...) implements a documented contract and may inherit its doc.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pyro_vae
from pyro_vae.components import REGISTRIES

PACKAGES = ("pyro_vae", "pyro_vae.models", "pyro_vae.guides")


def _modules() -> list[Any]:
    out = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        out.append(package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.ispkg and info.name != "__main__":
                out.append(importlib.import_module(f"{name}.{info.name}"))
    return out


def public_objects() -> dict[str, Any]:
    """Qualified name -> object, for every public class and function."""
    found: dict[str, Any] = {}
    for module in _modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    for registry in REGISTRIES.values():
        for entry in registry:
            found[f"{entry.cls.__module__}.{entry.cls.__qualname__}"] = entry.cls
    return found


def _overrides(cls: type, name: str) -> bool:
    return any(name in vars(base) for base in cls.__mro__[1:])


def missing_docstrings() -> list[str]:
    missing = [m.__name__ for m in _modules() if not (m.__doc__ or "").strip()]
    for qualified, obj in sorted(public_objects().items()):
        if not (obj.__doc__ or "").strip():
            missing.append(qualified)
        if not inspect.isclass(obj):
            continue
        for name, member in vars(obj).items():
            if name.startswith("_") or _overrides(obj, name):
                continue
            func = member.fget if isinstance(member, property) else member
            func = getattr(func, "__func__", func)  # classmethod / staticmethod
            if inspect.isfunction(func) and not (func.__doc__ or "").strip():
                missing.append(f"{qualified}.{name}")
    return missing


def test_the_walk_sees_the_whole_public_api() -> None:
    objects = public_objects()
    for name in pyro_vae.__all__:
        obj = getattr(pyro_vae, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert f"{obj.__module__}.{obj.__qualname__}" in objects, name
    assert sum(len(list(r)) for r in REGISTRIES.values()) >= 30
    assert len(objects) > 100


def test_every_public_class_function_and_method_has_a_docstring() -> None:
    assert missing_docstrings() == []


def test_registered_components_give_their_density_or_bound_and_paper() -> None:
    """Each component's docstring has math (a density or bound) or names its source."""
    for kind, registry in REGISTRIES.items():
        for entry in registry:
            doc = inspect.getdoc(entry.cls) or ""
            has_math = ":math:" in doc or ".. math::" in doc
            cites = any(ch.isdigit() for ch in doc) and ("et al" in doc or "&" in doc)
            assert has_math or cites, f"{kind} {entry.name!r}: no math and no reference"
