"""Discovery: every registered component, listed from the registries themselves.

``pyro-vae components`` prints :func:`describe`; ``pyro-vae components --json`` prints
:func:`component_names`. Both read :data:`REGISTRIES`, so a component registered anywhere,
a user's plugin included, is listed, and a new kind of component is one more line there.
"""

from __future__ import annotations

import re
from typing import Any

from pyro_vae.guides import GUIDES
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.nn import NETWORKS
from pyro_vae.objectives import OBJECTIVES
from pyro_vae.registry import Registry, describe_params

__all__ = ["REGISTRIES", "component_names", "describe"]

# The JSON key of each kind of component, and its registry (listed in this order).
REGISTRIES: dict[str, Registry[Any]] = {
    "priors": PRIORS,
    "likelihoods": LIKELIHOODS,
    "guides": GUIDES,
    "networks": NETWORKS,
    "objectives": OBJECTIVES,
}


def component_names() -> dict[str, list[str]]:
    """``{"priors": [...], "likelihoods": [...], ...}``: registered names, sorted."""
    return {key: registry.names() for key, registry in REGISTRIES.items()}


def _plain(text: str) -> str:
    """A docstring line without reST roles: ``:math:`x` `` -> ``x``, ````a```` -> ``a``."""
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text)
    return text.replace("``", "")


def describe() -> str:
    """One line per component (name and the first line of its docstring), then its parameters."""
    lines: list[str] = []
    for key, registry in REGISTRIES.items():
        entries = list(registry)
        width = max((len(e.name) for e in entries), default=0) + 2
        lines.append(f"{key}:")
        for e in entries:
            lines.append(f"  {e.name:<{width}}{_plain(e.summary)}")
            if e.params:
                lines.append(f"  {'':<{width}}parameters: {describe_params(e.params)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
