r"""Latent statistics of a trained guide: KL per coordinate, active units, I(x; z).

- :func:`kl_per_dim`: :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` per latent coordinate.
- :func:`active_units`: coordinates with :math:`\mathrm{Cov}_x \mathbb{E}_q[z_j] > 0.01`
  (Burda et al. 2015, section 5.2).
- :func:`mutual_information`: :math:`I_q(x; z)` with the aggregate posterior
  (Hoffman & Johnson 2016), in :mod:`~pyro_vae.analysis.information`, re-exported here.

Figures are per data point, in nats. The (model, guide) pairs and their arguments are as in
:mod:`pyro_vae.analysis.common`. They are statistics of the continuous code z: a discrete
latent site of the guide (a class y) is left out (``discrete`` names it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Distribution, Independent, kl_divergence

from pyro_vae.analysis.common import (
    Fn,
    check_count,
    check_x,
    chunks,
    continuous_sites,
    discrete_sites,
    point_values,
    traced_guide,
)
from pyro_vae.analysis.information import MutualInformation, mutual_information
from pyro_vae.infer import sites
from pyro_vae.infer.decomposition import analytic_kl_allowed, traces
from pyro_vae.infer.sites import DataPlate, SiteError

__all__ = [
    "ActiveUnits",
    "KLPerDim",
    "MutualInformation",
    "active_units",
    "kl_per_dim",
    "mutual_information",
]


# ------------------------------------------------------------------- KL per dimension


@dataclass
class KLPerDim:
    r"""Mean KL per latent coordinate (nats), concatenated over latent sites in guide order.

    ``method`` is ``"analytic"`` (closed form, e.g. for Normals) or ``"monte-carlo"``, or
    None when the KL does not split over coordinates; then ``values`` is empty and
    ``reason`` says why. ``sites`` maps each latent site to its own values and
    ``site_of`` names the site of each entry of ``values``. ``marginal`` is True where a
    correlated Gaussian q (full or low-rank covariance) was split into its marginals
    :math:`q(z_j|x)`: the values are then per-coordinate marginal KLs, whose sum falls
    short of the total KL by :math:`\mathrm{KL}(q(z|x)\,\|\,\prod_j q(z_j|x))`.
    ``discrete`` names the guide's discrete latent sites (a class y), which are not latent
    coordinates and are left out; the values are then averages over their draws.
    """

    values: list[float]
    method: str | None
    reason: str | None = None
    sites: dict[str, list[float]] = field(default_factory=dict)
    marginal: bool = False
    discrete: list[str] = field(default_factory=list)

    @property
    def site_of(self) -> list[str]:
        """The latent site of each entry of ``values``, e.g. ``["z1", "z1", "z2"]``."""
        return [name for name, values in self.sites.items() for _ in values]


def _univariate_base(d: Distribution) -> Distribution | None:
    while isinstance(d, Independent):
        d = d.base_dist
    return d if d.event_shape == () else None


def _marginals(d: Distribution) -> tuple[Distribution | None, bool]:
    """Coordinatewise densities of ``d`` (batch ``(..., L)``), and whether they are marginals.

    A factorized ``d`` gives its univariate base; a full or low-rank multivariate Normal
    gives its Normal marginals :math:`\\mathcal{N}(\\mu_j, \\Sigma_{jj})`.
    """
    base = _univariate_base(d)
    if base is not None:
        return base, False
    if isinstance(d, (dist.MultivariateNormal, dist.LowRankMultivariateNormal)):
        return dist.Normal(d.loc, d.variance.sqrt()), True
    return None, False


def _site_kl_per_dim(
    name: str, model_trace: Any, guide_trace: Any, plate: DataPlate
) -> tuple[torch.Tensor | None, str, bool]:
    """``(N, units)`` KL of one draw at site ``name``, the method (or why it does not split),
    and whether q was split into marginals.

    Analytic where the univariate KL is registered and the site's prior depends on no
    latent the guide draws after it (else, as in ``elbo_terms``, Monte Carlo: in a
    hierarchy p(z1|z2) depends on the z2 that q(z2|z1) draws from this very z1).
    """
    q_site, p_site = guide_trace.nodes[name], model_trace.nodes[name]
    (qm, marginal), pb = _marginals(q_site["fn"]), _univariate_base(p_site["fn"])
    if qm is None or pb is None:
        q, p = q_site["fn"], p_site["fn"]
        return (
            None,
            (
                f"q(z|x) = {type(q).__name__} and p(z) = {type(p).__name__} at site {name!r}: the "
                "KL does not split over coordinates unless p factorizes and q factorizes or is "
                "Gaussian"
            ),
            False,
        )
    if analytic_kl_allowed(name, model_trace, guide_trace):
        try:
            kl = kl_divergence(qm, pb)
            return sites.per_unit(q_site, plate, kl.expand(qm.batch_shape)), "analytic", marginal
        except NotImplementedError:
            pass
    z = q_site["value"]
    unit = sites.per_unit(q_site, plate, qm.log_prob(z) - pb.log_prob(z))
    return unit, "monte-carlo", marginal


def kl_per_dim(
    model: Fn,
    guide: Fn,
    x: torch.Tensor,
    *args: Any,
    num_particles: int = 10,
    batch_size: int = 1000,
    **kwargs: Any,
) -> KLPerDim:
    r"""Mean over ``x`` of :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` for each coordinate j.

    Where the prior factorizes over coordinates, so does the KL of a factorized q: in
    closed form where torch registers the univariate KL (Normals), else a Monte Carlo
    average of :math:`\log q(z_j|x) - \log p(z_j)` over ``num_particles`` draws; the
    values then sum to the mean KL. For a correlated Gaussian q (``full``, ``lowrank``)
    each value is the KL of the coordinate's *marginal*
    :math:`q(z_j|x) = \mathcal{N}(\mu_j, \Sigma_{jj})`; their sum is smaller than the KL by
    :math:`\mathrm{KL}(q(z|x)\,\|\,\prod_j q(z_j|x)) \ge 0`, the dependence q puts between
    coordinates (``marginal`` is then True). Where the prior does not factorize (mixture,
    VampPrior, flow) or q is neither (IAF) there is no per-coordinate KL and the result
    says why. In a hierarchy each site has its own entries (``sites``, ``site_of``); a
    site whose prior depends on a latent the guide draws after it (z1 under p(z1|z2)) is
    estimated by Monte Carlo, as in :func:`~pyro_vae.elbo_terms`.
    """
    x = check_x(x)
    check_count("num_particles", num_particles)
    check_count("batch_size", batch_size)
    sums: dict[str, torch.Tensor] = {}
    methods: set[str] = set()
    marginal, discrete = False, []
    with torch.no_grad():
        for xb, rows in chunks(x, args, batch_size):
            draws, done = 1, 0
            while done < draws:
                model_trace, guide_trace = traces(model, guide, xb, *rows, **kwargs)
                plate = sites.data_plate(model_trace, guide_trace, n=xb.shape[0])
                discrete = discrete_sites(guide_trace)  # sampled: averaged over draws
                units: dict[str, torch.Tensor] = {}
                for name, _ in continuous_sites(guide_trace):
                    unit, how, split = _site_kl_per_dim(name, model_trace, guide_trace, plate)
                    if unit is None:
                        return KLPerDim([], None, how, discrete=discrete)
                    units[name], marginal = unit, marginal or split
                    methods.add(how if not discrete else "monte-carlo")
                if done == 0 and (methods != {"analytic"} or len(units) > 1):
                    draws = num_particles  # random given x: average over draws
                for name, unit in units.items():
                    sums[name] = sums.get(name, 0.0) + unit.double().sum(0) / draws
                done += 1
    method = "analytic" if methods == {"analytic"} else "monte-carlo"
    per_site = {name: (total / x.shape[0]).tolist() for name, total in sums.items()}
    values = [v for name in per_site for v in per_site[name]]
    return KLPerDim(values, method, None, per_site, marginal, discrete)


# -------------------------------------------------------------------------- active units


@dataclass
class ActiveUnits:
    r"""Units whose posterior mean moves with x: :math:`\mathrm{Cov}_x\,\mathbb{E}_q[z_j] > t`.

    ``discrete`` names the guide's discrete latent sites (a class y): they are not units,
    and the means of the continuous ones are taken over them, by enumeration.
    """

    count: int
    variances: list[float]
    threshold: float
    discrete: list[str] = field(default_factory=list)


def _mean(fn: Distribution, draws: int) -> torch.Tensor:
    """The distribution's mean over its ``batch + event`` shape, else that of ``draws`` draws."""
    try:
        return fn.mean.expand(fn.batch_shape + fn.event_shape)
    except NotImplementedError:
        return fn.sample((draws,)).mean(0)


def _posterior_means(
    guide: Fn, xb: torch.Tensor, args: Any, kwargs: Any, draws: int
) -> tuple[torch.Tensor, list[str]]:
    """``E_q[z|x]`` of every continuous latent coordinate, ``(B, units)``, and the discrete
    sites it is taken over (summed over their support)."""
    trace, plate = traced_guide(guide, xb, args, kwargs)
    discrete = discrete_sites(trace)
    if discrete:
        return _enumerated_means(guide, xb, args, kwargs, trace, plate, draws), discrete
    means = [point_values(_mean(s["fn"], draws), s, plate) for _, s in continuous_sites(trace)]
    return torch.cat(means, dim=1), discrete


def _enumerated_means(
    guide: Fn,
    xb: torch.Tensor,
    args: Any,
    kwargs: Any,
    plain: Any,
    plate: DataPlate,
    draws: int,
) -> torch.Tensor:
    r""":math:`\mathbb{E}_q[z|x] = \sum_y q(y|x)\,\mathbb{E}_q[z|x, y]` with the guide's
    discrete sites y enumerated in parallel left of its plates, ``(B, units)``."""
    nesting = sites.max_plate_nesting(plain)
    enumerated = poutine.enum(
        config_enumerate(guide, default="parallel"), first_available_dim=-nesting - 1
    )
    try:
        trace = prune_subsample_sites(poutine.trace(enumerated).get_trace(xb, *args, **kwargs))
    except Exception as error:
        raise SiteError(
            f"the posterior mean E_q[z|x] sums the guide's discrete sites "
            f"{discrete_sites(plain)} over their support, and the guide fails with them "
            f"enumerated in parallel ({str(error).strip().splitlines()[0]}): make it broadcast "
            "over a batch dim left of its plates, as Pyro's TraceEnum_ELBO needs"
        ) from error
    log_w: Any = 0.0
    for _, site in sites.latent_sites(trace):
        if sites.is_enumerated(site):
            log_w = log_w + sites.per_point(site, plate, max_plate_nesting=nesting)
    means = []
    for _, site in continuous_sites(trace):
        mean = _mean(site["fn"], draws)
        left = max(0, len(site["fn"].batch_shape) - nesting)
        value = point_values(mean, site, plate, left)  # (*enum, B, units)
        weight = torch.as_tensor(log_w).exp().unsqueeze(-1)  # (*enum, B, 1)
        value, weight = torch.broadcast_tensors(value, weight)
        means.append((value * weight).reshape(-1, *value.shape[-2:]).sum(0))
    return torch.cat(means, dim=1)


def active_units(
    guide: Fn,
    x: torch.Tensor,
    *args: Any,
    threshold: float = 0.01,
    num_samples: int = 100,
    batch_size: int = 1000,
    **kwargs: Any,
) -> ActiveUnits:
    r"""Active units of Burda et al. (2015, section 5.2).

    .. math::

        A_j = \mathrm{Cov}_x\big(\mathbb{E}_{q(z|x)}[z_j]\big) > \text{threshold} = 0.01

    The posterior mean is the guide's ``mean`` where the distribution has one, else an
    average of ``num_samples`` draws; the covariance over x is the sample variance over the
    rows of ``x``. A unit that is not active carries no information about x. The units
    are the coordinates of the continuous latent sites, each copy of a site in an inner
    plate its own; a discrete site (a class y) is no unit, and where the guide has one the
    mean :math:`\mathbb{E}_q[z|x] = \sum_y q(y|x)\,\mathbb{E}_q[z|x,y]` sums it over its
    support exactly (enumerated in parallel, as ``config_enumerate`` would; a guide that
    cannot broadcast over it is refused with a :class:`~pyro_vae.infer.sites.SiteError`).
    """
    x = check_x(x)
    check_count("num_samples", num_samples)
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    with torch.no_grad():
        parts = [
            _posterior_means(guide, xb, rows, kwargs, num_samples)
            for xb, rows in chunks(x, args, batch_size)
        ]
    means = torch.cat([m for m, _ in parts])  # (N, units)
    variances = means.double().var(0, correction=1 if means.shape[0] > 1 else 0)
    count = int((variances > threshold).sum())
    return ActiveUnits(count, variances.tolist(), threshold, parts[0][1])
