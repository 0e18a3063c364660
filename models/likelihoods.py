"""Likelihoods p(x|z): modules mapping the decoder's raw output to a distribution over x.

A likelihood declares ``num_params``, the raw decoder outputs it needs per data dimension;
the decoder emits ``(..., num_params * D)`` with ``D = prod(data_shape)``. The returned
distribution has ``event_shape == data_shape`` and the decoder's leading dims as batch.

Each likelihood checks the support of data at the boundary (:meth:`Likelihood.check_support`),
once per data set rather than inside the training loop, and refuses data it cannot score with
a message that says what to do.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.registry import Registry

__all__ = ["LIKELIHOODS", "Bernoulli", "Likelihood", "Normal", "SupportError"]


class SupportError(ValueError):
    """Data outside the support of the chosen likelihood."""


class Likelihood(nn.Module):
    """Base class: ``likelihood(raw) -> Distribution`` with event shape ``data_shape``."""

    num_params: int = 1

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    def split(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """Cut ``(..., P * D)`` into ``P`` tensors of shape ``(..., *data_shape)``."""
        batch = raw.shape[:-1]
        parts = raw.reshape(*batch, self.num_params, *self.data_shape)  # (..., P, *data_shape)
        return list(parts.unbind(len(batch)))

    def check_support(self, x: torch.Tensor) -> None:
        """Raise :class:`SupportError` if any value of ``x`` is outside the support."""
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise SupportError(
                f"the data hold {bad} NaN or infinite value(s); {type(self).__name__} needs "
                "finite values. Clean or impute the data before training."
            )

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        raise NotImplementedError


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    r"""Bernoulli, :math:`p(x|z) = \prod_d\! \sigma(\ell_d)^{x_d}(1-\sigma(\ell_d))^{1-x_d}`.

    The decoder gives the logits :math:`\ell`. Only for data in {0, 1}: for grey values use
    ``--binarize dynamic`` (x ~ Bernoulli(pixel) each epoch, Burda et al. 2015) or a
    continuous likelihood. Kingma & Welling (2014), appendix C.1.
    """

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split(raw)  # (..., *data_shape)
        return dist.Bernoulli(logits=logits).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        binary = (x == 0) | (x == 1)
        if not bool(binary.all()):
            bad = int((~binary).sum())
            raise SupportError(
                f"the Bernoulli likelihood needs binary data (0 or 1), but {bad} of "
                f"{x.numel()} values are not (e.g. {float(x[~binary][0]):.4g}). Use "
                "--binarize dynamic to draw x ~ Bernoulli(pixel) every epoch, or a "
                "likelihood for continuous data (e.g. --likelihood normal)."
            )


@LIKELIHOODS.register("normal")
class Normal(Likelihood):
    r"""Normal with a fixed scale, :math:`p(x|z) = \prod_d \mathcal{N}(x_d; \mu_d(z), \sigma^2)`.

    The decoder gives the mean :math:`\mu`; ``scale`` (:math:`\sigma`, default 1) is fixed.
    With :math:`\sigma = 1` the log-likelihood is :math:`-\tfrac12\|x-\mu\|^2` up to a
    constant, the squared error of a plain autoencoder. Kingma & Welling (2014), C.2.
    """

    def __init__(self, data_shape: tuple[int, ...], *, scale: float = 1.0) -> None:
        super().__init__(data_shape)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.scale = scale

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split(raw)  # (..., *data_shape)
        return dist.Normal(loc, self.scale).to_event(len(self.data_shape))
