"""Per-instance names for registering networks with Pyro's global param store.

Pyro's ``pyro.infer.SVI`` optimizes the parameters that appear as ``param`` sites, which
``pyro.module(name, net)`` creates by putting the network's parameters in the global param
store under ``name``. Two VAEs that used one fixed name would share (and silently fight
over) the same store entries, so every model and guide gets a name of its own, and the
entries are removed from the store when the module is garbage-collected.
"""

from __future__ import annotations

import itertools
import weakref

import pyro
from torch import nn

__all__ = ["unique_name"]

_counter = itertools.count()


def _forget(prefix: str) -> None:
    store = pyro.get_param_store()
    for key in [k for k in store if k.startswith(prefix)]:
        del store[key]


def unique_name(module: nn.Module, kind: str) -> str:
    """A param-store prefix unique to ``module``, forgotten when the module is collected."""
    name = f"pyro_vae.{kind}{next(_counter)}"
    weakref.finalize(module, _forget, name + "$$$")
    return name
