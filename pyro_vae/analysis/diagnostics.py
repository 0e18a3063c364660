r"""What the guide gets wrong, and where: diagnostics of a trained (model, guide) pair.

Every function takes any Pyro (model, guide) pair whose sites live in a plate ``"data"``
over the rows of ``x`` (the layout of :mod:`pyro_vae.infer.decomposition`), not only the ones
this package builds. Further positional arguments are passed to both programs; those that
are tensors with ``N`` rows (e.g. the labels ``y`` of a conditional VAE, ``model(x, y)``)
are per point and go in chunks with ``x``, as in :func:`pyro_vae.log_likelihood`.
Figures are per data point, in nats.

- :func:`kl_per_dim`: :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` per latent coordinate.
- :func:`active_units`: coordinates with :math:`\mathrm{Cov}_x \mathbb{E}_q[z_j] > 0.01`
  (Burda et al. 2015, section 5.2).
- :func:`mutual_information`: :math:`I_q(x; z)` with the aggregate posterior
  (Hoffman & Johnson 2016).
- :func:`psis_khat`: the Pareto-k̂ of each point's importance weights p(x,z)/q(z|x)
  (Yao et al. 2018; Vehtari et al. 2024), through ``arviz.psislw``.
- :func:`inference_gaps`: approximation and amortization gaps (Cremer et al. 2018).
- :func:`nuts_posterior` and :func:`posterior_samples`: NUTS and guide draws of z for chosen
  points as ``arviz.InferenceData``; :func:`compare_posteriors` sets them side by side.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    biject_to,
    constraints,
    kl_divergence,
    transform_to,
)

from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.infer.decomposition import _analytic_kl_allowed, per_point, traces
from pyro_vae.infer.importance import (
    PointEstimateError,
    _max_plate_nesting,
    _rows,
    log_likelihood,
    log_weights,
)
from pyro_vae.infer.objectives import build_objective

__all__ = [
    "ActiveUnits",
    "KLPerDim",
    "MutualInformation",
    "active_units",
    "check_inference_gaps",
    "compare_posteriors",
    "inference_gaps",
    "khat_summary",
    "kl_per_dim",
    "mutual_information",
    "nuts_posterior",
    "nuts_transforms",
    "posterior_samples",
    "psis_khat",
    "worst_points",
]

Fn = Callable[..., Any]
Site = Any


def arviz() -> ModuleType:
    """Import ArviZ, whose import emits a FutureWarning about its coming refactor.

    That warning says nothing about our use (psislw, InferenceData, summary), and tests run
    with warnings as errors, so exactly that one is silenced. ArviZ 0.23 starts the message
    with a newline (and warns once a day, so a warm cache hides it): the pattern allows
    leading white space.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
        import arviz as az
    return az


def _check_x(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty tensor (N, ...), got {type(x).__name__}")
    return x


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _chunks(
    x: torch.Tensor, args: tuple[Any, ...], size: int
) -> Iterator[tuple[torch.Tensor, tuple[Any, ...]]]:
    """Rows of ``x`` in chunks of ``size``, each with its rows of the per-point ``args``."""
    for start in range(0, x.shape[0], size):
        yield x[start : start + size], _rows(args, x, start, start + size)


def _trace_guide(guide: Fn, x: torch.Tensor, args: Any, kwargs: Any) -> Any:
    """The guide's trace on ``x`` without plate subsample sites."""
    return prune_subsample_sites(poutine.trace(guide).get_trace(x, *args, **kwargs))


def _latent_sites(trace: Any) -> list[tuple[str, Site]]:
    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    ]


