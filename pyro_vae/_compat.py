"""The module paths of the first, flat layout, kept importable.

Before the subpackages by role (see the docs' Architecture page), ``pyro_vae.train``,
``pyro_vae.objectives``, ``pyro_vae.plots`` and their neighbours were modules of their own,
and the README and users' code import them by those names. :data:`MOVED` maps each old path
to its home; :class:`MovedModules` (installed once, by ``pyro_vae/__init__.py``) makes
``import pyro_vae.objectives`` return the very module ``pyro_vae.infer.objectives``, so a
monkeypatch or an ``isinstance`` through either name sees one object. New code imports the
new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

__all__ = ["MOVED", "MovedModules"]

MOVED: dict[str, str] = {
    "pyro_vae.checkpoint": "pyro_vae.training.checkpoint",
    "pyro_vae.compare": "pyro_vae.analysis.compare",
    "pyro_vae.decomposition": "pyro_vae.infer.decomposition",
    "pyro_vae.diagnose": "pyro_vae.training.nonfinite",
    "pyro_vae.diagnostic_plots": "pyro_vae.analysis.figures",
    "pyro_vae.diagnostics": "pyro_vae.analysis.diagnostics",
    "pyro_vae.distributed": "pyro_vae.training.distributed",
    "pyro_vae.evaluate": "pyro_vae.infer.importance",
    "pyro_vae.guard": "pyro_vae.training.guard",
    "pyro_vae.objectives": "pyro_vae.infer.objectives",
    "pyro_vae.plots": "pyro_vae.analysis.plots",
    "pyro_vae.replay": "pyro_vae.training.replay",
    "pyro_vae.report": "pyro_vae.analysis.report",
    "pyro_vae.runstate": "pyro_vae.training.runstate",
    "pyro_vae.schedules": "pyro_vae.training.schedules",
    "pyro_vae.train": "pyro_vae.training.fit",
}


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new path (the same object, not a copy)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the target module was executed under its own name."""


class MovedModules(importlib.abc.MetaPathFinder):
    """A finder for the paths in :data:`MOVED`, and for nothing else."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec that loads ``MOVED[fullname]`` for an old path; ``None`` for any other name."""
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(MOVED[fullname]))


def install() -> None:
    """Put :class:`MovedModules` on ``sys.meta_path`` once (importing pyro_vae twice is a no-op)."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
