r"""Plates and sites read from Pyro traces: the one rule every estimator and diagnostic uses.

An estimator of this package reports one value per data point :math:`x_n` (a row of
``x``). It reads that value off Pyro traces of the (model, guide) pair: each sample site's
log density has a batch shape made of the program's plates, and the *data plate* is the
plate whose elements are the rows of ``x``. Everything here answers, for any legal Pyro
program, the questions the estimators ask of a trace:

* :func:`data_plate`: which plate is the data plate, its dim and its size. It is read from
  the plate frames of the sites (``site["cond_indep_stack"]``: ``frame.name``,
  ``frame.dim``, ``frame.size``), never from a guess about ``x.shape``. An *unsized* plate
  (``pyro.plate("data")``) has ``frame.size == -1``; Pyro infers its size from the batch
  shape of the first sample site, and so does :func:`plate_size`.
* :func:`per_point`: a site's log density (or any elementwise term of it) reduced to one
  value per data point, summing every dim but the data dim (and the particle and
  enumeration dims to its left, which are kept).
* :func:`per_unit`: an elementwise ``batch + event`` tensor of a latent site reduced to
  ``(N, units)``, one column per coordinate (for per-dimension diagnostics).
* :func:`latent_sites`, :func:`observed_sites`, :func:`enumerated_sites`: the sites by role.
* :func:`run_traces`: the guide traced and the model replayed against it, with ``k``
  vectorized particles in a plate to the left of every plate of the program (as Pyro's
  ``Trace_ELBO(vectorize_particles=True)`` does, so an unsized data plate keeps its size)
  and the discrete sites marked ``infer={"enumerate": "parallel"}`` (``config_enumerate``)
  enumerated in dims to the left of the particle dim (as ``TraceEnum_ELBO`` does).

Densities are those of the *unscaled* program: a site's ``mask`` (``poutine.mask``,
``obs_mask``, ``.mask()``) is applied, its ``scale`` (``poutine.scale``, the ``N/B`` of a
subsampled plate) is not. A scale weighs a term of a training loss; it is not part of
:math:`\log p(x_n)`.

The layout of every reduced tensor is ``(*enumeration dims, K, N)``: ``K`` particles (1
when they are drawn one at a time) and ``N`` data points, with the enumeration dims, when
any site is enumerated, broadcast on the left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

__all__ = [
    "PARTICLE_PLATE",
    "DataPlate",
    "SiteError",
    "data_plate",
    "enumerated_sites",
    "global_sites",
    "is_enumerated",
    "latent_sites",
    "log_density",
    "max_plate_nesting",
    "observed_sites",
    "per_point",
    "per_unit",
    "plate_frame",
    "plate_size",
    "run_traces",
    "sample_sites",
]

#: The name of the plate of vectorized particles that :func:`run_traces` adds.
PARTICLE_PLATE = "iw_particles"
# particle plates of Pyro's own ELBOs and of this package: never the data plate
_PARTICLE_NAMES = frozenset({PARTICLE_PLATE, "num_particles_vectorized"})

# A trace site (pyro.poutine.runtime.Message); Pyro types its "fn" as a bare callable.
Site = Any
Fn = Callable[..., Any]


class SiteError(ValueError):
    """A program that an estimator cannot give per-point values for; the message says why."""


@dataclass(frozen=True)
class DataPlate:
    """The plate over the rows of ``x``: its ``name``, (negative) batch ``dim`` and ``size``.

    ``size`` is the number of data points in the trace (the subsample size of a subsampled
    plate). ``name`` and ``dim`` are None for a program with no plate, which is only
    accepted for a single data point.
    """

    name: str | None
    dim: int | None
    size: int


def sample_sites(trace: Trace) -> list[tuple[str, Site]]:
    """``(name, site)`` of every sample site, in program order (subsample sites pruned)."""
    return [
        (k, s) for k, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
    ]


def latent_sites(trace: Trace) -> list[tuple[str, Site]]:
    """The latent sample sites: not observed (``obs=None``), in program order."""
    return [(k, s) for k, s in sample_sites(trace) if not s["is_observed"]]


def observed_sites(trace: Trace) -> list[tuple[str, Site]]:
    """The observed sample sites (``obs=...``, ``pyro.factor``, ``pyro.deterministic``)."""
    return [(k, s) for k, s in sample_sites(trace) if s["is_observed"]]


def is_enumerated(site: Site) -> bool:
    """True for a site whose value is its enumerated support (``poutine.enum`` ran on it)."""
    return site["infer"].get("_enumerate_dim") is not None


def enumerated_sites(trace: Trace) -> list[tuple[str, Site]]:
    """The sites that :func:`run_traces` enumerated, in program order."""
    return [(k, s) for k, s in latent_sites(trace) if is_enumerated(s)]


def _frames(site: Site, nesting: int | None) -> list[Any]:
    """The site's vectorized plate frames of the program (not particles or enumeration)."""
    return [
        f
        for f in site["cond_indep_stack"]
        if f.vectorized
        and f.dim is not None
        and (f.name not in _PARTICLE_NAMES if nesting is None else f.dim >= -nesting)
    ]


