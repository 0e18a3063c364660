r"""The inference gaps of Cremer, Li & Duvenaud (2018): where the ELBO's shortfall comes from.

.. math::

    \log p(x) - \mathcal{L}[q_\phi]
    = \underbrace{\log p(x) - \mathcal{L}[q^*]}_{\text{approximation gap}}
    + \underbrace{\mathcal{L}[q^*] - \mathcal{L}[q_\phi]}_{\text{amortization gap}}

:func:`check_inference_gaps` says cheaply how the per-point guide :math:`q^*` is built (or
why it cannot be); :func:`inference_gaps` fits it by non-amortized SVI and reports both gaps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites
from torch import nn
from torch.distributions import Distribution, Independent, transform_to

from pyro_vae.analysis.common import Fn, Site, check_count, check_x, latent_sites, trace_guide
from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.infer.decomposition import per_point, traces
from pyro_vae.infer.importance import (
    PointEstimateError,
    _max_plate_nesting,
    _rows,
    log_likelihood,
    log_weights,
)
from pyro_vae.infer.objectives import build_objective

__all__ = ["check_inference_gaps", "inference_gaps"]

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
    x = check_x(x)
    with torch.no_grad():
        trace = trace_guide(guide, x[:1], _rows(args, x, 0, 1), kwargs)
    sites = latent_sites(trace)
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
            site = latent_sites(trace_guide(guide, x, args, kwargs))[0][1]
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
    x = check_x(x)
    check_count("steps", steps, minimum=0)
    for name, value in (("num_particles", num_particles), ("eval_particles", eval_particles)):
        check_count(name, value)
    check_count("num_samples", num_samples, minimum=2)
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
