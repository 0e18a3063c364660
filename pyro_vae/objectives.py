"""Training objectives: Pyro ELBO classes, by name.

The default, ``elbo``, is Pyro's :class:`~pyro.infer.Trace_ELBO` estimator. The subclass here
computes the same value and the same gradient, but keeps every quantity on the device
(Pyro's own ``differentiable_loss`` calls ``.item()`` per site, one host synchronisation per
site per step) and keeps the step's reconstruction and KL terms for the progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.infer
import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.trace_elbo import _compute_log_r
from pyro.poutine.trace_struct import Trace

from pyro_vae.registry import Registry

__all__ = ["OBJECTIVES", "TraceELBO", "build_objective"]

OBJECTIVES: Registry[pyro.infer.ELBO] = Registry("objective")


@OBJECTIVES.register("elbo")
class TraceELBO(pyro.infer.Trace_ELBO):
    r"""Pyro's ``Trace_ELBO`` without host synchronisation, keeping the two terms.

    Estimates :math:`\mathrm{ELBO} = \mathbb{E}_q[\log p(x, z) - \log q(z|x)]` with
    reparameterized samples (score-function terms with partial Rao-Blackwellization where a
    site is not reparameterizable, exactly as ``Trace_ELBO``; Wingate & Weber 2013,
    Ranganath et al. 2014). After each call, ``last_terms`` holds the detached sums over
    the batch of ``reconstruction`` (observed sites) and ``kl`` (latent sites, Monte Carlo).
    """

    def __init__(self, *, num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.last_terms: dict[str, torch.Tensor] = {}

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        loss = surrogate = recon = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_p, surrogate_p, recon_p = _particle(model_trace, guide_trace)
            loss = loss - elbo_p / self.num_particles
            surrogate = surrogate - surrogate_p / self.num_particles
            recon = recon + recon_p / self.num_particles
        assert isinstance(loss, torch.Tensor) and isinstance(surrogate, torch.Tensor)
        self.last_terms = {
            "reconstruction": torch.as_tensor(recon).detach(),
            "kl": (torch.as_tensor(recon) + loss).detach(),
        }
        # value of the ELBO estimate, gradient of the surrogate (as Trace_ELBO)
        return loss.detach() + (surrogate - surrogate.detach())

    def loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


def _particle(model_trace: Trace, guide_trace: Trace) -> tuple[Any, Any, Any]:
    """One particle's ELBO, surrogate ELBO and reconstruction, as device tensors."""
    elbo: Any = 0.0
    surrogate: Any = 0.0
    recon: Any = 0.0
    log_r = None
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            elbo = elbo + site["log_prob_sum"]
            surrogate = surrogate + site["log_prob_sum"]
            if site["is_observed"]:
                recon = recon + site["log_prob_sum"].detach()
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            _, score_function_term, entropy_term = site["score_parts"]
            elbo = elbo - site["log_prob_sum"]
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                weight = log_r.sum_to(site["cond_indep_stack"])
                surrogate = surrogate + (weight * score_function_term).sum()
    return elbo, surrogate, recon


def build_objective(spec: str, *, num_particles: int = 1) -> pyro.infer.ELBO:
    """The ELBO object a spec names, e.g. ``"elbo"``."""
    return OBJECTIVES.build(spec, num_particles=num_particles)
