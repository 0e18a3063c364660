r"""Honest evaluation: the importance-weighted estimate of log p(x).

.. math::

    \log p(x) \;\ge\; \mathcal{L}_k(x) = \mathbb{E}_{z_{1..k} \sim q(z|x)}
        \log \frac{1}{k} \sum_{i=1}^{k} \frac{p(x, z_i)}{q(z_i|x)}

(Burda, Grosse & Salakhutdinov 2015, eq. 8). :math:`\mathcal{L}_1` is the ELBO, and
:math:`\mathcal{L}_k` grows with ``k`` towards :math:`\log p(x)`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from pyro_vae.checks import is_int
from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.infer import sites
from pyro_vae.infer.decomposition import _Particle, traces
from pyro_vae.infer.sites import SiteError

__all__ = ["PointEstimateError", "log_likelihood", "log_weights", "plate_nesting", "rows_of"]


class PointEstimateError(ValueError):
    """The guide has a point-mass (``Delta``) site, so there is no importance sampler."""


def _max_plate_nesting(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> int:
    """The programs' plate nesting (:func:`~pyro_vae.infer.sites.max_plate_nesting`) from
    one plain run; a point-mass guide is refused here."""
    with poutine.block():
        model_trace, guide_trace = traces(model, guide, x, *args, **kwargs)
    _check_densities(guide_trace)
    return sites.max_plate_nesting(model_trace, guide_trace)


def plate_nesting(
    model: Callable[..., Any], guide: Callable[..., Any], x: torch.Tensor, *args: Any, **kwargs: Any
) -> int:
    """How many batch dims the plates of ``model`` and ``guide`` use on ``x`` (one plain run,
    side effects blocked): a particle plate at ``-(nesting + 1)`` is left of all of them.
    A point-mass guide raises :class:`PointEstimateError`."""
    return _max_plate_nesting(model, guide, x, args, kwargs)


def rows_of(args: tuple[Any, ...], x: torch.Tensor, start: int, stop: int) -> tuple[Any, ...]:
    """Rows ``start:stop`` of every tensor in ``args`` with x's N rows; other arguments whole.

    How the estimators pass per-point arguments (e.g. a conditional VAE's labels) along
    with a chunk of ``x``.
    """
    return _rows(args, x, start, stop)


def _check_densities(guide_trace: Any) -> None:
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and is_point_mass(site["fn"]):
            raise PointEstimateError(
                f"the guide's site {name!r} is a point mass (Delta): the importance-weighted "
                "bound needs a guide with a density, and p(x, z) at a point is not an estimate "
                "of p(x). A Delta guide (VAEConfig(guide='delta')) trains a regularized "
                "autoencoder; score it by its reconstruction, or train with a guide that has "
                "a density."
            )


def _check_local(draw: _Particle) -> None:
    """Refuse a site outside the data plate whose density the points would share."""
    if draw.plate.size == 1:
        return
    for trace in (draw.model_trace, draw.guide_trace):
        for name, site in sites.sample_sites(trace):
            if name in draw.from_prior or site["infer"].get("_deterministic"):
                continue
            if name in sites.global_sites(trace, draw.plate):
                raise SiteError(
                    f"site {name!r} is outside the data plate {draw.plate.name!r}: the "
                    f"{draw.plate.size} points share it, so log p(x_n) is not defined point by "
                    "point. Put the site inside the data plate (one copy per point), or score "
                    "the whole batch as one point with pyro.infer.RenyiELBO(alpha=0)."
                )


def log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    num_samples: int,
    *args: Any,
    max_plate_nesting: int | None = None,
    vectorize: bool = True,
    **kwargs: Any,
) -> torch.Tensor:
    r"""Log importance weights :math:`\log p(x_n, z_i) - \log q(z_i|x_n)`, shape ``(K, N)``.

    The ``K`` draws are vectorized with a particle plate left of the programs' plates; with
    ``vectorize=False`` they are drawn one at a time, for programs that do not broadcast
    over an extra batch dimension (e.g. a decoder that reshapes ``z`` to ``(N, L)``).
    Discrete sites marked for enumeration (``config_enumerate``) are summed over their
    support within each weight, :math:`w_i = \sum_y p(x_n, y, z_i^y) / q(z_i^y|x_n, y)`
    (the guide's :math:`q(y|x_n)` is not in it): still unbiased for :math:`p(x_n)`. A model
    latent that the guide does not draw is proposed from its prior and cancels. A site
    outside the data plate (shared by the points) raises :class:`SiteError`.
    """
    nesting = max_plate_nesting
    if nesting is None:
        nesting = _max_plate_nesting(model, guide, x, args, kwargs)
    if not vectorize:
        draws = [_log_weights(model, guide, x, None, args, kwargs, nesting)]
        draws += [
            _log_weights(model, guide, x, None, args, kwargs, nesting)
            for _ in range(num_samples - 1)
        ]
        return torch.cat(draws)
    return _log_weights(model, guide, x, num_samples, args, kwargs, nesting)


def _log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    k: int | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    nesting: int,
) -> torch.Tensor:
    """``k`` vectorized draws' log weights ``(k, N)``, or one draw's ``(1, N)`` (k None)."""
    model_trace, guide_trace = sites.run_traces(
        model, guide, (x, *args), kwargs, nesting=nesting, num_particles=k
    )
    _check_densities(guide_trace)
    n = x.shape[0]
    plate = sites.data_plate(model_trace, guide_trace, n=n, max_plate_nesting=nesting)
    draw = _Particle(model_trace, guide_trace, plate, nesting)
    _check_local(draw)
    lw = draw.log_joint()
    for name, _ in sites.latent_sites(guide_trace):
        if name not in draw.guide_enum:
            lw = lw - draw.lp(name, guide_trace)
    lw = lw.reshape((1,) * max(0, 2 - lw.dim()) + tuple(lw.shape))
    lw = lw.expand(*lw.shape[:-2], k or 1, n)  # (*enumerated, K, N)
    return lw.reshape(-1, k or 1, n).logsumexp(0)  # summed over enumerated values


def log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    *args: Any,
    num_samples: int = 1000,
    batch_size: int | None = None,
    max_elements: int = 2**25,
    progress: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    r"""Per-data-point importance-weighted estimate of :math:`\log p(x)`, shape ``(N,)``.

    The IWAE bound :math:`\mathcal{L}_k` with :math:`k` = ``num_samples`` draws from the
    guide (Burda et al. 2015). Memory is bounded: points go in chunks of ``batch_size`` and
    the ``k`` draws in chunks sized so that ``chunk * batch_size * prod(x.shape[1:])`` stays
    under ``max_elements``; chunks are combined with a running log-sum-exp, so k = 5000 over
    10,000 images works on a GPU. Distribution validation runs on each chunk of points'
    first chunk of draws only (the data are the same in the rest). Positional ``args``
    that are tensors with ``N`` rows (e.g. the labels of a conditional VAE) are per-point
    and go in chunks with ``x``; other arguments are passed whole. A guide with a
    point-mass (``Delta``) site raises :class:`PointEstimateError`: it has no density. ``progress``
    shows a progress bar over the chunks of points.

    Discrete sites marked for enumeration (``config_enumerate``, in the guide or in the
    model only) are summed exactly: for a class :math:`y` enumerated in the guide,
    :math:`\log \hat p(x) = \operatorname{logsumexp}_y [\log p(y) + \log \hat p(x|y)]`
    with each :math:`\hat p(x|y)` importance-weighted over :math:`z \sim q(z|x, y)`. The
    data plate may be sized or not, at any dim, subsampled to the rows of x, masked or
    scaled (scales are loss weights and are not applied); a program that does not
    broadcast over a batch of draws runs them one at a time (with a warning).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty tensor (N, ...), got {x!r:.80}")
    if not is_int(num_samples) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    per_point_size = max(1, math.prod(x.shape[1:]))
    if batch_size is None:
        batch_size = max(1, min(x.shape[0], max_elements // (per_point_size * num_samples), 1000))
    chunk = max(1, min(num_samples, max_elements // (per_point_size * batch_size)))
    with torch.no_grad():
        nesting = _first_chunk_nesting(model, guide, x, args, kwargs, batch_size)
        first = (x[:batch_size], _rows(args, x, 0, batch_size))
        vectorize = _broadcasts(model, guide, *first, kwargs, nesting, min(num_samples, 2))
        starts = range(0, x.shape[0], batch_size)
        bar = tqdm(
            list(zip(starts, x.split(batch_size), strict=True)),
            desc=f"IW bound, k={num_samples}",
            unit="batch",
            disable=not progress,
        )
        out = [
            _iw_bound(
                model,
                guide,
                xb,
                num_samples,
                chunk,
                nesting,
                vectorize,
                _rows(args, x, i, i + len(xb)),
                kwargs,
            )
            for i, xb in bar
        ]
    return torch.cat(out)


def _first_chunk_nesting(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    batch_size: int,
) -> int:
    """The programs' plate nesting, from a run on the first chunk of rows.

    A program that only runs on all rows at once (e.g. a guide with a ``pyro.param`` of
    shape ``(N, L)``, one row per data point) fails here with a message that says so; an
    error that all rows give too is the program's own and propagates unchanged.
    """
    xb, rows = x[:batch_size], _rows(args, x, 0, batch_size)
    try:
        return _max_plate_nesting(model, guide, xb, rows, kwargs)
    except Exception as error:  # any error of the program's; a run on all rows tells which
        if len(xb) == len(x):
            raise
        _max_plate_nesting(model, guide, x, args, kwargs)  # raises the program's own error
        raise ValueError(
            f"the model or guide failed on a chunk of {len(xb)} of the {len(x)} rows of x "
            f"({_first_line(error)}), but runs on all of them. log_likelihood evaluates "
            "points in chunks; a program that only runs on all rows at once (e.g. per-point "
            "parameters of shape (N, ...)) needs batch_size=N."
        ) from error


def _broadcasts(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    xb: torch.Tensor,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    nesting: int,
    k: int,
) -> bool:
    """True if the programs run under a particle plate, so the k draws can be vectorized.

    Otherwise (a warning says so) the draws run one at a time: slower, the same estimate.
    """
    try:
        log_weights(model, guide, xb, k, *args, max_plate_nesting=nesting, **kwargs)
    except (SiteError, PointEstimateError):
        raise
    except Exception as error:  # IndexError, TypeError, ...: whatever a shape mix-up raises
        _runs_one_at_a_time(model, guide, xb, args, kwargs, nesting)
        warnings.warn(
            "the model or guide does not broadcast over a batch dimension of draws "
            f"({_first_line(error)}); the importance samples are drawn one at a time, which is "
            "slower. Take shapes from the data's trailing dims to vectorize the draws.",
            stacklevel=3,
        )
        return False
    return True


def _runs_one_at_a_time(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    xb: torch.Tensor,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    nesting: int,
) -> None:
    """Run one draw without a particle plate: the program's own error propagates (or a
    :class:`SiteError` that names the enumerated sites it cannot broadcast)."""
    log_weights(model, guide, xb, 1, *args, max_plate_nesting=nesting, vectorize=False, **kwargs)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _rows(args: tuple[Any, ...], x: torch.Tensor, start: int, stop: int) -> tuple[Any, ...]:
    """Rows start:stop of every tensor argument with x's N rows; other arguments whole."""
    n = x.shape[0]
    return tuple(
        a[start:stop] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == n else a
        for a in args
    )


def _iw_bound(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    k: int,
    chunk: int,
    nesting: int,
    vectorize: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> torch.Tensor:
    acc = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)  # (N,)
    for start in range(0, k, chunk):
        size = min(chunk, k - start)
        with pyro.validation_enabled(start == 0 and is_validation_enabled()):
            lw = log_weights(
                model,
                guide,
                x,
                size,
                *args,
                max_plate_nesting=nesting,
                vectorize=vectorize,
                **kwargs,
            )  # (size, N)
        acc = torch.logaddexp(acc, lw.logsumexp(0))  # (N,)
    return acc - math.log(k)
