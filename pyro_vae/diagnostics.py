r"""What the guide gets wrong, and where: diagnostics of a trained (model, guide) pair.

Every function takes any Pyro (model, guide) pair whose sites live in a plate ``"data"``
over the rows of ``x`` (the layout of :mod:`pyro_vae.decomposition`), not only the ones
this package builds. Figures are per data point, in nats.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Distribution, Independent, constraints, transform_to

from pyro_vae.decomposition import traces
from pyro_vae.evaluate import _max_plate_nesting, log_likelihood, log_weights
from pyro_vae.objectives import build_objective, kl_per_dimension

__all__ = [
    "ActiveUnits",
    "KLPerDim",
    "MutualInformation",
    "active_units",
    "compare_posteriors",
    "inference_gaps",
    "khat_summary",
    "kl_per_dim",
    "mutual_information",
    "nuts_posterior",
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
    """Mean KL per latent coordinate (nats), concatenated over latent sites in guide order.

    ``method`` is ``"analytic"`` (closed form for factorized Normals), ``"monte-carlo"``
    (factorized, no closed form) or None when the KL does not split over coordinates;
    then ``values`` is empty and ``reason`` says why.
    """

    values: list[float]
    method: str | None
    reason: str | None = None
    sites: dict[str, list[float]] = field(default_factory=dict)


def _univariate_base(d: Distribution) -> Distribution | None:
    while isinstance(d, Independent):
        d = d.base_dist
    return d if d.event_shape == () else None


def _site_kl_per_dim(q_site: Site, p_site: Site) -> tuple[torch.Tensor | None, str]:
    """``(N, units)`` KL of one draw, and the method (or the reason it does not split)."""
    q, p = q_site["fn"], p_site["fn"]
    try:
        return _per_unit(kl_per_dimension(q, p), q_site), "analytic"
    except ValueError:
        pass
    qb, pb = _univariate_base(q), _univariate_base(p)
    if qb is None or pb is None:
        return None, (
            f"q(z|x) = {type(q).__name__} and p(z) = {type(p).__name__} at site "
            f"{q_site['name']!r}: the KL does not split over coordinates unless both factorize"
        )
    z = q_site["value"]
    return _per_unit(qb.log_prob(z) - pb.log_prob(z), q_site), "monte-carlo"


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

    Where q and p are factorized Normals the KL splits in closed form; where both factorize
    otherwise it is a Monte Carlo average of :math:`\log q(z_j|x) - \log p(z_j)` over
    ``num_particles`` draws; otherwise (a full-covariance guide, a mixture prior) there is
    no per-coordinate KL and the result says why. The values sum to the mean KL.
    """
    x = _check_x(x)
    _positive_int("num_particles", num_particles)
    _positive_int("batch_size", batch_size)
    sums: dict[str, torch.Tensor] = {}
    method = "analytic"
    with torch.no_grad():
        for xb in x.split(batch_size):
            draws = 1 if method == "analytic" else num_particles
            for _ in range(draws):
                model_trace, guide_trace = traces(model, guide, xb, *args, **kwargs)
                for name, q_site in _latent_sites(guide_trace):
                    unit, how = _site_kl_per_dim(q_site, model_trace.nodes[name])
                    if unit is None:
                        return KLPerDim([], None, how)
                    if how == "monte-carlo" and method == "analytic":
                        return _monte_carlo_kl_per_dim(
                            model, guide, x, args, kwargs, num_particles, batch_size
                        )
                    sums[name] = sums.get(name, 0.0) + unit.double().sum(0) / draws
    return _kl_result(sums, x.shape[0], method)


def _monte_carlo_kl_per_dim(
    model: Fn,
    guide: Fn,
    x: torch.Tensor,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    num_particles: int,
    batch_size: int,
) -> KLPerDim:
    sums: dict[str, torch.Tensor] = {}
    for xb in x.split(batch_size):
        for _ in range(num_particles):
            model_trace, guide_trace = traces(model, guide, xb, *args, **kwargs)
            for name, q_site in _latent_sites(guide_trace):
                p_site: Site = model_trace.nodes[name]
                qb, pb = _univariate_base(q_site["fn"]), _univariate_base(p_site["fn"])
                assert qb is not None and pb is not None
                z = q_site["value"]
                unit = _per_unit(qb.log_prob(z) - pb.log_prob(z), q_site)  # (B, units)
                sums[name] = sums.get(name, 0.0) + unit.double().sum(0) / num_particles
    return _kl_result(sums, x.shape[0], "monte-carlo")