def _data_dim(site: Site) -> int | None:
    """The (negative) batch dim of the plate named ``data`` (or the only plate), or None."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized]
    named = [f for f in frames if f.name == "data"]
    frame = named[0] if named else (frames[0] if len(frames) == 1 else None)
    return None if frame is None else int(frame.dim)


def _per_unit(value: torch.Tensor, site: Site) -> torch.Tensor:
    """Sum an elementwise ``batch + event`` tensor to ``(N, units)``: units = event coords."""
    fn = site["fn"]
    event = len(fn.event_shape)
    batch = value.dim() - event
    dim = _data_dim(site)
    if dim is None:
        raise ValueError(f"latent site {site['name']!r} is not inside the data plate")
    value = value.movedim(batch + dim, 0)  # (N, other batch..., event...)
    value = value.reshape(value.shape[0], -1, *value.shape[batch:])  # (N, B', event...)
    return value.sum(1).reshape(value.shape[0], -1)  # (N, units)


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
    if _analytic_kl_allowed(name, model_trace, guide_trace):
        try:
            kl = kl_divergence(qm, pb)
            return _per_unit(kl.expand(qm.batch_shape), q_site), "analytic", marginal
        except NotImplementedError:
            pass
    z = q_site["value"]
    return _per_unit(qm.log_prob(z) - pb.log_prob(z), q_site), "monte-carlo", marginal


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
    x = _check_x(x)
    _positive_int("num_particles", num_particles)
    _positive_int("batch_size", batch_size)
    sums: dict[str, torch.Tensor] = {}
    methods: set[str] = set()
    marginal = False
    with torch.no_grad():
        for xb, rows in _chunks(x, args, batch_size):
            draws, done = 1, 0
            while done < draws:
                model_trace, guide_trace = traces(model, guide, xb, *rows, **kwargs)
                units: dict[str, torch.Tensor] = {}
                for name, _ in _latent_sites(guide_trace):
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
    trace = _trace_guide(guide, xb, args, kwargs)
    means = []
    for _, site in _latent_sites(trace):
        fn = site["fn"]
        try:
            mean = fn.mean.expand(fn.batch_shape + fn.event_shape)
        except NotImplementedError:
            mean = fn.sample((draws,)).mean(0)
        means.append(_per_unit(mean, site))  # (B, units)
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
    x = _check_x(x)
    _positive_int("num_samples", num_samples)
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    with torch.no_grad():
        means = torch.cat(
            [
                _posterior_means(guide, xb, rows, kwargs, num_samples)
                for xb, rows in _chunks(x, args, batch_size)
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
    x = _check_x(x)
    n = x.shape[0]
    if num_samples is None:
        num_samples = max(1, math.ceil(10_000 / n))
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        _positive_int(name, value)
    _positive_int("max_elements", max_elements)
    with torch.no_grad():
        fns = []
        for xb, rows in _chunks(x, args, batch_size):
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
    trace = _trace_guide(guide, xb, args, kwargs)
    sites = _latent_sites(trace)
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


# ---------------------------------------------------------------------------- PSIS k-hat


def psis_khat(
    model: Fn,
    guide: Fn,
    x: torch.Tensor,
    *args: Any,
    num_samples: int = 1000,
    max_elements: int = 2**25,
    **kwargs: Any,
) -> np.ndarray:
    r"""Pareto :math:`\hat k` of each point's importance weights, shape ``(N,)``.

    For each :math:`x_n`, ``num_samples`` draws :math:`z_s \sim q(z|x_n)` give weights
    :math:`w_s = p(x_n, z_s) / q(z_s|x_n)`; ``arviz.psislw`` fits a generalized Pareto
    distribution to their upper tail and returns its shape :math:`\hat k` (Yao et al.
    2018, "Yes, but did it work?"). :math:`\hat k < 0.5`: the weights have finite variance
    and q is a good proposal for p(z|x_n); :math:`0.5 \le \hat k < 0.7`: usable;
    :math:`\hat k \ge 0.7`: importance sampling from q is unreliable at that point, so
    its IW log-likelihood is suspect and q misses posterior mass there. Weights that are
    all equal (q is the exact posterior at that point) have no tail to fit and get
    :math:`\hat k = 0`.
    """
    x = _check_x(x)
    _positive_int("num_samples", num_samples, minimum=2)
    per_point = max(1, math.prod(x.shape[1:]))
    chunk = max(1, max_elements // (per_point * num_samples))
    with torch.no_grad():
        lw = torch.cat(
            [
                log_weights(model, guide, xb, num_samples, *rows, **kwargs)
                for xb, rows in _chunks(x, args, chunk)
            ],
            dim=1,
        )  # (S, N)
    lw_np = lw.T.double().cpu().numpy()  # (N, S)
    flat = np.ptp(lw_np, axis=1) <= 1e-9 * np.maximum(1.0, np.abs(lw_np).max(axis=1))
    khat = np.zeros(lw_np.shape[0])
    if (~flat).any():
        _, k = arviz().psislw(lw_np[~flat])
        khat[~flat] = np.asarray(k, dtype=np.float64)
    return khat


def khat_summary(khat: np.ndarray) -> dict[str, float]:
    """``mean``, ``max`` and the fractions of points above the 0.5 and 0.7 thresholds."""
    khat = np.asarray(khat, dtype=np.float64)
    if khat.size == 0:
        raise ValueError("khat must hold at least one value")
    return {
        "mean": float(khat.mean()),
        "max": float(khat.max()),
        "frac_above_0.5": float((khat > 0.5).mean()),
        "frac_above_0.7": float((khat > 0.7).mean()),
    }


def worst_points(
    khat: np.ndarray, num: int = 10, **columns: Sequence[float]
) -> list[dict[str, Any]]:
    """The ``num`` points with the largest k̂, worst first, with any per-point ``columns``."""
    order = np.argsort(-np.asarray(khat), kind="stable")[:num]
    rows = []
    for i in order.tolist():
        row: dict[str, Any] = {"index": int(i), "khat": float(khat[i])}
        row.update({name: float(values[i]) for name, values in columns.items()})
        rows.append(row)
    return rows


# ------------------------------------------------------------------------ inference gaps

# distributions whose arg_constraints list alternative parametrizations: the one to free
_PARAMETERS: dict[type, tuple[str, ...]] = {dist.MultivariateNormal: ("loc", "scale_tril")}


class _LocalGuide:
    """A non-amortized guide: the amortized guide's family with free parameters per point.

    Built from the distribution the amortized guide gives at its one latent site: each
    parameter becomes an unconstrained tensor (mapped by ``transform_to``) initialized
    at the amortized value, so the optimization starts where the encoder left off. A
    parameter's event dims are those of its constraint (``loc`` of a multivariate Normal:
    1, a low-rank ``cov_factor``: 2), so it is expanded to the batch shape plus those.
    """

    def __init__(self, site: Site) -> None:
        self.name = site["name"]
        base, self.reinterpreted = _unwrap(site["fn"])
        self.family = type(base)
        self.batch_shape = base.batch_shape
        events = _parameter_events(base)
        if not base.has_rsample or not events:
            raise ValueError(f"site {self.name!r}: no parameters of {self.family.__name__} to free")
        self.transforms = {k: transform_to(base.arg_constraints[k]) for k in events}
        self.params = {
            k: self.transforms[k].inv(self._full(getattr(base, k).detach(), e)).clone()
            for k, e in events.items()
        }
        for p in self.params.values():
            p.requires_grad_()

    @staticmethod
    def readable(site: Site) -> bool:
        """True if the site's distribution exposes reparameterized parameters to free."""
        base, _ = _unwrap(site["fn"])
        return bool(base.has_rsample and _parameter_events(base))

    def _full(self, value: torch.Tensor, event: int) -> torch.Tensor:
        event_shape = value.shape[value.dim() - event :] if event else ()
        return value.expand(*self.batch_shape, *event_shape)

    def distribution(self, n: int) -> Distribution:
        values = {k: self.transforms[k](u[:n]) for k, u in self.params.items()}
        d: Any = self.family(**values)  # a Pyro distribution, as the guide's was
        return d.to_event(self.reinterpreted) if self.reinterpreted else d

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Sample the optimized points' z; ``x`` is those points (or a prefix, to probe shapes)."""
        n = x.shape[0]
        with pyro.plate("data", n):
            pyro.sample(self.name, self.distribution(n))  # type: ignore[arg-type]


