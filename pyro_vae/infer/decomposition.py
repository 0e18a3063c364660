r"""The ELBO split into its two terms, read off Pyro traces.

For data points :math:`x_n`,

.. math::

    \mathrm{ELBO}(x_n) = \underbrace{\mathbb{E}_{q(z|x_n)}[\log p(x_n|z)]}_{\texttt{reconstruction}}
        - \underbrace{\mathrm{KL}(q(z|x_n)\,\|\,p(z))}_{\texttt{kl}}

in nats per data point. The guide is traced, the model is replayed against it, and every
site's log density is reduced to one value per data point along the plate over the rows of
``x``. This works for any (model, guide) pair of Pyro programs, not only ones this package
builds; its mean over data points is an estimate of ``-Trace_ELBO().loss / N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

from pyro_vae.guides.posteriors import is_point_mass

__all__ = ["ElboTerms", "analytic_kl_allowed", "elbo_terms", "per_point", "traces"]

# A trace site (pyro.poutine.runtime.Message). Pyro types its "fn" as a bare callable, so
# sites are Any here rather than a cast at every log_prob.
Site = Any


class ElboTerms(dict[str, torch.Tensor]):
    r"""Per-data-point tensors of shape ``(N,)``: ``reconstruction``, ``kl`` and ``elbo``.

    Also ``kl:<site>`` for each latent site and ``reconstruction:<site>`` for each observed
    site. ``kl_method[site]`` is ``"analytic"``, ``"monte-carlo"`` or ``"delta"``. For a
    ``Delta`` guide site (a point estimate, not a density) ``kl:<site>`` is
    :math:`-\log p(z)` at the point (its :math:`\log q` is 0), so ``elbo`` then reads
    reconstruction plus log prior at a point, which is *not* a bound on :math:`\log p(x)`.
    """

    kl_method: dict[str, str]


def traces(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Trace, Trace]:
    """Trace the guide, then the model replayed against the guide's samples.

    Plate subsample sites are pruned, so every remaining ``sample`` site is a random variable.
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def _data_frame_dim(site: Site, n: int, particle_dim: int | None = None) -> int | None:
    """The (negative) dim of the plate over data points.

    The plate named ``data``, else the outermost plate of size ``n`` (the rows of x are the
    outermost batch dimension in a program; an inner plate, over pixels say, may have the
    same size by chance). The particle plate is never the data plate.
    """
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.dim != particle_dim]
    for f in frames:
        if f.name == "data" and f.size == n:
            return int(f.dim)
    sized = [int(f.dim) for f in frames if f.size == n]
    return min(sized) if sized else None


def per_point(
    value: torch.Tensor, site: Site, n: int, particle_dim: int | None = None
) -> torch.Tensor:
    """Reduce a site's batch-shaped log density to ``(N,)``, or ``(K, N)`` with particles.

    Dims other than the data plate (and the particle plate) are summed. A site outside the
    data plate (a global latent) is spread evenly over the ``N`` points, so the totals agree.
    """
    if "mask" in site and site["mask"] is not None and site["mask"] is not True:
        value = value * site["mask"]
    data_dim = _data_frame_dim(site, n, particle_dim)
    ndim = max(value.dim(), -(data_dim or 0), -(particle_dim or 0))
    value = value.reshape((1,) * (ndim - value.dim()) + tuple(value.shape))
    keep = [ndim + d for d in (particle_dim, data_dim) if d is not None]
    rest = [i for i in range(ndim) if i not in keep]
    value = value.permute(*keep, *rest).reshape(*(value.shape[i] for i in keep), -1).sum(-1)
    if data_dim is None:  # (K,) or (): a global site, shared equally by the N points
        return (value / n).unsqueeze(-1).expand(*value.shape, n)
    return value if particle_dim is not None else value.expand(n)


def analytic_kl_allowed(name: str, model_trace: Trace, guide_trace: Trace) -> bool:
    r"""True if every latent the model draws before ``name`` the guide also draws before it.

    Then :math:`p(z_{name} \mid \text{parents})` depends on nothing that q draws from
    ``name``, and :math:`\mathbb{E}_q[\log q - \log p] = \mathbb{E}[\mathrm{KL}(q(z_{name}|\ldots)
    \,\|\, p(z_{name}|\ldots))]` holds site by site, so the closed-form KL may replace the
    Monte Carlo one. In a hierarchy whose guide draws z1 before z2, p(z1|z2) depends on
    the z2 that q(z2|z1) draws from this very z1: not allowed there.
    """
    model_order = _latent_names(model_trace)
    guide_order = _latent_names(guide_trace)
    before_model = set(model_order[: model_order.index(name)])
    before_guide = set(guide_order[: guide_order.index(name)])
    return before_model <= before_guide


