r"""The non-amortized guide of the inference gaps: one free member of q's family per point.

:class:`LocalGuide` turns the distribution an amortized guide gives at its one latent site
into free per-point parameters, sampled in the guide's data plate
(:func:`~pyro_vae.infer.sites.data_plate`); :func:`~pyro_vae.analysis.gaps.inference_gaps`
optimizes them point by point.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import Distribution, Independent, transform_to

from pyro_vae.analysis.common import Site
from pyro_vae.infer.sites import DataPlate

__all__ = ["LocalGuide"]

# distributions whose arg_constraints list alternative parametrizations: the one to free
_PARAMETERS: dict[type, tuple[str, ...]] = {dist.MultivariateNormal: ("loc", "scale_tril")}


class LocalGuide:
    """A non-amortized guide: the amortized guide's family with free parameters per point.

    Built from the distribution the amortized guide gives at its one latent site: each
    parameter becomes an unconstrained tensor (mapped by ``transform_to``) initialized
    at the amortized value, so the optimization starts where the encoder left off. A
    parameter's event dims are those of its constraint (``loc`` of a multivariate Normal:
    1, a low-rank ``cov_factor``: 2), so it is expanded to the batch shape plus those, the
    data dim holding one entry per point even where the amortized guide broadcast it. The
    site is sampled in an unsized plate of the data plate's name and dim (its size is the
    batch's): a plate of the model's, never one the model lacks.
    """

    def __init__(self, site: Site, plate: DataPlate) -> None:
        self.name = site["name"]
        base, self.reinterpreted = _unwrap(site["fn"])
        self.family = type(base)
        self.plate_name, self.plate_dim = plate.name or "data", plate.dim or -1
        pad = max(0, -self.plate_dim - len(site["fn"].batch_shape))
        shape = [1] * pad + list(base.batch_shape)
        self.row = pad + len(site["fn"].batch_shape) + self.plate_dim  # the data dim
        shape[self.row] = plate.size  # one entry per point, even where the guide broadcast
        self.batch_shape = torch.Size(shape)
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
        values = {k: self.transforms[k](u.narrow(self.row, 0, n)) for k, u in self.params.items()}
        d: Any = self.family(**values)  # a Pyro distribution, as the guide's was
        return d.to_event(self.reinterpreted) if self.reinterpreted else d

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Sample the optimized points' z; ``x`` is those points (or a prefix, to probe shapes)."""
        with pyro.plate(self.plate_name, dim=self.plate_dim):
            pyro.sample(self.name, self.distribution(x.shape[0]))  # type: ignore[arg-type]


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