def _unwrap(fn: Distribution) -> tuple[Distribution, int]:
    """The distribution under ``Independent`` wrappers, and the batch dims they reinterpret."""
    reinterpreted = 0
    while isinstance(fn, Independent):
        reinterpreted += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, reinterpreted


def _parameter_events(base: Distribution) -> dict[str, int]:
    """Parameter name -> its event dims, read off its constraint ({} if one cannot be freed)."""
    names = _PARAMETERS.get(type(base), tuple(base.arg_constraints))
    events = {}
    for name in names:
        constraint = base.arg_constraints[name]
        try:
            transform_to(constraint)
            events[name] = int(constraint.event_dim)
            getattr(base, name)
        except (NotImplementedError, AttributeError, ValueError):
            return {}
    return events


@dataclass
class _Part:
    """Rows of x whose non-amortized guide ``guide`` has the free parameters ``params``."""

    rows: slice
    guide: Fn
    params: list[torch.Tensor]


def check_inference_gaps(guide: Fn, x: torch.Tensor, *args: Any, **kwargs: Any) -> str:
    """How :func:`inference_gaps` builds the per-point guide, or why it cannot (ValueError).

    ``"per-point parameters"``: one latent site whose distribution exposes its parameters
    (Normal, low-rank and full-covariance Normals, ...): each becomes a free tensor per
    point. ``"per-point copies of the guide"``: otherwise (a flow such as the IAF guide,
    several latent sites as in a hierarchy), a guide that is an ``nn.Module`` is copied
    once per point and all the copy's parameters are optimized on that point alone, which
    frees every member of the family for it. Refused: a point-mass (``Delta``) site
    (:class:`~pyro_vae.infer.importance.PointEstimateError`), a guide without latent sites, and a
    plain-function guide whose parameters cannot be read. Cheap: one run of the guide on
    the first row, so callers check before any slow work.
    """
    x = _check_x(x)
    with torch.no_grad():
        trace = _trace_guide(guide, x[:1], _rows(args, x, 0, 1), kwargs)
    sites = _latent_sites(trace)
    if not sites:
        raise ValueError("inference gaps need a guide with at least one latent site, got none")
    for name, site in sites:
        if is_point_mass(site["fn"]):
            raise PointEstimateError(
                f"the guide's site {name!r} is a point mass (Delta): it has no ELBO and no "
                "density to importance-sample with, so there are no inference gaps to report"
            )
    if len(sites) == 1 and _LocalGuide.readable(sites[0][1]):
        return "per-point parameters"
    if isinstance(guide, nn.Module) and any(True for _ in guide.parameters()):
        return "per-point copies of the guide"
    fn = sites[0][1]["fn"]
    raise ValueError(
        f"inference gaps need per-point guide parameters: the guide has sites "
        f"{[s for s, _ in sites]} ({type(fn).__name__} at {sites[0][0]!r}), whose parameters "
        "cannot be read, and it is a plain function, not an nn.Module whose parameters "
        "could be copied per point. Write the guide as an nn.Module, or with one latent site "
        "of a distribution with named parameters (e.g. Normal)."
    )