def _is_latent(site: Site) -> bool:
    return bool(site["type"] == "sample" and not site["is_observed"])


def _latent_names(trace: Trace) -> list[str]:
    return [name for name, site in trace.nodes.items() if _is_latent(site)]


def _site_kl(
    name: str, model_trace: Trace, guide_trace: Trace, n: int, analytic: bool
) -> tuple[torch.Tensor, str]:
    p_site: Site = model_trace.nodes[name]
    q_site: Site = guide_trace.nodes[name]
    if is_point_mass(q_site["fn"]):  # log q = 0 at its point: "kl" is -log p(z) there
        log_p = p_site["fn"].log_prob(p_site["value"])
        return -per_point(log_p, p_site, n), "delta"
    if analytic and analytic_kl_allowed(name, model_trace, guide_trace):
        try:
            kl = kl_divergence(q_site["fn"], p_site["fn"])
            return per_point(kl, q_site, n), "analytic"
        except NotImplementedError:
            pass
    log_q = q_site["fn"].log_prob(q_site["value"])
    log_p = p_site["fn"].log_prob(p_site["value"])
    return per_point(log_q, q_site, n) - per_point(log_p, p_site, n), "monte-carlo"


def _check_sites(model_trace: Trace, guide_trace: Trace) -> list[str]:
    latent = _latent_names(model_trace)
    guided = [k for k, s in guide_trace.nodes.items() if s["type"] == "sample"]
    if set(latent) != set(guided):
        raise ValueError(
            "the model's latent sites and the guide's sample sites must match: model has "
            f"{sorted(latent)}, guide has {sorted(guided)}"
        )
    return latent


def _one_particle(
    model_trace: Trace, guide_trace: Trace, n: int, analytic: bool
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    terms: dict[str, torch.Tensor] = {}
    methods: dict[str, str] = {}
    site: Site
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample" and site["is_observed"]:
            lp = site["fn"].log_prob(site["value"])
            terms[f"reconstruction:{name}"] = per_point(lp, site, n)
    for name in _check_sites(model_trace, guide_trace):
        terms[f"kl:{name}"], methods[name] = _site_kl(name, model_trace, guide_trace, n, analytic)
    return terms, methods


def elbo_terms(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    *args: Any,
    num_particles: int = 1,
    analytic_kl: bool = True,
    **kwargs: Any,
) -> ElboTerms:
    r"""Per-data-point ELBO, reconstruction and KL, each of shape ``(N,)``, in nats.

    ``reconstruction`` is :math:`\mathbb{E}_q[\log p(x|z)]` summed over observed sites;
    ``kl`` is :math:`\mathrm{KL}(q(z|x)\|p(z))` summed over latent sites, analytic where a
    KL is registered for the (guide, prior) pair and valid for the trace's dependency order,
    Monte Carlo otherwise (``result.kl_method`` says which, per site; ``"delta"`` for a point
    mass, whose ``kl`` is :math:`-\log p(z)` at the point). Expectations are
    averaged over ``num_particles`` draws from the guide. ``model(x, *args, **kwargs)`` and
    ``guide(x, *args, **kwargs)`` may be any Pyro programs with a plate over the rows of x.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty tensor (N, ...), got {_describe(x)}")
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    n = x.shape[0]
    total: dict[str, torch.Tensor] = {}
    methods: dict[str, str] = {}
    for _ in range(num_particles):
        model_trace, guide_trace = traces(model, guide, x, *args, **kwargs)
        terms, methods = _one_particle(model_trace, guide_trace, n, analytic_kl)
        for key, value in terms.items():
            total[key] = total.get(key, 0.0) + value / num_particles  # type: ignore[operator]
    result = ElboTerms(total)
    zero = x.new_zeros(n)
    result["reconstruction"] = sum(
        (v for k, v in total.items() if k.startswith("reconstruction:")), zero
    )
    result["kl"] = sum((v for k, v in total.items() if k.startswith("kl:")), zero)
    result["elbo"] = result["reconstruction"] - result["kl"]
    result.kl_method = methods
    return result


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__
