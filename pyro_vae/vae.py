"""Build a (model, guide) pair from a :class:`~pyro_vae.config.VAEConfig`."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyro_vae.config import VAEConfig
from pyro_vae.guides import GUIDES, Guide
from pyro_vae.models import LIKELIHOODS, PRIORS, Model
from pyro_vae.nn import build_networks

__all__ = ["VAE"]


class VAE(nn.Module):
    r"""A variational autoencoder: the model :math:`p(x|z)p(z)` and the guide :math:`q(z|x)`.

    ``vae.model`` and ``vae.guide`` are ordinary Pyro programs (``nn.Module`` s whose call
    ``(x)`` runs the program), so they work with ``pyro.infer.SVI``,
    ``Trace_ELBO()(model, guide)``, ``Predictive`` and ``Importance`` unchanged.
    ``vae.config`` is the frozen config that rebuilds the same architecture.

    Example::

        vae = VAE(VAEConfig(data_shape=(1, 28, 28), latent_dim=50))
        loss = pyro.infer.Trace_ELBO()(vae.model, vae.guide)   # an nn.Module
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        self.config = config
        shape, latent = config.data_shape, config.latent_dim
        likelihood = LIKELIHOODS.build(config.likelihood, data_shape=shape)
        encoder, decoder, features = build_networks(
            config.network,
            data_shape=shape,
            latent_dim=latent,
            hidden=config.hidden,
            act=config.activation,
            decoder_out=likelihood.num_params * math.prod(shape),
        )
        posterior = GUIDES.build(config.guide, feature_dim=features, latent_dim=latent)
        prior = PRIORS.build(config.prior, latent_dim=latent)
        self.model = Model(prior, decoder, likelihood)
        self.guide = Guide(encoder, posterior)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise unless ``x`` is a float batch ``(N, *data_shape)`` the likelihood can score."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"data must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or tuple(x.shape[1:]) != self.config.data_shape:
            raise ValueError(
                f"data must have shape (N, {', '.join(map(str, self.config.data_shape))}) "
                f"for this model, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"data must be a floating-point tensor, got {x.dtype}")
        self.model.likelihood.check_support(x)

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """Means of p(x|z) for ``num`` draws z ~ p(z): ``(num, *data_shape)``."""
        z = self.model.prior().sample((num,))  # (num, L)
        return self.model.likelihood(self.model.decoder(z)).mean  # (num, *data_shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Means of p(x|z) at the guide's mean code, z = E_q[z|x]: ``(N, *data_shape)``."""
        z = self.guide.posterior(self.guide.encoder(x)).mean  # (N, L)
        return self.model.likelihood(self.model.decoder(z)).mean  # (N, *data_shape)
