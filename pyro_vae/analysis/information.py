r"""The mutual information :math:`I_q(x; z)` between the data and the code under the guide.

:func:`mutual_information` (Hoffman & Johnson 2016), with the aggregate posterior
evaluated exactly over the rows of ``x``. The (model, guide) pairs and their arguments are
as in :mod:`pyro_vae.analysis.common`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Distribution

from pyro_vae.analysis.common import (
    Fn,
    check_count,
    check_x,
    chunks,
    discrete_sites,
    latent_sites,
    traced_guide,
)
from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.infer.importance import PointEstimateError
from pyro_vae.infer.sites import plate_frame

__all__ = ["MutualInformation", "mutual_information"]


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
    Needs a guide with one continuous latent site inside the data plate, at any dim (the
    result says why otherwise: with a discrete class y beside z, q(z|x) is a mixture); a
    point-mass (``Delta``) guide has no density, and
    :class:`~pyro_vae.infer.importance.PointEstimateError` is raised.
    """
    x = check_x(x)
    n = x.shape[0]
    if num_samples is None:
        num_samples = max(1, math.ceil(10_000 / n))
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        check_count(name, value)
    check_count("max_elements", max_elements)
    with torch.no_grad():
        fns = []
        for xb, rows in chunks(x, args, batch_size):
            fn, reason = _single_site_fn(guide, xb, rows, kwargs)
            if fn is None:
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


def _single_site_fn(
    guide: Fn, xb: torch.Tensor, args: Any, kwargs: Any
) -> tuple[Distribution | None, str | None]:
    """The distribution of the guide's one latent site as one event per point, batch shape
    ``(B,)`` (its batch dims right of the data dim reinterpreted as event dims), or None
    and the reason."""
    trace, plate = traced_guide(guide, xb, args, kwargs)
    latent = latent_sites(trace)
    for name, site in latent:
        if is_point_mass(site["fn"]):
            raise PointEstimateError(
                f"the guide's site {name!r} is a point mass (Delta): q(z|x) has no density, so "
                "the mutual information I(x; z) under q is not defined (for a deterministic "
                "encoder it is infinite). Use a guide family with a density."
            )
    if len(latent) != 1 or discrete_sites(trace):
        return None, (
            f"needs a guide with one continuous latent site in the data plate; it has "
            f"{[k for k, _ in latent]}: with a discrete class y, q(z|x) is a mixture over y "
            "and with several sites a joint, whose density this estimator does not evaluate"
        )
    name, site = latent[0]
    frame = plate_frame(site, plate)
    fn = site["fn"]
    if frame is None or len(fn.batch_shape) < -frame.dim:
        return None, f"needs the latent site {name!r} inside the data plate {plate.name!r}"
    inner = -int(frame.dim) - 1  # batch dims right of the data dim
    fn = fn.to_event(inner) if inner else fn
    if tuple(fn.batch_shape) != (xb.shape[0],):  # pragma: no cover - a left dim, not a plate
        return None, f"the latent site {name!r} has batch dims left of the data plate"
    return fn, None
