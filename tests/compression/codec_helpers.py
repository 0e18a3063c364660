"""Tiny VAEs and data for the compression tests: one per likelihood and guide family."""

from __future__ import annotations

import pyro
import torch

from pyro_vae import VAE, VAEConfig

SHAPE = (1, 3, 4)
DISCRETE = ("bernoulli", "categorical256", "discretized-logistic", "poisson", "negative-binomial")
GUIDES = ("normal", "lowrank", "full", "iaf")


def tiny_vae(likelihood: str = "bernoulli", guide: str = "normal", seed: int = 0, **kw) -> VAE:
    """An untrained VAE small enough to code a point in a millisecond."""
    pyro.set_rng_seed(seed)
    config = dict(data_shape=SHAPE, latent_dim=3, hidden=(16,), likelihood=likelihood, guide=guide)
    config.update(kw)
    return VAE(VAEConfig(**config))


def random_data(likelihood: str, n: int, seed: int = 0, shape: tuple[int, ...] = SHAPE):
    """A float32 batch (n, *shape) in the likelihood's support, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    if likelihood == "bernoulli":
        return torch.randint(0, 2, (n, *shape), generator=g).float()
    if likelihood in ("categorical256", "discretized-logistic"):
        return torch.randint(0, 256, (n, *shape), generator=g).float() / 255
    return torch.poisson(torch.full((n, *shape), 4.0), generator=g)
