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
from types import MethodType
from typing import Any

import pyro
import torch
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from pyro_vae.analysis.common import (
    Fn,
    check_count,
    check_x,
    discrete_sites,
    latent_sites,
    traced_guide,
    unscaled,
)
from pyro_vae.analysis.localguide import LocalGuide
from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.infer import sites
from pyro_vae.infer.decomposition import traces
from pyro_vae.infer.importance import (
    PointEstimateError,
    log_likelihood,
    log_weights,
    plate_nesting,
    rows_of,
)
from pyro_vae.infer.objectives import build_objective
from pyro_vae.infer.sites import DataPlate

__all__ = ["check_inference_gaps", "inference_gaps"]


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
    several latent sites as in a hierarchy), a guide that is an ``nn.Module`` (or a method
    of one) is copied once per point and all the copy's parameters are optimized on that
    point alone, which frees every member of the family for it. Refused: a point-mass
    (``Delta``) site (:class:`~pyro_vae.infer.importance.PointEstimateError`), a guide
    without latent sites, a discrete latent site (a class y: pass its values, the labels,
    as an argument instead), and a plain-function guide whose parameters cannot be read.
    Cheap: one run of the guide on the first row, so callers check before any slow work.
    """
    x = check_x(x)
    with torch.no_grad():
        trace, _ = traced_guide(guide, x[:1], rows_of(args, x, 0, 1), kwargs)
    found = latent_sites(trace)
    if not found:
        raise ValueError("inference gaps need a guide with at least one latent site, got none")
    for name, site in found:
        if is_point_mass(site["fn"]):
            raise PointEstimateError(
                f"the guide's site {name!r} is a point mass (Delta): it has no ELBO and no "
                "density to importance-sample with, so there are no inference gaps to report"
            )
    discrete = discrete_sites(trace)
    if discrete:
        raise ValueError(
            f"inference gaps are measured on a continuous code: the guide has the discrete "
            f"latent sites {discrete}, which the per-point guide cannot free. Pass their "
            "values as observed arguments (e.g. the labels y of the points, as in the "
            "supervised model), so that the guide draws z alone."
        )
    if len(found) == 1 and LocalGuide.readable(found[0][1]):
        return "per-point parameters"
    if _module_of(guide) is not None:
        return "per-point copies of the guide"
    fn = found[0][1]["fn"]
    raise ValueError(
        f"inference gaps need per-point guide parameters: the guide has sites "
        f"{[s for s, _ in found]} ({type(fn).__name__} at {found[0][0]!r}), whose parameters "
        "cannot be read, and it is a plain function, not an nn.Module or a method of one, whose "
        "parameters could be copied per point. Write the guide as an nn.Module (or a method "
        "of one), or with one latent site of a distribution with named parameters (e.g. "
        "Normal)."
    )


def _module_of(guide: Fn) -> nn.Module | None:
    """The module whose parameters a guide has: the guide itself, or a bound method's owner."""
    owner = guide if isinstance(guide, nn.Module) else getattr(guide, "__self__", None)
    if isinstance(owner, nn.Module) and any(True for _ in owner.parameters()):
        return owner
    return None


def _local_parts(guide: Fn, x: torch.Tensor, args: Any, kwargs: Any, how: str) -> Iterator[_Part]:
    """The non-amortized guides, created one at a time (copies are made lazily)."""
    if how == "per-point parameters":
        with torch.no_grad():
            trace, plate = traced_guide(guide, x, args, kwargs)
        local = LocalGuide(latent_sites(trace)[0][1], plate)
        yield _Part(slice(0, x.shape[0]), local, list(local.params.values()))
        return
    module = _module_of(guide)
    assert module is not None
    for i in range(x.shape[0]):
        copy = deepcopy(module)
        params = [p.requires_grad_() for p in copy.parameters()]
        method: Fn = copy if guide is module else MethodType(guide.__func__, copy)  # type: ignore[attr-defined]
        yield _Part(slice(i, i + 1), method, params)


def _mean_se(values: torch.Tensor) -> dict[str, float]:
    v = values.double()
    se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se}


@dataclass
class _Fit:
    """How the per-point guides are fitted: SVI settings, the particle plate's dim, and the
    model's latent sites that the guide does not draw (proposed from their prior)."""

    steps: int
    lr: float
    num_particles: int
    dim: int
    analytic: bool
    from_prior: list[str]


def _fit(model: Fn, part: _Part, x: torch.Tensor, args: Any, kwargs: Any, fit: _Fit) -> None:
    r"""Adam on the part's parameters alone, the learning rate decayed from lr to 0 on a cosine.

    The ELBO is that of the unscaled program: a scale (``poutine.scale``, a subsampled
    plate's ``N/B``) weighs a training loss and is not part of :math:`\log p(x_n)`."""
    particles = pyro.plate("gap_particles", fit.num_particles, dim=fit.dim)  # vectorized draws
    objective: Any = build_objective("elbo-analytic" if fit.analytic else "elbo")
    # a site the guide does not draw (an obs_mask's x_unobserved) is drawn from its prior
    # and cancels: hidden from the ELBO's traces, it still draws
    target = pyro.poutine.block(unscaled(model), hide=fit.from_prior)
    opt = torch.optim.Adam(part.params, lr=fit.lr)
    scale = x.shape[0] * fit.num_particles
    for step in range(fit.steps):
        for group in opt.param_groups:  # cosine decay to 0: the last steps average the noise out
            group["lr"] = fit.lr * 0.5 * (1 + math.cos(math.pi * step / fit.steps))
        loss = objective.differentiable_loss(
            particles(target), particles(part.guide), x, *args, **kwargs
        )
        # not the model's; a copied module's own model parameters are unused
        grads = torch.autograd.grad(loss / scale, part.params, allow_unused=True)
        for p, g in zip(part.params, grads, strict=True):
            p.grad = g
        opt.step()


