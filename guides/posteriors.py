r"""Families of the amortized posterior q(z|x): heads from encoder features to a distribution.

A family maps encoder features ``h`` of shape ``(..., H)`` to a distribution with batch shape
``(...)`` and event shape ``(latent_dim,)``, reparameterized, so the same head serves the
data plate ``(N,)`` and a particle plate ``(K, N)``. Scales are
:math:`\mathrm{softplus}(\cdot) + \sigma_{\min}`, bounded away from zero by construction.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn
from torch.nn import functional as F

from pyro_vae.checks import check_min_scale
from pyro_vae.registry import Registry

__all__ = [
    "GUIDES",
    "IAF",
    "DiagonalNormal",
    "FullNormal",
    "LowRankNormal",
    "PointMass",
    "Posterior",
    "is_point_mass",
]


class Posterior(nn.Module):
    """Base class: ``posterior(features) -> Distribution`` with event shape ``(latent_dim,)``."""

    latent_dim: int

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        """:math:`q(z|x)` from encoder features ``h`` of shape ``(..., feature_dim)``.

        The result has ``event_shape == (latent_dim,)`` and batch shape ``h.shape[:-1]``.
        """
        raise NotImplementedError


GUIDES: Registry[Posterior] = Registry("guide", config_field="guide")


def is_point_mass(d: object) -> bool:
    """True if ``d`` is a ``Delta`` (possibly wrapped by ``to_event``, ``expand``, masks)."""
    while not isinstance(d, dist.Delta) and hasattr(d, "base_dist"):
        d = d.base_dist
    return isinstance(d, dist.Delta)


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
        check_min_scale(min_scale)
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.head = nn.Linear(feature_dim, 2 * latent_dim)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = self.head(h).chunk(2, dim=-1)  # (..., L) each
        scale = F.softplus(raw_scale) + self.min_scale  # (..., L)
        return dist.Normal(loc, scale).to_event(1)


@GUIDES.register("lowrank")
class LowRankNormal(Posterior):
    r"""Low-rank plus diagonal Normal, :math:`q(z|x) = \mathcal{N}(z; \mu, FF^\top + D)`.

    The head gives the mean :math:`\mu(x)`, a factor :math:`F(x)` of shape (L, R) and the
    diagonal :math:`D(x) = \mathrm{diag}(\mathrm{softplus}(\cdot) + \sigma_{\min})^2`; the
    covariance is positive definite by construction and costs O(L R^2) to score. Rezende,
    Mohamed & Wierstra (2014) (rank one); Ong, Nott & Smith (2018) (factor covariance).
    """

    def __init__(
        self, feature_dim: int, latent_dim: int, *, rank: int = 1, min_scale: float = 1e-3
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank}")
        check_min_scale(min_scale)
        self.latent_dim, self.rank, self.min_scale = latent_dim, rank, min_scale
        self.head = nn.Linear(feature_dim, latent_dim * (2 + rank))

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        out = self.head(h)  # (..., L (2 + R))
        size = self.latent_dim
        loc, raw_diag, factor = out.split([size, size, size * self.rank], dim=-1)
        factor = factor.reshape(*out.shape[:-1], size, self.rank)  # (..., L, R)
        diag = (F.softplus(raw_diag) + self.min_scale) ** 2  # (..., L) variances
        return dist.LowRankMultivariateNormal(loc, factor, diag)


@GUIDES.register("full")
class FullNormal(Posterior):
    r"""Full-covariance Normal, :math:`q(z|x) = \mathcal{N}(z; \mu(x), L(x) L(x)^\top)`.

    The head gives :math:`\mu` and the L(L+1)/2 entries of the lower-triangular Cholesky
    factor :math:`L`, whose diagonal is :math:`\mathrm{softplus}(\cdot) + \sigma_{\min} > 0`,
    so :math:`LL^\top` is positive definite by construction. Kingma & Welling (2019), "An
    Introduction to Variational Autoencoders", sec. 2.5.
    """

    tril_rows: torch.Tensor
    tril_cols: torch.Tensor

    def __init__(self, feature_dim: int, latent_dim: int, *, min_scale: float = 1e-3) -> None:
        super().__init__()
        check_min_scale(min_scale)
        self.latent_dim, self.min_scale = latent_dim, min_scale
        rows, cols = torch.tril_indices(latent_dim, latent_dim)
        self.register_buffer("tril_rows", rows, persistent=False)
        self.register_buffer("tril_cols", cols, persistent=False)
        self.head = nn.Linear(feature_dim, latent_dim + rows.numel())

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        out = self.head(h)  # (..., L + L(L+1)/2)
        size = self.latent_dim
        loc, entries = out.split([size, out.shape[-1] - size], dim=-1)
        tril = out.new_zeros(*out.shape[:-1], size, size)  # (..., L, L)
        tril[..., self.tril_rows, self.tril_cols] = entries
        diag = F.softplus(tril.diagonal(dim1=-2, dim2=-1)) + self.min_scale  # (..., L)
        tril = tril.tril(-1) + torch.diag_embed(diag)  # (..., L, L)
        return dist.MultivariateNormal(loc, scale_tril=tril)


@GUIDES.register("iaf")
class IAF(Posterior):
    r"""Inverse autoregressive flow conditioned on the encoder (Kingma et al. 2016).

    .. math::

        z_0 = \mu(x) + \sigma(x) \odot \epsilon, \qquad
        z_t = s_t \odot z_{t-1} + (1 - s_t) \odot m_t, \quad
        [m_t, \mathrm{logit}\, s_t] = \mathrm{AR}_t(z_{t-1}, h(x)),

        \log q(z_T|x) = \log \mathcal{N}(\epsilon; 0, I) - \sum_i \log \sigma_i(x)
            - \sum_{t=1}^{T} \sum_i \log s_{t,i}

    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), with the numerically
    stable, sigmoid-gated step they recommend. :math:`\mathrm{AR}_t` is a MADE network whose
    context is the encoder's features :math:`h(x)`; successive steps reverse the order of
    the dimensions. Sampling and scoring a sample each cost one pass per step. Built from
    Pyro's ``ConditionalAffineAutoregressive``; ``hidden=0`` gives one hidden layer of
    width max(2·latent_dim, 16).
    """

    param_notes: ClassVar[dict[str, str]] = {"hidden": "automatic width, max(2·latent_dim, 16)"}

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        *,
        layers: int = 2,
        hidden: int = 0,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers}")
        if latent_dim < 2:
            raise ValueError(f"an IAF guide needs latent_dim >= 2, got {latent_dim}")
        width = hidden or max(2 * latent_dim, 16)
        if width < latent_dim:
            raise ValueError(f"hidden must be >= latent_dim ({latent_dim}), got {hidden}")
        check_min_scale(min_scale)
        self.latent_dim, self.min_scale = latent_dim, min_scale
        self.head = nn.Linear(feature_dim, 2 * latent_dim)
        self.steps = nn.ModuleList(
            _iaf_step(latent_dim, feature_dim, width, reverse=t % 2 == 1) for t in range(layers)
        )

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = self.head(h).chunk(2, dim=-1)  # (..., L) each
        scale = F.softplus(raw_scale) + self.min_scale  # (..., L)
        base = dist.Normal(loc, scale).to_event(1)
        steps = [step.condition(h) for step in self.steps]  # type: ignore[operator]
        return dist.TransformedDistribution(base, steps)


def _iaf_step(
    latent_dim: int, context_dim: int, width: int, reverse: bool
) -> ConditionalAffineAutoregressive:
    """One sigmoid-gated IAF step whose MADE reads [h, z] in a fixed variable order."""
    order = torch.arange(latent_dim)
    if reverse:
        order = order.flip(0)
    made = ConditionalAutoRegressiveNN(
        latent_dim,
        context_dim,
        [width],
        permutation=order,  # type: ignore[arg-type]
    )
    return ConditionalAffineAutoregressive(made, stable=True)


@GUIDES.register("delta")
class PointMass(Posterior):
    r"""Delta, a point mass :math:`q(z|x) = \delta(z - \mu(x))`: the deterministic autoencoder.

    With this guide the training objective reads :math:`\log p(x|\mu(x)) + \log p(\mu(x))`,
    reconstruction plus the log prior at a point (a regularized autoencoder, MAP in z). It
    is **not** a bound on :math:`\log p(x)`: the KL of a point mass to a density is
    infinite, and ``elbo_terms`` reports ``kl`` as :math:`-\log p(\mu(x))` with method
    ``"delta"``. ``log_likelihood`` refuses it (an importance sampler needs a proposal with
    a density). With the standard Normal prior the penalty is :math:`\tfrac12\|\mu(x)\|^2`
    plus a constant: a regularized deterministic autoencoder (cf. Ghosh et al. 2020,
    "From variational to deterministic autoencoders").
    """

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.head = nn.Linear(feature_dim, latent_dim)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        return dist.Delta(self.head(h), event_dim=1)  # batch (...), event (L,)