def max_plate_nesting(*traces: Trace) -> int:
    """The number of batch dims the programs' plates use: ``max(-frame.dim)``, 0 if none."""
    dims = [-int(f.dim) for tr in traces for _, s in sample_sites(tr) for f in _frames(s, None)]
    return max(dims, default=0)


def plate_size(frame: Any, site: Site) -> int:
    """The size of a plate at one site: ``frame.size``, or, for an unsized plate, the site's
    batch size at ``frame.dim`` (1 if the batch shape does not reach it), as Pyro infers it."""
    if frame.size != -1:
        return int(frame.size)
    shape = site["fn"].batch_shape
    return int(shape[frame.dim]) if len(shape) >= -frame.dim else 1


def _sizes(sites: Iterable[Site], nesting: int | None) -> dict[str, tuple[int, int]]:
    """``{plate name: (dim, size)}`` over ``sites`` (an unsized plate: its largest size)."""
    found: dict[str, tuple[int, int]] = {}
    for site in sites:
        for f in _frames(site, nesting):
            size = plate_size(f, site)
            found[f.name] = (int(f.dim), max(size, found.get(f.name, (0, 0))[1]))
    return found


def data_plate(
    *traces: Trace, n: int | None = None, max_plate_nesting: int | None = None
) -> DataPlate:
    """The plate over the data points of a model trace (then its guide's, if given).

    The candidates are the plates that enclose every observed site but the
    ``pyro.deterministic`` ones (every plate when the model observes nothing, or nothing in
    one common plate); with ``n`` (the rows of ``x``), only those of size ``n``. Of these,
    the plate named ``"data"``, else the outermost (leftmost dim): an inner plate, over
    pixels say, may have the size of the batch by chance. Plates at dims left of
    ``max_plate_nesting`` (particles, enumeration) are never the data plate; without it,
    Pyro's and this package's particle plates are skipped by name. Raises :class:`SiteError`
    when no plate has ``n`` elements.
    """
    all_sites = [s for tr in traces for _, s in sample_sites(tr)]
    sizes = _sizes(all_sites, max_plate_nesting)
    observed = [s for _, s in observed_sites(traces[0]) if not s["infer"].get("_deterministic")]
    common: set[str] | None = None
    for site in observed:
        names = {f.name for f in _frames(site, max_plate_nesting)}
        common = names if common is None else common & names
    candidates = sorted(common or sizes, key=lambda name: sizes[name][0])
    if n is not None:
        candidates = [c for c in candidates if sizes[c][1] == n]
    if not sizes and n in (None, 1):  # no plate at all: one data point
        return DataPlate(None, None, 1)
    if not candidates:
        raise SiteError(_no_plate_message(sizes, n))
    name = "data" if "data" in candidates else candidates[0]
    return DataPlate(name, sizes[name][0], sizes[name][1])


