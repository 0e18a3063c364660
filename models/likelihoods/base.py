"""The likelihood interface, its registry, the two basic likelihoods (Bernoulli, fixed-scale
Normal) and the helpers the others share.

Likelihoods p(x|z): modules mapping the decoder's raw output to a distribution over x.

A likelihood declares ``num_params``, the raw decoder outputs it needs per data dimension;
the decoder emits ``(..., num_params * D)`` with ``D = prod(data_shape)``. The returned
distribution has ``event_shape == data_shape`` and the decoder's leading dims as batch.

Each likelihood checks the support of data at the boundary (:meth:`Likelihood.check_support`),
once per data set rather than inside the training loop, and refuses data it cannot score with
a message that says what to do.

What data each likelihood expects (pyro-vae's image data sets are floats in [0, 1]):

==========================  ==========================================================
``bernoulli``               {0, 1} (binarized images: ``--binarize dynamic``)
``continuous-bernoulli``    [0, 1]
``beta``                    the open interval (0, 1)
``normal``, ``normal-*``,   any finite reals
``laplace``
``discretized-logistic``,   8-bit values k/255, k = 0..255 (``--binarize none``)
``categorical256``
``poisson``,                non-negative integers (stored as floats)
``negative-binomial``
==========================  ==========================================================

Every returned distribution has an exact ``.mean``, which ``VAE.sample`` and
``VAE.reconstruct`` show.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.checks import inverse_softplus, is_number
from pyro_vae.registry import Registry

__all__ = [
    "BINS",
    "LIKELIHOODS",
    "Bernoulli",
    "BernoulliLogits",
    "Likelihood",
    "Normal",
    "SupportError",
]

BINS = 256  # levels of an 8-bit image


class SupportError(ValueError):
    """Data outside the support of the chosen likelihood."""


class Likelihood(nn.Module):
    """Base class: ``likelihood(raw) -> Distribution`` with event shape ``data_shape``.

    ``num_params`` is the number of decoder outputs per data dimension. ``binary_data``
    says the likelihood scores {0, 1} data only, so that ``binarize="auto"`` (the default)
    binarizes for it: a user's own Bernoulli-like likelihood sets it to ``True`` too.
    """

    num_params: int = 1
    binary_data: bool = False

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    @property
    def num_outputs(self) -> int:
        """The decoder's outputs per data point, ``num_params * prod(data_shape)``."""
        return self.num_params * math.prod(self.data_shape)

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
        """:math:`p(x|z)` from the decoder's raw outputs ``raw`` of shape ``(..., P * D)``.

        ``P`` is :attr:`num_params` and ``D`` the number of data dimensions; the result has
        ``event_shape == data_shape`` and batch shape ``raw.shape[:-1]``.
        """
        raise NotImplementedError


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood", config_field="likelihood")


class BernoulliLogits(dist.Bernoulli):
    r"""Pyro's ``Bernoulli`` with a log-density that negates in place.

    :math:`\log p(x) = -\mathrm{BCE}(\ell, x)`, as torch computes it, but without allocating
    a second tensor of the broadcast shape for the minus sign: with ``k`` draws of ``z``
    per image the shape is ``(k, N, D)``, and that allocation cost a fifth of the IW
    evaluation (``benchmarks/README.md``, "Speed"). Values and gradients are bit-identical.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)  # views, no copies
        return F.binary_cross_entropy_with_logits(logits, value, reduction="none").neg_()


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    r"""Bernoulli, :math:`p(x|z) = \prod_d\! \sigma(\ell_d)^{x_d}(1-\sigma(\ell_d))^{1-x_d}`.

    The decoder gives the logits :math:`\ell`. Only for data in {0, 1}: for grey values use
    ``--binarize dynamic`` (x ~ Bernoulli(pixel) each epoch, Burda et al. 2015) or a
    continuous likelihood. Kingma & Welling (2014), appendix C.1.
    """

    binary_data = True

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split(raw)  # (..., *data_shape)
        return BernoulliLogits(logits=logits).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        binary = (x == 0) | (x == 1)
        if not bool(binary.all()):
            bad = int((~binary).sum())
            raise SupportError(
                f"the Bernoulli likelihood needs binary data (0 or 1), but {bad} of "
                f"{x.numel()} values are not (e.g. {float(x[~binary][0]):.4g}). Use "
                "TrainConfig(binarize='dynamic') to draw x ~ Bernoulli(pixel) every epoch, or "
                "a likelihood for continuous data (e.g. VAEConfig(likelihood='normal'))."
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


# --------------------------------------------------------------------------- helpers


def _positive(name: str, value: float) -> float:
    if not is_number(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _example(x: torch.Tensor, bad: torch.Tensor) -> str:
    """How many values are bad, and the first one, for a support message."""
    return f"{int(bad.sum())} of {x.numel()} values are not (e.g. {float(x[bad][0]):.6g})"


def _check_range(
    x: torch.Tensor, name: str, low: float, high: float, advice: str, open_ends: bool = False
) -> None:
    inside = (x > low) & (x < high) if open_ends else (x >= low) & (x <= high)
    if not bool(inside.all()):
        interval = f"({low:g}, {high:g})" if open_ends else f"[{low:g}, {high:g}]"
        raise SupportError(
            f"the {name} likelihood needs data in {interval}, but {_example(x, ~inside)}. " + advice
        )


class _LearnedScale(nn.Module):
    r"""One learned positive scalar, :math:`\sigma = \operatorname{softplus}(\rho) + \sigma_{\min}`.

    :math:`\rho` is a parameter initialized so that :math:`\sigma` starts at ``init``; the
    floor keeps the density bounded whatever the optimizer does.
    """

    def __init__(self, init: float, floor: float) -> None:
        super().__init__()
        _positive("init_scale", init)
        _positive("min_scale", floor)
        if init <= floor:
            raise ValueError(f"init_scale must exceed min_scale ({floor}), got {init}")
        self.floor = floor
        self.raw = nn.Parameter(torch.tensor(inverse_softplus(init - floor)))

    def forward(self) -> torch.Tensor:
        return F.softplus(self.raw) + self.floor  # ()
