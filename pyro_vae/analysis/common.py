r"""What every diagnostic needs: argument checks, rows in chunks, the guide's latent sites.

The diagnostics (:mod:`~pyro_vae.analysis.latent`, :mod:`~pyro_vae.analysis.psis`,
:mod:`~pyro_vae.analysis.gaps`, :mod:`~pyro_vae.analysis.mcmc`) take any Pyro (model,
guide) pair whose sites live in a plate ``"data"`` over the rows of ``x`` (the layout of
:mod:`pyro_vae.infer.decomposition`). Further positional arguments are passed to both
programs; those that are tensors with ``N`` rows (the labels ``y`` of a conditional VAE)
are per point and go in chunks with ``x``, as in :func:`pyro_vae.log_likelihood`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites

from pyro_vae.checks import is_int
from pyro_vae.infer.importance import _rows

__all__ = [
    "Fn",
    "Site",
    "arviz",
    "check_count",
    "check_x",
    "chunks",
    "data_dim",
    "latent_sites",
    "per_unit",
    "trace_guide",
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


def check_x(x: object) -> torch.Tensor:
    """``x`` itself if it is a non-empty tensor ``(N, ...)``, else a ValueError naming ``x``."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty tensor (N, ...), got {type(x).__name__}")
    return x


def check_count(name: str, value: object, minimum: int = 1) -> None:
    """Refuse a ``value`` that is not an int (``bool`` excluded) of at least ``minimum``."""
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def chunks(
    x: torch.Tensor, args: tuple[Any, ...], size: int
) -> Iterator[tuple[torch.Tensor, tuple[Any, ...]]]:
    """Rows of ``x`` in chunks of ``size``, each with its rows of the per-point ``args``."""
    for start in range(0, x.shape[0], size):
        yield x[start : start + size], _rows(args, x, start, start + size)


def trace_guide(guide: Fn, x: torch.Tensor, args: Any, kwargs: Any) -> Any:
    """The guide's trace on ``x`` without plate subsample sites."""
    return prune_subsample_sites(poutine.trace(guide).get_trace(x, *args, **kwargs))


def latent_sites(trace: Any) -> list[tuple[str, Site]]:
    """``(name, site)`` of each sample site of ``trace`` that is not observed, in trace order."""
    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    ]


def data_dim(site: Site) -> int | None:
    """The (negative) batch dim of the plate named ``data`` (or the only plate), or None."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized]
    named = [f for f in frames if f.name == "data"]
    frame = named[0] if named else (frames[0] if len(frames) == 1 else None)
    return None if frame is None else int(frame.dim)


def per_unit(value: torch.Tensor, site: Site) -> torch.Tensor:
    """Sum an elementwise ``batch + event`` tensor to ``(N, units)``: units = event coords."""
    fn = site["fn"]
    event = len(fn.event_shape)
    batch = value.dim() - event
    dim = data_dim(site)
    if dim is None:
        raise ValueError(f"latent site {site['name']!r} is not inside the data plate")
    value = value.movedim(batch + dim, 0)  # (N, other batch..., event...)
    value = value.reshape(value.shape[0], -1, *value.shape[batch:])  # (N, B', event...)
    return value.sum(1).reshape(value.shape[0], -1)  # (N, units)