def _no_plate_message(sizes: dict[str, tuple[int, int]], n: int | None) -> str:
    plates = ", ".join(f"{k!r} (dim {d}, size {s})" for k, (d, s) in sizes.items()) or "none"
    return (
        f"no plate of the program has one element per row of x ({n} rows); its plates: "
        f"{plates}. Put every per-point site inside a plate over the rows, "
        "`with pyro.plate('data', len(x)):` (or `pyro.plate('data')`, sized by Pyro); a plate "
        "that subsamples the rows of x inside the program gives values for some rows only: "
        "pass the batch's rows instead."
    )


def plate_frame(site: Site, plate: DataPlate) -> Any:
    """The site's frame of the data ``plate`` (``frame.dim``, ``frame.size``), or None for a
    site outside it."""
    return _frame_named(site, plate.name)


def _frame_named(site: Site, name: str | None) -> Any:
    return next((f for f in site["cond_indep_stack"] if f.name == name and f.vectorized), None)


def global_sites(trace: Trace, plate: DataPlate) -> list[str]:
    """Sample sites outside the data plate with a log density that is not masked out."""
    return [
        k
        for k, s in sample_sites(trace)
        if _frame_named(s, plate.name) is None and s["mask"] is not False
    ]


def log_density(site: Site) -> torch.Tensor:
    """The site's elementwise log density ``fn.log_prob(value)``, masked, not scaled."""
    return _masked(site["fn"].log_prob(site["value"]), site)


def _masked(value: torch.Tensor, site: Site) -> torch.Tensor:
    mask = site["mask"]
    if mask is None or mask is True:
        return value
    if mask is False:
        return torch.zeros_like(value)
    return value.masked_fill(~mask, 0.0) if mask.dtype == torch.bool else value * mask


def per_point(
    site: Site,
    plate: DataPlate,
    value: torch.Tensor | None = None,
    *,
    max_plate_nesting: int | None = None,
) -> torch.Tensor:
    """Reduce a site's batch-shaped ``value`` (default: :func:`log_density`) to each point's.

    Every plate dim of the program (the ``max_plate_nesting`` rightmost batch dims) but the
    data dim is summed; dims to their left (particles, enumeration) are kept, so the result
    is ``(*left, N)``, or ``(N,)`` with ``max_plate_nesting=None`` (every dim but the data dim
    summed). The site's mask is applied to a given ``value`` too. A site outside the data
    plate (a global one) is shared equally by the ``N`` points: each gets ``1/N`` of it, so
    the sum over points is the site's total.
    """
    value = log_density(site) if value is None else _masked(value, site)
    frame = _frame_named(site, plate.name)
    inner = -int(frame.dim) if frame is not None else 0
    nest = max(value.dim(), inner) if max_plate_nesting is None else max_plate_nesting
    if inner > nest:
        raise SiteError(
            f"site {site['name']!r} is in plate {plate.name!r} at dim {frame.dim}, left of "
            f"the {nest} plate dims given (max_plate_nesting={nest}): pass the programs' nesting"
        )
    rank = max(value.dim(), nest)
    value = value.reshape((1,) * (rank - value.dim()) + tuple(value.shape))
    left = tuple(value.shape[: rank - nest])
    if frame is None:
        total = value.reshape(*left, -1).sum(-1)
        return (total / plate.size).unsqueeze(-1).expand(*left, plate.size)
    moved = value.movedim(rank + int(frame.dim), -1)  # (*left, other plates..., N or 1)
    total = moved.reshape(*left, -1, moved.shape[-1]).sum(-2)
    return total.expand(*left, plate.size)