def _local_parts(guide: Fn, x: torch.Tensor, args: Any, kwargs: Any, how: str) -> Iterator[_Part]:
    """The non-amortized guides, created one at a time (copies are made lazily)."""
    if how == "per-point parameters":
        with torch.no_grad():
            site = _latent_sites(_trace_guide(guide, x, args, kwargs))[0][1]
        local = _LocalGuide(site)
        yield _Part(slice(0, x.shape[0]), local, list(local.params.values()))
        return
    assert isinstance(guide, nn.Module)
    for i in range(x.shape[0]):
        copy = deepcopy(guide)
        params = [p.requires_grad_() for p in copy.parameters()]
        yield _Part(slice(i, i + 1), copy, params)


def _mean_se(values: torch.Tensor) -> dict[str, float]:
    v = values.double()
    se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se}


@dataclass
class _Fit:
    """How the per-point guides are fitted: SVI settings and the particle plate's dim."""

    steps: int
    lr: float
    num_particles: int
    dim: int
    analytic: bool


def _fit(model: Fn, part: _Part, x: torch.Tensor, args: Any, kwargs: Any, fit: _Fit) -> None:
    """Adam on the part's parameters alone, the learning rate decayed from lr to 0 on a cosine."""
    particles = pyro.plate("gap_particles", fit.num_particles, dim=fit.dim)  # vectorized draws
    objective: Any = build_objective("elbo-analytic" if fit.analytic else "elbo")
    opt = torch.optim.Adam(part.params, lr=fit.lr)
    scale = x.shape[0] * fit.num_particles
    for step in range(fit.steps):
        for group in opt.param_groups:  # cosine decay to 0: the last steps average the noise out
            group["lr"] = fit.lr * 0.5 * (1 + math.cos(math.pi * step / fit.steps))
        loss = objective.differentiable_loss(
            particles(model), particles(part.guide), x, *args, **kwargs
        )
        grads = torch.autograd.grad(loss / scale, part.params)  # not the model's
        for p, g in zip(part.params, grads, strict=True):
            p.grad = g
        opt.step()


