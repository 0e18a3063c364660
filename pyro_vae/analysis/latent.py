r"""Latent statistics of a trained guide: KL per coordinate, active units, I(x; z).

- :func:`kl_per_dim`: :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` per latent coordinate.
- :func:`active_units`: coordinates with :math:`\mathrm{Cov}_x \mathbb{E}_q[z_j] > 0.01`
  (Burda et al. 2015, section 5.2).
- :func:`mutual_information`: :math:`I_q(x; z)` with the aggregate posterior
  (Hoffman & Johnson 2016).

Figures are per data point, in nats. The (model, guide) pairs and their arguments are as in
:mod:`pyro_vae.analysis.common`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import Distribution, Independent, kl_divergence

from pyro_vae.analysis.common import (
    Fn,
    check_count,
    check_x,
    chunks,
    latent_sites,
    per_unit,
    trace_guide,
)
from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.infer.decomposition import analytic_kl_allowed, traces
from pyro_vae.infer.importance import PointEstimateError

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
    """

    values: list[float]
    method: str | None
    reason: str | None = None
    sites: dict[str, list[float]] = field(default_factory=dict)
    marginal: bool = False

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
    name: str, model_trace: Any, guide_trace: Any
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
            return per_unit(kl.expand(qm.batch_shape), q_site), "analytic", marginal
        except NotImplementedError:
            pass
    z = q_site["value"]
    return per_unit(qm.log_prob(z) - pb.log_prob(z), q_site), "monte-carlo", marginal


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
    marginal = False
    with torch.no_grad():
        for xb, rows in chunks(x, args, batch_size):
            draws, done = 1, 0
            while done < draws:
                model_trace, guide_trace = traces(model, guide, xb, *rows, **kwargs)
                units: dict[str, torch.Tensor] = {}
                for name, _ in latent_sites(guide_trace):
                    unit, how, split = _site_kl_per_dim(name, model_trace, guide_trace)
                    if unit is None:
                        return KLPerDim([], None, how)
                    units[name], marginal = unit, marginal or split
                    methods.add(how)
                if done == 0 and (methods != {"analytic"} or len(units) > 1):
                    draws = num_particles  # random given x: average over draws
                for name, unit in units.items():
                    sums[name] = sums.get(name, 0.0) + unit.double().sum(0) / draws
                done += 1
    method = "analytic" if methods == {"analytic"} else "monte-carlo"
    sites = {name: (total / x.shape[0]).tolist() for name, total in sums.items()}
    values = [v for name in sites for v in sites[name]]
    return KLPerDim(values, method, None, sites, marginal)


# -------------------------------------------------------------------------- active units


@dataclass
class ActiveUnits:
    r"""Units whose posterior mean moves with x: :math:`\mathrm{Cov}_x\,\mathbb{E}_q[z_j] > t`."""

    count: int
    variances: list[float]
    threshold: float


