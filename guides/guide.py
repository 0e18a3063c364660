"""The amortized guide q(z|x) as a Pyro program."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyro_vae._naming import unique_name

from .posteriors import Posterior

__all__ = ["Guide"]


class Guide(nn.Module):
    r"""The amortized guide :math:`q_\phi(z \mid x)`: an encoder and a posterior family.

    Calling ``guide(x)`` samples the latent site ``"z"`` under the plate ``"data"`` over the
    rows of ``x``, matching :class:`~pyro_vae.models.Model` site for site. It takes the same
    arguments as the model, as Pyro requires of a guide.
    """

    def __init__(self, encoder: nn.Module, posterior: Posterior) -> None:
        super().__init__()
        self.encoder = encoder
        self.posterior = posterior
        self.pyro_name = unique_name(self, "guide")

    def forward(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.posterior(self.encoder(x)))  # (N, L)