def _kl_result(sums: dict[str, torch.Tensor], n: int, method: str) -> KLPerDim:
    sites = {name: (total / n).tolist() for name, total in sums.items()}
    values = [v for name in sites for v in sites[name]]
    return KLPerDim(values, method, None, sites)


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
            [_posterior_means(guide, xb, args, kwargs, num_samples) for xb in x.split(batch_size)]
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
    evaluations, in chunks) and ``num_samples`` draws of z per point (default: enough for
    10,000 draws in all, at least one per point). It is unbiased for
    the mutual information of the *empirical* distribution of those N points, which is at
    most log N; as an estimate for the population it is biased low (the plug-in aggregate
    posterior includes each point's own density), noticeably so when the true value
    approaches log N. Needs a guide with one latent site inside the data plate.
    """
    x = _check_x(x)
    n = x.shape[0]
    if num_samples is None:
        num_samples = max(1, math.ceil(10_000 / n))
    _positive_int("num_samples", num_samples)
    _positive_int("batch_size", batch_size)
    with torch.no_grad():
        fns = [_single_site_fn(guide, xb, args, kwargs) for xb in x.split(batch_size)]
        if any(fn is None for fn in fns):
            reason = "needs a guide with one latent site in the data plate"
            return MutualInformation(None, n, reason)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for fn in fns:
            assert fn is not None
            z = fn.sample((num_samples,))  # (S, B, L)
            own = fn.log_prob(z)  # (S, B)
            agg = torch.full_like(own, -math.inf)
            for other in fns:
                assert other is not None
                lp = other.log_prob(z.unsqueeze(-1 - len(fn.event_shape)))  # (S, B, B')
                agg = torch.logaddexp(agg, lp.logsumexp(-1))
            total += (own - (agg - math.log(n))).double().sum() / num_samples
    return MutualInformation(float(total / n), n)


def _single_site_fn(guide: Fn, xb: torch.Tensor, args: Any, kwargs: Any) -> Distribution | None:
    trace = _trace_guide(guide, xb, args, kwargs)
    sites = _latent_sites(trace)
    if len(sites) != 1:
        return None
    fn = sites[0][1]["fn"]
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
            [log_weights(model, guide, xb, num_samples, *args, **kwargs) for xb in x.split(chunk)],
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


class _LocalGuide:
    """A non-amortized guide: the amortized guide's family with free parameters per point.

    Built from the distribution the amortized guide gives at its one latent site: each
    parameter becomes an unconstrained tensor (mapped by ``transform_to``) initialized
    at the amortized value, so the optimization starts where the encoder left off.
    """

    def __init__(self, site: Site) -> None:
        fn = site["fn"]
        self.name = site["name"]
        self.reinterpreted = 0
        base = fn
        while isinstance(base, Independent):
            self.reinterpreted += base.reinterpreted_batch_ndims
            base = base.base_dist
        if not base.has_rsample:
            raise ValueError(f"site {self.name!r}: {type(base).__name__} is not reparameterizable")
        self.family = type(base)
        self.batch_shape = base.batch_shape
        # parameter name -> its event dims (per point: expanded over the whole batch)
        events = (
            {"loc": 1, "scale_tril": 2}
            if isinstance(base, dist.MultivariateNormal)
            else dict.fromkeys(base.arg_constraints, 0)
        )
        self.transforms = {k: transform_to(self._constraint(base, k)) for k in events}
        self.amortized = {k: self._full(getattr(base, k).detach(), e) for k, e in events.items()}
        self.params = {
            k: self.transforms[k].inv(v).clone().requires_grad_() for k, v in self.amortized.items()
        }

    def _full(self, value: torch.Tensor, event: int) -> torch.Tensor:
        event_shape = value.shape[value.dim() - event :] if event else ()
        return value.expand(*self.batch_shape, *event_shape)

    @staticmethod
    def _constraint(base: Distribution, name: str) -> constraints.Constraint:
        c = base.arg_constraints[name]
        return c if not isinstance(c, constraints._DependentProperty) else constraints.real

    def distribution(self, n: int) -> Distribution:
        values = {k: self.transforms[k](u[:n]) for k, u in self.params.items()}
        d: Any = self.family(**values)  # a Pyro distribution, as the guide's was
        return d.to_event(self.reinterpreted) if self.reinterpreted else d

    def mixture(self, n: int) -> Distribution:
        """The defensive proposal (q_phi + q*) / 2 for the first ``n`` points."""
        dim = len(self.batch_shape) - self.reinterpreted  # the component dim, before events
        values = {
            k: torch.stack([self.amortized[k][:n], self.transforms[k](u[:n])], dim=dim)
            for k, u in self.params.items()
        }
        components: Any = self.family(**values)
        if self.reinterpreted:
            components = components.to_event(self.reinterpreted)
        half = next(iter(values.values())).new_full((2,), 0.5)
        return dist.MixtureSameFamily(dist.Categorical(probs=half), components)

    def __call__(self, x: torch.Tensor, *args: Any, mixture: bool = False, **kwargs: Any) -> None:
        """Sample the optimized points' z; ``x`` is those points (or a prefix, to probe shapes).

        With ``mixture=True`` z comes from :meth:`mixture` instead.
        """
        n = x.shape[0]
        with pyro.plate("data", n):
            fn = self.mixture(n) if mixture else self.distribution(n)
            pyro.sample(self.name, fn)  # type: ignore[arg-type]


def _local_guide(guide: Fn, x: torch.Tensor, args: Any, kwargs: Any) -> _LocalGuide:
    with torch.no_grad():
        trace = _trace_guide(guide, x, args, kwargs)
    sites = _latent_sites(trace)
    if len(sites) != 1:
        raise ValueError(
            f"inference gaps need a guide with one latent site, got {[s for s, _ in sites]}"
        )
    return _LocalGuide(sites[0][1])


def _mean_se(values: torch.Tensor) -> dict[str, float]:
    v = values.double()
    se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se}


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
    family for each point, found by non-amortized SVI: per-point parameters initialized at
    the encoder's output, ``steps`` Adam steps on the ELBO (analytic KL where registered,
    ``num_particles`` vectorized draws) with the learning rate decayed from ``lr`` to 0 on a
    cosine, the model fixed. ELBOs are estimated with
    ``eval_particles`` draws (Monte Carlo KL). :math:`\log p(x)` is the IW bound with
    ``num_samples`` draws from the defensive mixture :math:`\frac12 q_\phi + \frac12 q^*`
    (Hesterberg 1995): still a stochastic lower bound, with weights at most twice those of
    either component, so it is about as tight as the better of the two proposals (an
    ELBO-optimal :math:`q^*` is mode-seeking and is not always the better one, e.g. against
    an IWAE-trained :math:`q_\phi`). The IW bound with :math:`q_\phi` alone is reported too.
    Each figure is a mean over points with its standard error over points.
    """
    x = _check_x(x)
    _positive_int("steps", steps, minimum=0)
    for name, value in (("num_particles", num_particles), ("eval_particles", eval_particles)):
        _positive_int(name, value)
    _positive_int("num_samples", num_samples)
    if not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    local = _local_guide(guide, x, args, kwargs)
    n = x.shape[0]
    nesting = _max_plate_nesting(model, guide, x, args, kwargs)
    particles = pyro.plate("gap_particles", num_particles, dim=-nesting - 1)  # vectorized draws
    objective: Any = build_objective("elbo-analytic")
    opt = torch.optim.Adam(list(local.params.values()), lr=lr)
    params = list(local.params.values())
    for step in range(steps):
        for group in opt.param_groups:  # cosine decay to 0: the last steps average the noise out
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = objective.differentiable_loss(particles(model), particles(local), x, *args, **kwargs)
        grads = torch.autograd.grad(loss / (n * num_particles), params)  # not the model's
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
    with torch.no_grad():
        # ELBO estimates: the mean over draws of the log weights (Monte Carlo KL)
        amortized = {"elbo": log_weights(model, guide, x, eval_particles, *args, **kwargs).mean(0)}
        optimized = {"elbo": log_weights(model, local, x, eval_particles, *args, **kwargs).mean(0)}
        mixture = functools.partial(local, mixture=True)
        log_px = log_likelihood(  # one chunk of points: the local parameters are per point
            model, mixture, x, *args, num_samples=num_samples, batch_size=n, **kwargs
        )
        log_px_q = log_likelihood(model, guide, x, *args, num_samples=num_samples, **kwargs)
    approx = log_px - optimized["elbo"]  # (N,)
    amort = optimized["elbo"] - amortized["elbo"]  # (N,)
    return {
        "num_points": int(x.shape[0]),
        "elbo_amortized": _mean_se(amortized["elbo"]),
        "elbo_optimized": _mean_se(optimized["elbo"]),
        "log_px": _mean_se(log_px),
        "log_px_amortized_proposal": _mean_se(log_px_q),
        "approximation_gap": _mean_se(approx),
        "amortization_gap": _mean_se(amort),
        "settings": {
            "steps": steps,
            "lr": lr,
            "num_particles": num_particles,
            "eval_particles": eval_particles,
            "iw_num_samples": num_samples,
        },
        "per_point": {
            "elbo_amortized": amortized["elbo"].tolist(),
            "elbo_optimized": optimized["elbo"].tolist(),
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
    **kwargs: Any,
) -> Any:
    """Draws of every latent site from q(z|x) for the rows of ``x``, as ``InferenceData``.

    The ``posterior`` group holds one variable per latent site with dims
    ``(chain, draw, point, <site>_dim)`` (one chain), coords ``point`` = ``point_ids``
    (default ``0..N-1``, e.g. the rows' indices in the test split) and ``<site>_dim`` =
    ``0..L-1``, so ``az.summary``, ``az.plot_pair`` and friends work on it directly.
    """
    x = _check_x(x)
    ids = list(range(x.shape[0])) if point_ids is None else list(point_ids)
    if len(ids) != x.shape[0]:
        raise ValueError(f"point_ids must name {x.shape[0]} points, got {len(ids)}")
    _positive_int("num_samples", num_samples)
    with torch.no_grad(), pyro.plate("draws", num_samples, dim=-2):
        trace = _trace_guide(guide, x, args, kwargs)
    draws = {}
    for name, site in _latent_sites(trace):
        value = site["value"]  # (S, N, *event)
        draws[name] = value.detach().double().cpu().numpy()[None]  # (1, S, N, *event)
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
    ``InferenceData`` laid out as in :func:`posterior_samples`. ``max_tree_depth`` bounds
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
    for c in range(num_chains):
        pyro.set_rng_seed(seed + c)
        kernel = pyro.infer.NUTS(model, max_tree_depth=max_tree_depth, jit_compile=False)
        mcmc = pyro.infer.MCMC(
            kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=True
        )
        mcmc.run(x, *args, **kwargs)
        for name, value in mcmc.get_samples().items():
            chains.setdefault(name, []).append(value.detach().double().cpu().numpy())
    draws = {name: np.stack(values) for name, values in chains.items()}  # (C, S, N, ...)
    return _inference_data(draws, ids)


def compare_posteriors(
    nuts: Any, guide: Fn, x: torch.Tensor, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """NUTS moments (with MCSE, r̂, ESS) beside the guide's mean and sd, per point and dim.

    ``nuts`` is :func:`nuts_posterior`'s InferenceData for the rows of ``x``. The guide's
    moments are its distribution's ``mean`` and ``stddev`` (exact). Only latent sites of
    the guide that NUTS sampled are compared.
    """
    az = arviz()
    summary = az.summary(nuts, fmt="xarray")
    with torch.no_grad():
        trace = _trace_guide(guide, x, args, kwargs)
    rows: list[dict[str, Any]] = []
    for name, site in _latent_sites(trace):
        if name not in summary:
            continue
        q_mean = site["fn"].mean.double().cpu().numpy()  # (N, L)
        q_sd = site["fn"].stddev.double().cpu().numpy()  # (N, L)
        s = summary[name]
        for i, point in enumerate(s.coords["point"].values.tolist()):
            for j in range(q_mean.shape[1]):
                cell = s.isel(point=i)[..., j] if s.ndim > 2 else s.isel(point=i)
                rows.append(
                    {
                        "site": name,
                        "point": int(point),
                        "dim": j,
                        "nuts_mean": float(cell.sel(metric="mean")),
                        "nuts_sd": float(cell.sel(metric="sd")),
                        "mcse_mean": float(cell.sel(metric="mcse_mean")),
                        "mcse_sd": float(cell.sel(metric="mcse_sd")),
                        "ess_bulk": float(cell.sel(metric="ess_bulk")),
                        "r_hat": float(cell.sel(metric="r_hat")),
                        "q_mean": float(q_mean[i, j]),
                        "q_sd": float(q_sd[i, j]),
                    }
                )
    return {
        "max_r_hat": max((r["r_hat"] for r in rows), default=float("nan")),
        "min_ess_bulk": min((r["ess_bulk"] for r in rows), default=float("nan")),
        "moments": rows,
    }
