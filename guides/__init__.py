"""The inference side of a VAE: amortized posterior families and the guide program."""

from .guide import Guide
from .posteriors import GUIDES, DiagonalNormal, Posterior

__all__ = ["GUIDES", "DiagonalNormal", "Guide", "Posterior"]
