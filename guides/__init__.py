"""The inference side of a VAE: amortized posterior families and the guide program."""

from .guide import Guide
from .posteriors import (
    GUIDES,
    IAF,
    DiagonalNormal,
    FullNormal,
    LowRankNormal,
    PointMass,
    Posterior,
    is_point_mass,
)

__all__ = [
    "GUIDES",
    "IAF",
    "DiagonalNormal",
    "FullNormal",
    "Guide",
    "LowRankNormal",
    "PointMass",
    "Posterior",
    "is_point_mass",
]
