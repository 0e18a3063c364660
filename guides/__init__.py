"""The inference side of a VAE: amortized posterior families and the guide program."""

from .guide import Guide
from .kl import kl_gaussian_diagonal_normal  # registers the closed-form KLs on import
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
    "kl_gaussian_diagonal_normal",
]
