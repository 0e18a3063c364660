"""Priors p(z): modules whose call returns a distribution over one latent vector.

A prior returns a distribution with ``event_shape == (latent_dim,)`` and an empty (or
broadcastable) batch shape; the model's data plate broadcasts it over data points.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.registry import Registry

__all__ = ["PRIORS", "Prior", "StandardNormal"]


class Prior(nn.Module):
    """Base class: ``prior() -> Distribution`` with event shape ``(latent_dim,)``."""

    latent_dim: int

    def forward(self) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError


PRIORS: Registry[Prior] = Registry("prior")


@PRIORS.register("normal")
class StandardNormal(Prior):
    r"""Standard Normal, :math:`p(z) = \mathcal{N}(z; 0, I)` (Kingma & Welling 2014).

    The loc and scale are buffers, so they follow the module across devices and dtypes.
    """

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))  # (L,)
        self.register_buffer("scale", torch.ones(latent_dim))  # (L,)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)