def _log_density(trace: Any, n: int, dim: int) -> torch.Tensor:
    """The sum over a trace's sample sites of their log densities, ``(K, N)``."""
    total: Any = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample":
            lp = site["fn"].log_prob(site["value"])
            total = total + per_point(lp, site, n, particle_dim=dim)
    return total  # type: ignore[no-any-return]


def _mis_log_px(
    model: Fn,
    guides: tuple[Fn, Fn],
    x: torch.Tensor,
    args: Any,
    kwargs: Any,
    num_samples: int,
    dim: int,
    max_elements: int = 2**25,
) -> torch.Tensor:
    r"""log p(x) by multiple importance sampling from two guides, half the draws each, ``(N,)``.

    .. math::

        \hat p(x) = \frac1K \sum_{k=1}^{K} \frac{p(x, z_k)}{\frac12 q_a(z_k|x)
            + \frac12 q_b(z_k|x)}, \quad z_{1..K/2} \sim q_a,\; z_{K/2+1..K} \sim q_b

    is unbiased for p(x) (the balance heuristic of Veach & Guibas 1995, the deterministic
    mixture of Owen & Zhou 2000), so its log is a stochastic lower bound; each weight is at
    most twice that of either proposal alone. A draw of one guide is scored by the other
    by replaying the other against its trace, so any Pyro guides with the same sites work.
    """
    n = x.shape[0]
    chunk = max(1, max_elements // (max(1, math.prod(x.shape[1:])) * n))
    acc = x.new_full((n,), -math.inf)
    counts = (num_samples // 2, num_samples - num_samples // 2)
    for (source, other), k in zip((guides, guides[::-1]), counts, strict=True):
        for start in range(0, k, chunk):
            with pyro.plate("iw_particles", min(chunk, k - start), dim=dim):
                model_trace, trace = traces(model, source, x, *args, **kwargs)
                replayed = poutine.trace(poutine.replay(other, trace=trace)).get_trace(
                    x, *args, **kwargs
                )
            log_q = torch.logaddexp(
                _log_density(trace, n, dim), _log_density(prune_subsample_sites(replayed), n, dim)
            )
            lw = _log_density(model_trace, n, dim) - (log_q - math.log(2))  # (k', N)
            acc = torch.logaddexp(acc, lw.logsumexp(0))
    return acc - math.log(num_samples)


def inference_gaps(
    model: Fn,
    guide: Fn,
    x: torch.Tensor,
    *args: Any,
    steps: int = 500,
    lr: float = 0.05,
    num_particles: int = 8,
    eval_particles: int = 200,
    num_samples: int = 1000,
    **kwargs: Any,
) -> dict[str, Any]:
    r"""The inference gaps of Cremer, Li & Duvenaud (2018) on the points ``x``.

    .. math::

        \log p(x) - \mathcal{L}[q_\phi]
        = \underbrace{\log p(x) - \mathcal{L}[q^*]}_{\text{approximation gap}}
        + \underbrace{\mathcal{L}[q^*] - \mathcal{L}[q_\phi]}_{\text{amortization gap}}

    :math:`q_\phi(z|x)` is the amortized guide; :math:`q^*` is the best member of the same
    family for each point, found by non-amortized SVI (see :func:`check_inference_gaps`
    for how the per-point guide is built: free distribution parameters, or a copy of the
    guide module per point), initialized at the amortized guide, ``steps`` Adam steps on
    the ELBO (analytic KL where registered and valid, ``num_particles`` vectorized draws)
    with the learning rate decayed from ``lr`` to 0 on a cosine, the model fixed. ELBOs
    are estimated with ``eval_particles`` draws (Monte Carlo KL). :math:`\log p(x)` is the
    importance-weighted bound with ``num_samples`` draws, half from :math:`q_\phi` and half
    from :math:`q^*`, weighted by the mixture :math:`\frac12 q_\phi + \frac12 q^*`
    (defensive importance sampling, Hesterberg 1995; Owen & Zhou 2000): still a
    stochastic lower bound, with weights at most twice those of either proposal, so it is
    about as tight as the better of the two (an ELBO-optimal :math:`q^*` is mode-seeking
    and is not always the better one, e.g. against an IWAE-trained :math:`q_\phi`). The IW
    bound with :math:`q_\phi` alone is reported too. Each figure is a mean over points
    with its standard error over points.
    """
    x = _check_x(x)
    _positive_int("steps", steps, minimum=0)
    for name, value in (("num_particles", num_particles), ("eval_particles", eval_particles)):
        _positive_int(name, value)
    _positive_int("num_samples", num_samples, minimum=2)
    if not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    how = check_inference_gaps(guide, x, *args, **kwargs)
    nesting = _max_plate_nesting(model, guide, x, args, kwargs)
    fit = _Fit(steps, lr, num_particles, -nesting - 1, how == "per-point parameters")
    optimized = x.new_empty(x.shape[0])
    log_px = x.new_empty(x.shape[0])
    store = pyro.get_param_store()
    # the same params inside; whatever the copies register (the guide's name) is dropped after
    with store.scope(store.get_state()):
        for part in _local_parts(guide, x, args, kwargs, how):
            xr, ar = x[part.rows], _rows(args, x, part.rows.start, part.rows.stop)
            _fit(model, part, xr, ar, kwargs, fit)
            with torch.no_grad():
                lw = log_weights(model, part.guide, xr, eval_particles, *ar, **kwargs)
                optimized[part.rows] = lw.mean(0)  # the ELBO: mean log weight (Monte Carlo KL)
                pair = (guide, part.guide)
                log_px[part.rows] = _mis_log_px(model, pair, xr, ar, kwargs, num_samples, fit.dim)
    with torch.no_grad():
        amortized = log_weights(model, guide, x, eval_particles, *args, **kwargs).mean(0)
        log_px_q = log_likelihood(model, guide, x, *args, num_samples=num_samples, **kwargs)
    return {
        "num_points": int(x.shape[0]),
        "elbo_amortized": _mean_se(amortized),
        "elbo_optimized": _mean_se(optimized),
        "log_px": _mean_se(log_px),
        "log_px_amortized_proposal": _mean_se(log_px_q),
        "approximation_gap": _mean_se(log_px - optimized),
        "amortization_gap": _mean_se(optimized - amortized),
        "settings": {
            "steps": steps,
            "lr": lr,
            "num_particles": num_particles,
            "eval_particles": eval_particles,
            "iw_num_samples": num_samples,
            "local_guide": how,
        },
        "per_point": {
            "elbo_amortized": amortized.tolist(),
            "elbo_optimized": optimized.tolist(),
            "log_px": log_px.tolist(),
        },
    }


# ----------------------------------------------------------------- posterior samples, NUTS


def _inference_data(
    draws: dict[str, np.ndarray], point_ids: Sequence[int], observed: str = "posterior"
) -> Any:
    """``InferenceData`` with ``draws[site]`` of shape (chain, draw, point, *event)."""
    coords: dict[str, Any] = {"point": list(point_ids)}
    dims: dict[str, list[str]] = {}
    for name, arr in draws.items():
        event = [f"{name}_dim{i}" if arr.ndim > 4 else f"{name}_dim" for i in range(arr.ndim - 3)]
        dims[name] = ["point", *event]
        for d, size in zip(event, arr.shape[3:], strict=True):
            coords[d] = list(range(size))
    return arviz().from_dict(**{observed: draws}, coords=coords, dims=dims)


def posterior_samples(
    guide: Fn,
    x: torch.Tensor,
    *args: Any,
    num_samples: int = 1000,
    point_ids: Sequence[int] | None = None,
    num_chains: int = 1,
    **kwargs: Any,
) -> Any:
    """Draws of every latent site from q(z|x) for the rows of ``x``, as ``InferenceData``.

    The ``posterior`` group holds one variable per latent site with dims
    ``(chain, draw, point, <site>_dim)``, coords ``point`` = ``point_ids`` (default
    ``0..N-1``, e.g. the rows' indices in the test split) and ``<site>_dim`` = ``0..L-1``,
    so ``az.summary``, ``az.plot_pair`` and friends work on it directly. ``num_samples``
    independent draws per chain. The draws are i.i.d., so chains only matter to ArviZ's
    bookkeeping: with one chain (the default) ``az.summary`` logs "Shape validation
    failed" and reports r̂ as NaN (use ``kind="stats"``, or ``num_chains=2``, for which r̂
    is 1 up to noise by construction).
    """
    x = _check_x(x)
    ids = list(range(x.shape[0])) if point_ids is None else list(point_ids)
    if len(ids) != x.shape[0]:
        raise ValueError(f"point_ids must name {x.shape[0]} points, got {len(ids)}")
    _positive_int("num_samples", num_samples)
    _positive_int("num_chains", num_chains)
    with torch.no_grad(), pyro.plate("draws", num_samples * num_chains, dim=-2):
        trace = _trace_guide(guide, x, args, kwargs)
    draws = {}
    for name, site in _latent_sites(trace):
        value = site["value"].detach().double().cpu().numpy()  # (C S, N, *event)
        draws[name] = value.reshape(num_chains, num_samples, *value.shape[1:])
    return _inference_data(draws, ids)


def nuts_posterior(
    model: Fn,
    x: torch.Tensor,
    *args: Any,
    num_samples: int = 500,
    warmup_steps: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    point_ids: Sequence[int] | None = None,
    max_tree_depth: int = 10,
    **kwargs: Any,
) -> Any:
    r"""NUTS draws from the exact posterior :math:`p(z|x_n) \propto p(z)\,p(x_n|z)`.

    Pyro's NUTS (Hoffman & Gelman 2014) runs on ``model(x)`` with the model's parameters
    fixed; the rows of ``x`` are independent given them, so one run samples all their
    posteriors jointly. ``num_chains`` chains run one after another (seeds ``seed``,
    ``seed + 1``, ...) so that r̂ and the ESS can be computed, and are returned as
    ``InferenceData`` laid out as in :func:`posterior_samples`, one variable per latent site
    (``z``, or ``z1``, ``z2``, ... for a hierarchy). Each site is sampled in the unconstrained
    space of :func:`nuts_transforms` (so mixture priors work). ``max_tree_depth`` bounds
    the leapfrog steps per draw (at most 2**depth - 1; Pyro's default 10). It is slow on a
    CPU: each leapfrog step runs the decoder, and Pyro adds its tracing to each, so a
    50-dimensional MNIST posterior takes of the order of a second per draw.
    """
    x = _check_x(x)
    ids = list(range(x.shape[0])) if point_ids is None else list(point_ids)
    if len(ids) != x.shape[0]:
        raise ValueError(f"point_ids must name {x.shape[0]} points, got {len(ids)}")
    _positive_int("num_samples", num_samples)
    _positive_int("num_chains", num_chains)
    _positive_int("warmup_steps", warmup_steps, minimum=0)
    chains: dict[str, list[np.ndarray]] = {}
    transforms = nuts_transforms(model, x, *args, **kwargs)
    for c in range(num_chains):
        pyro.set_rng_seed(seed + c)
        kernel = pyro.infer.NUTS(
            model,
            transforms=transforms,
            max_tree_depth=max_tree_depth,
            jit_compile=False,
            init_strategy=functools.partial(_init_uniform, transforms),
        )
        mcmc = pyro.infer.MCMC(
            kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=True
        )
        mcmc.run(x, *args, **kwargs)
        for name, value in mcmc.get_samples().items():
            chains.setdefault(name, []).append(value.detach().double().cpu().numpy())
    draws = {name: np.stack(values) for name, values in chains.items()}  # (C, S, N, ...)
    return _inference_data(draws, ids)


def nuts_transforms(model: Fn, x: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, Any]:
    r"""The bijections to unconstrained space NUTS samples each latent site of ``model`` in.

    ``biject_to(support).inv`` as Pyro would choose, except where PyTorch registers no
    bijection for the support: a mixture's ``MixtureSameFamilyConstraint`` (the mixture
    and VampPrior priors) is the support of its components, so their bijection serves,
    which for real-valued latents is the identity. A support that neither names is refused
    with the site and the constraint.
    """
    with torch.no_grad(), poutine.block():
        trace = prune_subsample_sites(poutine.trace(model).get_trace(x, *args, **kwargs))
    return {
        name: _to_unconstrained(name, site["fn"].support) for name, site in _latent_sites(trace)
    }


def _init_uniform(transforms: dict[str, Any], site: Site, radius: float = 2.0) -> torch.Tensor:
    """Pyro's ``init_to_uniform`` through ``transforms``: uniform in (-2, 2) unconstrained."""
    t = transforms[site["name"]]  # constrained -> unconstrained
    unconstrained = t(site["fn"].sample().detach())
    value = t.inv(torch.rand_like(unconstrained) * (2 * radius) - radius)
    value._pyro_custom_init = False  # as init_to_uniform marks it
    return value  # type: ignore[no-any-return]


def _to_unconstrained(name: str, support: constraints.Constraint) -> Any:
    seen = support
    while True:
        try:
            return biject_to(seen).inv
        except NotImplementedError:
            base = getattr(seen, "base_constraint", None)
            if base is None or base is seen:
                raise ValueError(
                    f"NUTS cannot sample latent site {name!r}: its support {support} has no "
                    "bijection to unconstrained space registered with torch.distributions "
                    "(biject_to). Register one, or use a prior with a standard support."
                ) from None
            seen = base


def compare_posteriors(
    nuts: Any, guide: Fn, x: torch.Tensor, *args: Any, q_samples: int = 4000, **kwargs: Any
) -> dict[str, Any]:
    """NUTS moments (with MCSE, r̂, ESS) beside the guide's mean and sd, per point and dim.

    ``nuts`` is :func:`nuts_posterior`'s InferenceData for the rows of ``x``. The guide's
    moments are its distribution's ``mean`` and ``stddev`` where it has them (exact;
    ``q_moments`` ``"exact"``), else the sample mean and sd of ``q_samples`` draws
    (``"sampled"``, e.g. an IAF guide, whose moments have no closed form; their Monte Carlo
    error is sd/sqrt(q_samples)). Only latent sites of the guide that NUTS sampled are
    compared; ``site`` names each row's site.
    """
    _positive_int("q_samples", q_samples, minimum=2)
    az = arviz()
    summary = az.summary(nuts, fmt="xarray")
    with torch.no_grad():
        trace = _trace_guide(guide, x, args, kwargs)
    rows: list[dict[str, Any]] = []
    for name, site in _latent_sites(trace):
        if name not in summary:
            continue
        q_mean, q_sd, how = _guide_moments(site, q_samples)  # (N, L) each
        s = summary[name]
        for i, point in enumerate(s.coords["point"].values.tolist()):
            for j in range(q_mean.shape[1]):
                cell = s.isel(point=i)[..., j] if s.ndim > 2 else s.isel(point=i)
                rows.append(
                    {
                        "site": name,
                        "point": int(point),
                        "dim": j,
                        **{key: float(cell.sel(metric=metric)) for key, metric in _NUTS_METRICS},
                        "q_mean": float(q_mean[i, j]),
                        "q_sd": float(q_sd[i, j]),
                        "q_moments": how,
                    }
                )
    return {
        "max_r_hat": max((r["r_hat"] for r in rows), default=float("nan")),
        "min_ess_bulk": min((r["ess_bulk"] for r in rows), default=float("nan")),
        "moments": rows,
    }


_NUTS_METRICS = (
    ("nuts_mean", "mean"),
    ("nuts_sd", "sd"),
    ("mcse_mean", "mcse_mean"),
    ("mcse_sd", "mcse_sd"),
    ("ess_bulk", "ess_bulk"),
    ("r_hat", "r_hat"),
)


def _guide_moments(site: Site, num_samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean and sd of a guide site per point and coordinate, ``(N, L)`` each, and how."""
    fn = site["fn"]
    try:
        mean, sd, how = fn.mean, fn.stddev, "exact"
    except NotImplementedError:  # e.g. a flow: no closed-form moments
        draws = fn.sample((num_samples,))  # (S, N, L)
        mean, sd, how = draws.mean(0), draws.std(0), "sampled"
    shape = fn.batch_shape + fn.event_shape  # (N, L)
    mean_np, sd_np = (
        v.expand(shape).reshape(shape[0], -1).double().cpu().numpy() for v in (mean, sd)
    )
    return mean_np, sd_np, how
