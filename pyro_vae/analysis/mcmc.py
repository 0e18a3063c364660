r"""The exact posterior by NUTS, beside the guide: what q(z|x) gets wrong, point by point.

- :func:`nuts_posterior`: NUTS draws of every latent site from :math:`p(z|x_n)` for chosen
  points, as ``arviz.InferenceData``; :func:`nuts_transforms`: the bijections it samples in;
- :func:`posterior_samples`: the guide's draws in the same layout;
- :func:`compare_posteriors`: NUTS moments (with MCSE, r̂, ESS) beside the guide's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import biject_to, constraints

from pyro_vae.analysis.common import (
    Fn,
    Site,
    arviz,
    check_count,
    check_x,
    latent_sites,
    point_values,
    traced_guide,
    unscaled,
)
from pyro_vae.infer import sites
from pyro_vae.infer.sites import DataPlate, plate_frame

__all__ = ["compare_posteriors", "nuts_posterior", "nuts_transforms", "posterior_samples"]


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
    x = check_x(x)
    ids = list(range(x.shape[0])) if point_ids is None else list(point_ids)
    if len(ids) != x.shape[0]:
        raise ValueError(f"point_ids must name {x.shape[0]} points, got {len(ids)}")
    check_count("num_samples", num_samples)
    check_count("num_chains", num_chains)
    with torch.no_grad():
        plain, _ = traced_guide(guide, x, args, kwargs)
        dim = -sites.max_plate_nesting(plain) - 1  # left of every plate of the guide
        with pyro.plate("draws", num_samples * num_chains, dim=dim):
            trace, plate = traced_guide(guide, x, args, kwargs)
    draws = {}
    for name, site in latent_sites(trace):
        value = _per_point(site["value"].detach(), site, plate).double().cpu().numpy()
        draws[name] = value.reshape(num_chains, num_samples, *value.shape[1:])  # (C, S, N, ...)
    return _inference_data(draws, ids)


def _per_point(value: torch.Tensor, site: Site, plate: DataPlate, left: int = 1) -> torch.Tensor:
    """A site's draws ``(*left, batch, event)`` as ``(*left, N, *event)``: the data dim first.

    A site whose batch dims end at the data dim (a plate at dim -1) keeps its event dims;
    otherwise (a plate at dim -2, inner plates) the dims right of the data dim are
    flattened into one (:func:`~pyro_vae.analysis.common.point_values`), so every plate
    style gives the same layout."""
    frame = plate_frame(site, plate)
    event = len(site["fn"].event_shape)
    if frame is not None and frame.dim == -1 and value.dim() - left - event >= 1:
        return value
    return point_values(value, site, plate, left)


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
    posteriors jointly. The model's scales (``poutine.scale``, a subsampled plate's ``N/B``)
    are undone: they weigh a training loss, and would temper the posterior. Draws are laid
    out point by point whatever the data plate's dim (:func:`posterior_samples`).
    ``num_chains`` chains run one after another (seeds ``seed``,
    ``seed + 1``, ...) so that r̂ and the ESS can be computed, and are returned as
    ``InferenceData`` laid out as in :func:`posterior_samples`, one variable per latent site
    (``z``, or ``z1``, ``z2``, ... for a hierarchy). Each site is sampled in the unconstrained
    space of :func:`nuts_transforms` (so mixture priors work). ``max_tree_depth`` bounds
    the leapfrog steps per draw (at most 2**depth - 1; Pyro's default 10). It is slow on a
    CPU: each leapfrog step runs the decoder, and Pyro adds its tracing to each, so a
    50-dimensional MNIST posterior takes of the order of a second per draw.
    """
    x = check_x(x)
    ids = list(range(x.shape[0])) if point_ids is None else list(point_ids)
    if len(ids) != x.shape[0]:
        raise ValueError(f"point_ids must name {x.shape[0]} points, got {len(ids)}")
    check_count("num_samples", num_samples)
    check_count("num_chains", num_chains)
    check_count("warmup_steps", warmup_steps, minimum=0)
    chains: dict[str, list[np.ndarray]] = {}
    transforms = nuts_transforms(model, x, *args, **kwargs)
    with torch.no_grad(), poutine.block():
        trace = prune_subsample_sites(poutine.trace(model).get_trace(x, *args, **kwargs))
    plate = sites.data_plate(trace, n=x.shape[0])
    for c in range(num_chains):
        pyro.set_rng_seed(seed + c)
        kernel = pyro.infer.NUTS(
            unscaled(model),
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
            value = _per_point(value.detach(), trace.nodes[name], plate)  # (S, N, ...)
            chains.setdefault(name, []).append(value.double().cpu().numpy())
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
    return {name: _to_unconstrained(name, site["fn"].support) for name, site in latent_sites(trace)}


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
    check_count("q_samples", q_samples, minimum=2)
    az = arviz()
    summary = az.summary(nuts, fmt="xarray")
    with torch.no_grad():
        trace, plate = traced_guide(guide, x, args, kwargs)
    rows: list[dict[str, Any]] = []
    for name, site in latent_sites(trace):
        if name not in summary:
            continue
        q_mean, q_sd, how = _guide_moments(site, plate, q_samples)  # (N, L) each
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


def _guide_moments(
    site: Site, plate: DataPlate, num_samples: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean and sd of a guide site per point and coordinate, ``(N, L)`` each, and how."""
    fn = site["fn"]
    try:
        mean, sd, how = fn.mean, fn.stddev, "exact"
    except NotImplementedError:  # e.g. a flow: no closed-form moments
        draws = fn.sample((num_samples,))  # (S, batch, event)
        mean, sd, how = draws.mean(0), draws.std(0), "sampled"
    shape = fn.batch_shape + fn.event_shape
    mean_np, sd_np = (
        point_values(v.expand(shape), site, plate).double().cpu().numpy() for v in (mean, sd)
    )
    return mean_np, sd_np, how
