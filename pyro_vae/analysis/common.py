r"""What every diagnostic needs: argument checks, rows in chunks, the guide's latent sites.

The diagnostics (:mod:`~pyro_vae.analysis.latent`, :mod:`~pyro_vae.analysis.psis`,
:mod:`~pyro_vae.analysis.gaps`, :mod:`~pyro_vae.analysis.mcmc`) take any Pyro (model,
guide) pair with a plate over the rows of ``x``, written in any style Pyro accepts: sized
or unsized, at any dim, subsampled to the rows of ``x``, masked or scaled. The data plate
and each site's values per point are read by the one rule of
:mod:`pyro_vae.infer.sites` (:func:`~pyro_vae.infer.sites.data_plate`,
:func:`~pyro_vae.infer.sites.per_unit`). Further positional arguments are passed to both
programs; those that are tensors with ``N`` rows (the labels ``y`` of a conditional VAE)
are per point and go in chunks with ``x``, as in :func:`pyro_vae.log_likelihood`.

The latent statistics (KL per coordinate, active units, mutual information) are about the
continuous code :math:`z`: a discrete latent site of the guide (a class :math:`y`, whether
sampled or enumerated) is not a latent coordinate and is left out of them
(:func:`continuous_sites`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from pyro_vae.checks import is_int
from pyro_vae.infer.importance import rows_of
from pyro_vae.infer.sites import DataPlate, SiteError, data_plate, latent_sites, plate_frame

__all__ = [
    "Fn",
    "Site",
    "arviz",
    "check_count",
    "check_x",
    "chunks",
    "continuous_sites",
    "discrete_sites",
    "is_discrete",
    "latent_sites",
    "point_values",
    "trace_guide",
    "traced_guide",
    "unscaled",
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
        yield x[start : start + size], rows_of(args, x, start, start + size)


def trace_guide(guide: Fn, x: torch.Tensor, args: Any, kwargs: Any) -> Any:
    """The guide's trace on ``x`` without plate subsample sites."""
    return prune_subsample_sites(poutine.trace(guide).get_trace(x, *args, **kwargs))


def traced_guide(guide: Fn, x: torch.Tensor, args: Any, kwargs: Any) -> tuple[Any, DataPlate]:
    """The guide's trace on ``x`` and its data plate (:func:`~pyro_vae.infer.sites.data_plate`
    with ``n`` the rows of ``x``; :class:`~pyro_vae.infer.sites.SiteError` if none)."""
    trace = trace_guide(guide, x, args, kwargs)
    return trace, data_plate(trace, n=x.shape[0])


def is_discrete(site: Site) -> bool:
    """True for a site with a discrete support (a class label) or an enumerated one."""
    support = getattr(site["fn"], "support", None)
    return (
        bool(getattr(support, "is_discrete", False))
        or site["infer"].get("_enumerate_dim") is not None
    )


def continuous_sites(trace: Any) -> list[tuple[str, Site]]:
    """The latent sites with a continuous support: the code z the latent statistics are about."""
    return [(k, s) for k, s in latent_sites(trace) if not is_discrete(s)]


def discrete_sites(trace: Any) -> list[str]:
    """The names of the latent sites with a discrete support (left out of latent statistics)."""
    return [k for k, s in latent_sites(trace) if is_discrete(s)]


def point_values(value: torch.Tensor, site: Site, plate: DataPlate, left: int = 0) -> torch.Tensor:
    """A site's ``(*left, batch, event)`` values laid out ``(*left, N, units)``, not summed.

    The data dim (read off the site's frame of the data ``plate``) goes first after the
    ``left`` dims (draws); every other batch dim (an inner plate, or a dim of size 1 left
    by a plate at dim -2) and the event dims are flattened into ``units``. A site outside
    the data plate has no value per point: :class:`~pyro_vae.infer.sites.SiteError`.
    """
    frame = plate_frame(site, plate)
    if frame is None:
        raise SiteError(
            f"latent site {site['name']!r} is not inside the data plate {plate.name!r}: it has "
            "no value per data point; put it inside the plate over the rows of x"
        )
    event = len(site["fn"].event_shape)
    batch = value.dim() - left - event
    if batch < -frame.dim:  # the batch does not reach the data dim: one copy for every point
        shape = value.shape
        value = value.reshape(*shape[:left], *(1,) * (-frame.dim - batch), *shape[left:])
        batch = -frame.dim
    value = value.movedim(left + batch + int(frame.dim), left)  # (*left, N or 1, rest...)
    value = value.reshape(*value.shape[: left + 1], -1)
    return value.expand(*value.shape[:left], plate.size, value.shape[-1])


class _Unscaled(Messenger):
    """Sets every site's ``scale`` to 1, after the program's own plates and scales ran."""

    def _process_message(self, msg: Any) -> None:
        msg["scale"] = 1.0


def unscaled(fn: Fn) -> Fn:
    r"""``fn`` with every scale undone (``poutine.scale``, a subsampled plate's ``N/B``).

    A scale weighs a term of a training loss; the diagnostics measure the densities of the
    program, :math:`\log p(x_n, z)` and :math:`\log q(z|x_n)`, as
    :mod:`pyro_vae.infer.sites` reads them. Wrapped outside the program, so it sees each
    message after the program's own handlers.
    """
    return _Unscaled()(fn)  # type: ignore[no-any-return]
