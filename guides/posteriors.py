"""Families of the amortized posterior q(z|x): heads from encoder features to a distribution."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.registry import Registry

__all__ = ["GUIDES", "DiagonalNormal", "Posterior"]


class Posterior(nn.Module):
    """Base class: ``posterior(features) -> Distribution`` with event shape ``(latent_dim,)``."""

    latent_dim: int

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError


GUIDES: Registry[Posterior] = Registry("guide")


@GUIDES.register("normal")
class DiagonalNormal(Posterior):
    r"""Diagonal Normal, :math:`q(z|x) = \mathcal{N}(z; \mu(x), \mathrm{diag}\,\sigma(x)^2)`.

    A linear head maps the encoder features to :math:`\mu` and a raw scale;
    :math:`\sigma = \mathrm{softplus}(\cdot) + \sigma_{\min}` keeps the scale away from zero
    by construction. Sampling is reparameterized, :math:`z = \mu + \sigma \odot \epsilon`.
    Kingma & Welling (2014); Rezende, Mohamed & Wierstra (2014).
    """

    def __init__(self, feature_dim: int, latent_dim: int, *, min_scale: float = 1e-3) -> None:
        super().__init__()
        if not (math.isfinite(min_scale) and min_scale > 0):
            raise ValueError(f"min_scale must be a positive finite number, got {min_scale}")
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.head = nn.Linear(feature_dim, 2 * latent_dim)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = self.head(h).chunk(2, dim=-1)  # (..., L) each
        scale = F.softplus(raw_scale) + self.min_scale  # (..., L)
        return dist.Normal(loc, scale).to_event(1)
