"""Small value checks and transforms shared by every layer (one copy of each).

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds; a config
field or spec parameter that wants a count must refuse ``True``. :func:`is_int` and
:func:`is_number` say so once.
"""

from __future__ import annotations

import math

__all__ = ["check_min_scale", "inverse_softplus", "is_int", "is_number"]


def is_int(value: object) -> bool:
    """True for a Python ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_min_scale(min_scale: float) -> None:
    """Refuse a scale floor that is not a positive finite number (``ValueError``)."""
    if not (math.isfinite(min_scale) and min_scale > 0):
        raise ValueError(f"min_scale must be a positive finite number, got {min_scale}")


def inverse_softplus(y: float) -> float:
    r"""The ``x`` with :math:`\log(1 + e^x) = y`, for ``y > 0``: :math:`y + \log(1 - e^{-y})`."""
    return y + math.log(-math.expm1(-y))