def _posterior_means(guide: Fn, xb: torch.Tensor, args: Any, kwargs: Any, draws: int) -> Any:
    trace = trace_guide(guide, xb, args, kwargs)
    means = []
    for _, site in latent_sites(trace):
        fn = site["fn"]
        try:
            mean = fn.mean.expand(fn.batch_shape + fn.event_shape)
        except NotImplementedError:
            mean = fn.sample((draws,)).mean(0)
        means.append(per_unit(mean, site))  # (B, units)
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
    rows of ``x``. A unit that is not active carries no information about x.
    """
    x = check_x(x)
    check_count("num_samples", num_samples)
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    with torch.no_grad():
        means = torch.cat(
            [
                _posterior_means(guide, xb, rows, kwargs, num_samples)
                for xb, rows in chunks(x, args, batch_size)
            ]
        )  # (N, units)
    variances = means.double().var(0, correction=1 if means.shape[0] > 1 else 0)
    return ActiveUnits(int((variances > threshold).sum()), variances.tolist(), threshold)


# -------------------------------------------------------------------- mutual information


@dataclass
class MutualInformation:
    """:math:`I_q(x; z)` in nats (None with a reason where it cannot be estimated)."""

    value: float | None
    num_points: int
    reason: str | None = None


def mutual_information(
    guide: Fn,
    x: torch.Tensor,
    *args: Any,
    num_samples: int | None = None,
    batch_size: int = 500,
    max_elements: int = 2**22,
    **kwargs: Any,
) -> MutualInformation:
    r"""The mutual information between x and z under :math:`q(x, z) = p_{data}(x)\,q(z|x)`.

    Hoffman & Johnson (2016) write the average KL as
    :math:`\mathbb{E}_x \mathrm{KL}(q(z|x)\|p(z)) = I_q(x;z) + \mathrm{KL}(q(z)\|p(z))` with
    the aggregate posterior :math:`q(z) = \frac1N \sum_m q(z|x_m)`. The estimator here is

    .. math::

        \hat I = \frac1N \sum_n \mathbb{E}_{z \sim q(z|x_n)}\Big[\log q(z|x_n)
            - \log \frac1N \sum_{m=1}^N q(z|x_m)\Big]

    with the aggregate posterior evaluated exactly over the N rows of ``x`` (O(N²) density
    evaluations, in chunks of at most ``max_elements`` values) and ``num_samples`` draws of
    z per point (default: enough for 10,000 draws in all, at least one per point). It is
    unbiased for the mutual information of the *empirical* distribution of those N points,
    which is at most log N; as an estimate for the population it is biased low (the plug-in
    aggregate posterior includes each point's own density), noticeably so when the true
    value approaches log N.

    Every draw is scored against every row by expanding it to the rows' batch shape, the
    value shape any distribution accepts, so families that do not broadcast a singleton
    batch dimension work too (an IAF guide, whose flow is conditioned on each row's
    features; scoring a foreign z inverts the flow, one network pass per coordinate).
    Needs a guide with one latent site inside the data plate (the result says so
    otherwise); a point-mass (``Delta``) guide has no density, and
    :class:`~pyro_vae.infer.importance.PointEstimateError` is raised.
    """
    x = check_x(x)
    n = x.shape[0]
    if num_samples is None:
        num_samples = max(1, math.ceil(10_000 / n))
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        check_count(name, value)
    check_count("max_elements", max_elements)
    with torch.no_grad():
        fns = []
        for xb, rows in chunks(x, args, batch_size):
            fn = _single_site_fn(guide, xb, rows, kwargs)
            if fn is None:
                reason = "needs a guide with one latent site in the data plate"
                return MutualInformation(None, n, reason)
            fns.append(fn)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for fn in fns:
            z = fn.sample((num_samples,))  # (S, B, *event)
            own = fn.log_prob(z)  # (S, B)
            flat = z.reshape(-1, *fn.event_shape)  # (S B, *event)
            agg = _log_aggregate(flat, fns, max_elements).reshape(own.shape)  # (S, B)
            total += (own - (agg - math.log(n))).double().sum() / num_samples
    return MutualInformation(float(total / n), n)


def _log_aggregate(z: torch.Tensor, fns: list[Distribution], max_elements: int) -> torch.Tensor:
    r""":math:`\log \sum_m q(z_t|x_m)` over the rows of every chunk in ``fns``, shape ``(T,)``.

    Each draw is expanded to a chunk's batch shape, ``(T', B', *event)``, and scored row by
    row: ``T'`` draws at a time so that ``T' B'`` values of the event size stay under
    ``max_elements``.
    """
    acc = z.new_full(z.shape[:1], -math.inf)  # (T,)
    event = z.shape[1:]
    for fn in fns:
        rows = fn.batch_shape[0]
        size = max(1, max_elements // (rows * max(1, math.prod(event))))
        parts = [
            fn.log_prob(part.unsqueeze(1).expand(-1, rows, *event)).logsumexp(-1)
            for part in z.split(size)
        ]  # (T',) each
        acc = torch.logaddexp(acc, torch.cat(parts))
    return acc


def _single_site_fn(guide: Fn, xb: torch.Tensor, args: Any, kwargs: Any) -> Distribution | None:
    """The distribution of the guide's one latent site with batch shape ``(B,)``, or None."""
    trace = trace_guide(guide, xb, args, kwargs)
    sites = latent_sites(trace)
    if len(sites) != 1:
        return None
    name, site = sites[0]
    fn = site["fn"]
    if is_point_mass(fn):
        raise PointEstimateError(
            f"the guide's site {name!r} is a point mass (Delta): q(z|x) has no density, so "
            "the mutual information I(x; z) under q is not defined (for a deterministic "
            "encoder it is infinite). Use a guide family with a density."
        )
    return fn if tuple(fn.batch_shape) == (xb.shape[0],) else None
