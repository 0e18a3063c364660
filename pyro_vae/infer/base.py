r"""What every objective shares: the registry, the base class and the trace arithmetic.

An objective is a Pyro ELBO class whose one estimator is ``Objective.differentiable_loss``:
``loss`` is its value, ``loss_and_grads`` (what ``pyro.infer.SVI.step`` calls) is its
backward pass, and ``objective(model, guide)`` is an ``nn.Module`` whose ``forward`` is it
(Pyro's ``ELBOModule``). So the three routes train the same gradient and each sets
``last_terms``. A site marked for enumeration (``config_enumerate``) is refused: these
estimators sample every site, and a silently sampled discrete site is not what was asked
(``elbo-enum``, :mod:`~pyro_vae.infer.enumerated`, sums it instead).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pyro.infer
import torch
from pyro.ops.provenance import detach_provenance
from pyro.poutine.trace_struct import Trace

from pyro_vae.infer.sites import latent_sites
from pyro_vae.registry import Registry

__all__ = [
    "OBJECTIVES",
    "Objective",
    "QuietGuess",
    "as_tensor",
    "detached",
    "mean_of_estimates",
    "refuse_enumeration",
    "trace_terms",
    "with_gradient_of",
]

OBJECTIVES: Registry[pyro.infer.ELBO] = Registry("objective")

Fn = Callable[..., Any]
Terms = dict[str, torch.Tensor]


def as_tensor(value: Any) -> torch.Tensor:
    """``value`` as a tensor; a tensor passes through untouched (a recording stays exact)."""
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def mean_of_estimates(
    elbo: Any,
    bound: Callable[[Trace, Trace], tuple[Any, Any]],
    model: Fn,
    guide: Fn,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """Minus the mean of ``elbo.num_estimates`` estimates of a ``k``-draw bound.

    ``bound(model_trace, guide_trace)`` gives one estimate and its surrogate; the value is
    returned with the surrogate's gradient, and ``elbo.last_terms`` gets the true ELBO
    terms averaged over all ``num_estimates * k`` draws.
    """
    value: Any = 0.0
    surrogate: Any = 0.0
    recon: Any = 0.0
    kl: Any = 0.0
    for _ in range(elbo.num_estimates):
        for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
            v, s = bound(model_trace, guide_trace)
            r, q = trace_terms(model_trace, guide_trace)
            value, surrogate = value + v, surrogate + s
            recon, kl = recon + r, kl + q
    m, draws = elbo.num_estimates, elbo.num_estimates * elbo.k
    elbo.last_terms = {"reconstruction": recon / draws, "kl": kl / draws}
    return with_gradient_of(-value / m, -surrogate / m)


def with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is ``value`` and whose gradient is that of ``surrogate``."""
    return value.detach() + (surrogate - surrogate.detach())


def detached(t: Any) -> torch.Tensor:
    """``t`` as a detached tensor, provenance tracking removed."""
    return as_tensor(detach_provenance(t)).detach()


def trace_terms(model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch sums of log p(x|z) (observed sites) and log q - log p (latent sites), detached.

    Summed over every dim, particles included: divide by the particle count.
    """
    recon: Any = 0.0
    kl: Any = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            lp = detached(site["log_prob_sum"])
            recon, kl = (recon + lp, kl) if site["is_observed"] else (recon, kl - lp)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            kl = kl + detached(site["log_prob_sum"])
    return as_tensor(recon), as_tensor(kl)


def refuse_enumeration(trace: Trace, objective: object) -> None:
    """Refuse a latent site marked for enumeration: these objectives would sample it."""
    for name, site in latent_sites(trace):
        if site["infer"].get("enumerate") is not None:
            raise ValueError(
                f"site {name!r} is marked for enumeration (config_enumerate), but "
                f"{type(objective).__name__} samples every site, so the discrete site would "
                "be sampled and trained by the score function, not summed. Train it with "
                "pyro.infer.TraceEnum_ELBO (the objective 'elbo-enum'), or remove the "
                "enumerate mark to sample it."
            )


class Objective(pyro.infer.ELBO):
    """The base of every objective: ``loss`` and ``loss_and_grads`` are ``differentiable_loss``.

    ``loss`` is its value without the graph; ``loss_and_grads`` (``pyro.infer.SVI.step``)
    differentiates it, so SVI trains exactly the objective's gradient (Pyro's own
    ``loss_and_grads`` would train its parent class's estimator). Each sets ``last_terms``.
    """

    differentiable_loss: Callable[..., torch.Tensor]  # the subclass's (annotation only)
    last_terms: Terms

    def loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> float:
        """The objective's value (minus its estimate for the batch), as a float."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> float:
        """``differentiable_loss`` with its gradient accumulated in ``.grad`` (for SVI)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())

    def _get_trace(self, model: Fn, guide: Fn, args: Any, kwargs: Any) -> Any:
        # Pyro's classes warn about enumeration marks and sample on; _get_traces refuses
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*you need to use TraceEnum_ELBO")
            return super()._get_trace(model, guide, args, kwargs)  # type: ignore[safe-super]

    def _get_traces(self, model: Fn, guide: Fn, args: Any, kwargs: Any) -> Iterator[Any]:
        for model_trace, guide_trace in super()._get_traces(model, guide, args, kwargs):
            refuse_enumeration(guide_trace, self)
            refuse_enumeration(model_trace, self)
            yield model_trace, guide_trace


class QuietGuess(pyro.infer.ELBO):
    """Pyro guesses ``max_plate_nesting`` once, logging it at INFO; keep the console quiet."""

    def _guess_max_plate_nesting(self, model: Fn, guide: Fn, args: Any, kwargs: Any) -> None:
        logger = logging.getLogger("pyro.infer.elbo")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            super()._guess_max_plate_nesting(model, guide, args, kwargs)
        finally:
            logger.setLevel(level)