def per_unit(site: Site, plate: DataPlate, value: torch.Tensor) -> torch.Tensor:
    """Reduce an elementwise ``batch + event`` tensor of a site to ``(N, units)``.

    ``units`` are the event coordinates of the site's distribution (a latent's dimensions);
    batch dims other than the data dim (inner plates) are summed. For per-dimension
    statistics of a latent site (KL per dimension, active units). The site must be in the
    data plate (:class:`SiteError` otherwise); no particle dims.
    """
    frame = _frame_named(site, plate.name)
    if frame is None:
        raise SiteError(
            f"latent site {site['name']!r} is not inside the data plate {plate.name!r}: it has "
            "no value per data point"
        )
    event = len(site["fn"].event_shape)
    batch = value.dim() - event
    if batch < -frame.dim:  # the batch shape does not reach the data dim: one copy
        value = value.reshape((1,) * (-frame.dim - batch) + tuple(value.shape))
        batch = -frame.dim
    value = value.movedim(batch + int(frame.dim), 0)  # (N or 1, other batch..., event...)
    value = value.reshape(value.shape[0], -1, *value.shape[batch:]).sum(1)
    return value.reshape(value.shape[0], -1).expand(plate.size, -1)


def _check_enumeration(trace: Trace) -> None:
    for name, site in latent_sites(trace):
        how = site["infer"].get("enumerate")
        if how not in (None, "parallel"):
            raise SiteError(
                f"site {name!r} asks for {how!r} enumeration; the estimators enumerate in "
                "parallel only: mark it with config_enumerate(default='parallel') (the "
                "program must then broadcast over a batch dim left of its plates), or drop "
                "the mark to sample it"
            )


def _run(
    model: Fn,
    guide: Fn,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    nesting: int,
    num_particles: int | None,
    enumerate: bool,
) -> tuple[Trace, Trace]:
    particle_dim = -nesting - 1
    if enumerate:
        guide = EnumMessenger(first_available_dim=particle_dim - 1)(guide)
        model = EnumMessenger()(model)  # continues the allocation after the guide's dims
    plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=particle_dim)
    with plate if num_particles is not None else nullcontext():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        replayed = poutine.replay(model, trace=guide_trace)
        model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    if enumerate:
        _check_enumeration(guide_trace)
        _check_enumeration(model_trace)
    return model_trace, guide_trace


def _name_enumerated_sites(
    model: Fn,
    guide: Fn,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    nesting: int,
    num_particles: int | None,
    error: Exception,
) -> None:
    """Raise :class:`SiteError` if the programs run without enumeration, naming the sites
    marked for it; return (for the caller to re-raise ``error``) if they fail anyway."""
    try:
        with poutine.block():
            traces = _run(model, guide, args, kwargs, nesting, num_particles, False)
    except Exception:
        return
    marked = sorted(
        {k for tr in traces for k, s in latent_sites(tr) if s["infer"].get("enumerate")}
    )
    if marked:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SiteError(
            f"the program fails with the sites {marked} enumerated in parallel ({first}), and "
            "runs with them sampled: an enumerated site's value holds its support in a batch "
            "dim left of the plates, and the program must broadcast over it (as Pyro's "
            "TraceEnum_ELBO needs too). Make it broadcast, or drop the enumerate mark "
            "(config_enumerate) to sample the site."
        ) from error


def run_traces(
    model: Fn,
    guide: Fn,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    nesting: int,
    num_particles: int | None = None,
    enumerate: bool = True,
) -> tuple[Trace, Trace]:
    """The guide traced, and the model replayed against it; subsample sites pruned.

    ``num_particles`` draws are vectorized in :data:`PARTICLE_PLATE` at dim
    ``-(nesting + 1)``, left of every plate of the programs (``nesting`` is their
    :func:`max_plate_nesting`); with None the particle dim is absent (one draw). With
    ``enumerate``, each discrete site marked ``infer={"enumerate": "parallel"}`` is
    enumerated at dims from ``-(nesting + 2)`` leftwards, the guide's first, then the
    model's own (sites the guide does not sample), as in Pyro's ``TraceEnum_ELBO``.
    """
    try:
        model_trace, guide_trace = _run(
            model, guide, args, kwargs, nesting, num_particles, enumerate
        )
    except SiteError:
        raise
    except Exception as error:
        if not enumerate:
            raise
        _name_enumerated_sites(model, guide, args, kwargs, nesting, num_particles, error)
        raise
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
