"""The first layout's flat module paths (``pyro_vae.train``, ``pyro_vae.objectives``, ...) still
import, and each is the very module at its new home (pyro_vae/_compat.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import pyro_vae
from pyro_vae._compat import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_is_the_new_module(old: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_documented_old_names_still_import() -> None:
    from pyro_vae.objectives import OBJECTIVES
    from pyro_vae.plots import plot_run
    from pyro_vae.train import evaluation_split, fit

    assert fit is pyro_vae.fit and callable(plot_run) and callable(evaluation_split)
    assert "elbo" in OBJECTIVES


def test_an_old_path_imports_in_a_fresh_interpreter() -> None:
    """``import pyro_vae.objectives`` first thing, before anything else imported pyro_vae."""
    code = "import pyro_vae.objectives as o, pyro_vae.infer.objectives as n; assert o is n"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_other_names_are_not_caught() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("pyro_vae.no_such_module")
