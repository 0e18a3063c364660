"""The generative model p(x|z) p(z) as a Pyro program."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyro_vae._naming import unique_name

from .likelihoods import Likelihood
from .priors import Prior

__all__ = ["Model"]


class Model(nn.Module):
    r"""The generative model :math:`p_\theta(x, z) = p(z)\, p_\theta(x \mid z)`.

    Calling ``model(x)`` runs the Pyro program: under a plate ``"data"`` over the rows of
    ``x``, the latent site ``"z"`` is drawn from the prior and the site ``"x"`` observes
    ``x`` under the likelihood of the decoded ``z``. The joint is unscaled: its log density
    is the sum over the rows. ``model(None, batch_size=n)`` draws ``n`` new data points.

    The networks are registered with ``pyro.module`` under a name unique to this instance,
    so ``pyro.infer.SVI`` sees them as ``param`` sites and two models never share entries
    of Pyro's global param store.
    """

    def __init__(self, prior: Prior, decoder: nn.Module, likelihood: Likelihood) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.pyro_name = unique_name(self, "model")

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        pyro.module(self.pyro_name, self)
        n = x.shape[0] if x is not None else batch_size
        if n is None:
            raise ValueError("model needs data x, or batch_size to draw new data")
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior())  # (N, L)
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)  # (N, *data_shape)
