"""Discovery: every registered component, listed from the registries themselves.

``pyro-vae components`` prints :func:`describe`; ``pyro-vae components --json`` prints
:func:`component_names`. Both read :data:`REGISTRIES`, so a component registered anywhere,
a user's plugin included, is listed, and a new kind of component is one more line there.
"""

from __future__ import annotations

import re
from typing import Any

from pyro_vae.guides import GUIDES
from pyro_vae.infer.objectives import OBJECTIVES
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.nn import NETWORKS
from pyro_vae.registry import Registry, describe_params

__all__ = ["REGISTRIES", "component_names", "describe", "math_to_unicode"]

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


# LaTeX commands of the docstrings' math, as plain Unicode (a command not listed loses its
# backslash, so the listing never shows LaTeX)
_SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν",
    "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ",
    "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ",
    "Lambda": "Λ", "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    "ell": "ℓ",
    "prod": "∏", "sum": "∑", "int": "∫", "cdot": "·", "times": "×", "odot": "⊙",
    "infty": "∞", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "approx": "≈", "propto": "∝",
    "in": "∈", "to": "→", "mid": "|", "top": "ᵀ", "ldots": "…", "dots": "…", "partial": "∂",
    "nabla": "∇", "sim": "~", "|": "‖",
}  # fmt: skip
_SPACES = {",": " ", ";": " ", ":": " ", "quad": " ", "qquad": " ", "!": "", "left": "",
           "right": "", "big": "", "Big": ""}  # fmt: skip
_FONT_NAMES = "mathcal|mathrm|mathbf|mathbb|mathit|boldsymbol|operatorname|text"
_FONTS = rf"\\(?:{_FONT_NAMES})\{{([^{{}}]*)\}}"
# commands with arguments, which _innermost rewrites once their arguments are plain
_WITH_ARGUMENTS = rf"(?:[dt]?frac|sqrt|{_FONT_NAMES})\{{"
_SUPERSCRIPT = str.maketrans("0123456789+-=()nT", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿᵀ")


def _script(mark: str, body: str) -> str:
    """``^{2}`` -> ``²``; other super- and subscripts of more than one character in parens."""
    if mark == "^" and all(c in "0123456789+-=()nTᵀ" for c in body):
        return body.translate(_SUPERSCRIPT)
    return mark + (body if len(body) == 1 else f"({body})")


def _command(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in _SPACES:
        return _SPACES[name]
    return _SYMBOLS.get(name, name)


def _innermost(text: str) -> str:
    """One pass over groups without nested braces: fonts, fractions, roots, scripts."""
    text = re.sub(_FONTS, r"\1", text)
    text = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", text)
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"√(\1)", text)
    return re.sub(r"([\^_])\{([^{}]*)\}", lambda m: _script(m.group(1), m.group(2)), text)


def math_to_unicode(tex: str) -> str:
    r"""Inline LaTeX as readable plain text: ``\mathcal{N}(z; \mu, \sigma^2)`` -> ``N(z; μ, σ²)``.

    Greek letters and common operators become their Unicode characters, font commands
    (``\mathcal``, ``\mathrm``, ...) keep their argument, ``\frac{a}{b}`` reads ``(a)/(b)``,
    spacing commands go, and superscripts of digits or :math:`\top` become superscript
    characters. What it does not know loses only its backslash.
    """
    text = tex.replace("\\\\", " ").replace(r"\{", "\x00").replace(r"\}", "\x01")  # \\, \{, \}
    text = re.sub(r"\\[dt]?frac(\d)(\d)", r"\1/\2", text)
    text = re.sub(rf"\\(?!{_WITH_ARGUMENTS})([A-Za-z]+|[,;:!|])", _command, text)
    text = re.sub(r"\^([^\s{\\])", lambda m: _script("^", m.group(1)), text)
    while (inner := _innermost(text)) != text:  # innermost groups first
        text = inner
    text = text.replace("\\", "").replace("{", "").replace("}", "")  # what is left
    text = text.replace("\x00", "{").replace("\x01", "}")
    return re.sub(r" {2,}", " ", text)


def _plain(text: str) -> str:
    """A docstring line as plain text: ``:math:`x` `` in Unicode, other roles and ``a`` bare."""
    # a role cut off by the end of the line (math running on) is converted to its end
    text = re.sub(r":math:`([^`]*)(?:`|$)", lambda m: math_to_unicode(m.group(1)), text)
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
                shown = describe_params(e.params, e.notes)
                lines.append(f"  {'':<{width}}parameters: {shown}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