def _log_density(trace: Any, plate: DataPlate, nesting: int, skip: set[str]) -> torch.Tensor:
    """The sum over a trace's sample sites but ``skip`` of their log densities, ``(K, N)``."""
    total: Any = 0.0
    for name, site in sites.sample_sites(trace):
        if name not in skip:
            total = total + sites.per_point(site, plate, max_plate_nesting=nesting)
    return total  # type: ignore[no-any-return]


def _mis_log_px(
    model: Fn,
    guides: tuple[Fn, Fn],
    x: torch.Tensor,
    args: Any,
    kwargs: Any,
    num_samples: int,
    nesting: int,
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
    The traces are read by :mod:`pyro_vae.infer.sites` (the draws in its particle plate);
    a model latent that the guides do not draw is proposed from its prior and cancels.
    """
    n = x.shape[0]
    chunk = max(1, max_elements // (max(1, math.prod(x.shape[1:])) * n))
    acc = x.new_full((n,), -math.inf)
    counts = (num_samples // 2, num_samples - num_samples // 2)
    for (source, other), k in zip((guides, guides[::-1]), counts, strict=True):
        for start in range(0, k, chunk):
            size = min(chunk, k - start)
            model_trace, trace = sites.run_traces(
                model,
                source,
                (x, *args),
                kwargs,
                nesting=nesting,
                num_particles=size,
                enumerate=False,
            )
            with pyro.plate(sites.PARTICLE_PLATE, size, dim=-nesting - 1):
                replayed = _replayed(other, trace, x, args, kwargs)
            plate = sites.data_plate(model_trace, trace, n=n, max_plate_nesting=nesting)
            guided = {k for k, _ in sites.sample_sites(trace)}
            prior = {k for k, _ in sites.latent_sites(model_trace) if k not in guided}
            log_q = torch.logaddexp(
                _log_density(trace, plate, nesting, set()),
                _log_density(replayed, plate, nesting, set()),
            )
            lw = _log_density(model_trace, plate, nesting, prior) - (log_q - math.log(2))
            acc = torch.logaddexp(acc, lw.logsumexp(0))
    return acc - math.log(num_samples)


def _replayed(guide: Fn, trace: Any, x: torch.Tensor, args: Any, kwargs: Any) -> Any:
    """``guide`` replayed against ``trace`` (scored at its values), subsample sites pruned."""
    replayed = pyro.poutine.trace(pyro.poutine.replay(guide, trace=trace))
    return prune_subsample_sites(replayed.get_trace(x, *args, **kwargs))


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
    with its standard error over points. The plate over the rows of ``x`` may be in any
    style (:mod:`pyro_vae.infer.sites`); scales are loss weights and are undone, so every
    figure is that of the unscaled program.
    """
    x = check_x(x)
    check_count("steps", steps, minimum=0)
    for name, value in (("num_particles", num_particles), ("eval_particles", eval_particles)):
        check_count(name, value)
    check_count("num_samples", num_samples, minimum=2)
    if not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    how = check_inference_gaps(guide, x, *args, **kwargs)
    nesting = plate_nesting(model, guide, x, *args, **kwargs)
    with torch.no_grad(), pyro.poutine.block():
        model_trace, guide_trace = traces(model, guide, x, *args, **kwargs)
    guided = {k for k, _ in sites.sample_sites(guide_trace)}
    from_prior = [k for k, _ in sites.latent_sites(model_trace) if k not in guided]
    fit = _Fit(steps, lr, num_particles, -nesting - 1, how == "per-point parameters", from_prior)
    optimized = x.new_empty(x.shape[0])
    log_px = x.new_empty(x.shape[0])
    store = pyro.get_param_store()
    # the same params inside; whatever the copies register (the guide's name) is dropped after
    with store.scope(store.get_state()):
        for part in _local_parts(guide, x, args, kwargs, how):
            xr, ar = x[part.rows], rows_of(args, x, part.rows.start, part.rows.stop)
            _fit(model, part, xr, ar, kwargs, fit)
            with torch.no_grad():
                lw = log_weights(model, part.guide, xr, eval_particles, *ar, **kwargs)
                optimized[part.rows] = lw.mean(0)  # the ELBO: mean log weight (Monte Carlo KL)
                pair = (guide, part.guide)
                log_px[part.rows] = _mis_log_px(model, pair, xr, ar, kwargs, num_samples, nesting)
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
