r"""The ELBO objectives: Pyro's ``Trace_ELBO``, ``TraceMeanField_ELBO`` and ``TraceGraph_ELBO``.

Each computes the same value and gradient as Pyro's class on the same draws (tests check
it), without a host synchronisation per site, and keeps the ELBO's two terms in
``last_terms``.
"""

from __future__ import annotations

from typing import Any

import pyro.infer
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.tracegraph_elbo import _compute_elbo
from pyro.infer.util import check_fully_reparametrized
from pyro.poutine.trace_struct import Trace
from torch.distributions import kl_divergence

from pyro_vae.infer.base import (
    OBJECTIVES,
    Fn,
    Objective,
    Terms,
    as_tensor,
    trace_terms,
    with_gradient_of,
)

__all__ = ["MeanFieldELBO", "TraceELBO", "TraceGraphELBO"]


@OBJECTIVES.register("elbo")
class TraceELBO(Objective, pyro.infer.Trace_ELBO):
    r"""Pyro's ``Trace_ELBO`` without host synchronisation, keeping the two terms.

    Estimates :math:`\mathrm{ELBO} = \mathbb{E}_q[\log p(x, z) - \log q(z|x)]` with
    reparameterized samples (score-function terms with partial Rao-Blackwellization where a
    site is not reparameterizable, exactly as ``Trace_ELBO``; Wingate & Weber 2013,
    Ranganath et al. 2014). After each call, ``last_terms`` holds the detached sums over
    the batch of ``reconstruction`` (observed sites) and ``kl`` (latent sites, Monte Carlo).
    """

    replayable = True  # a pure function of tensors: see pyro_vae.training.replay

    def __init__(self, num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.last_terms: Terms = {}

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        traces = self._get_traces(model, guide, args, kwargs)
        particles = [_particle(model_trace, guide_trace) for model_trace, guide_trace in traces]
        loss = -_mean([elbo for elbo, _, _ in particles])
        recon = _mean([recon for _, _, recon in particles])
        self.last_terms = {"reconstruction": recon.detach(), "kl": (recon + loss).detach()}
        if all(surrogate is None for _, surrogate, _ in particles):
            return loss  # every guide site reparameterized: the estimate is its own surrogate
        # value of the ELBO estimate, gradient of the surrogate (as Trace_ELBO)
        surrogate = -_mean([elbo if s is None else s for elbo, s, _ in particles])
        return with_gradient_of(loss, surrogate)


def _mean(values: list[Any]) -> torch.Tensor:
    """The mean over particles, with no operation for one particle (the usual case)."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return as_tensor(total if len(values) == 1 else total / len(values))


def _particle(model_trace: Trace, guide_trace: Trace) -> tuple[Any, Any, Any]:
    """One particle's ELBO, surrogate ELBO and reconstruction, as device tensors.

    The surrogate is ``None`` where it equals the ELBO, value and gradient: when no guide
    site has a score-function term, each site's ``entropy_term`` is its ``log_prob`` (Pyro's
    ``ScoreParts`` convention for reparameterized sites), so the two sums are the same.
    """
    elbo: Any = 0.0
    recon: Any = 0.0
    surrogate_guide: Any = 0.0  # the guide's part of the surrogate
    reparameterized = True
    log_r = None
    for site in _sample_sites(model_trace):
        elbo = site["log_prob_sum"] if isinstance(elbo, float) else elbo + site["log_prob_sum"]
        if site["is_observed"]:
            term = site["log_prob_sum"].detach()
            recon = term if isinstance(recon, float) else recon + term
    model_part = elbo
    for site in _sample_sites(guide_trace):
        _, score_function_term, entropy_term = site["score_parts"]
        elbo = elbo - site["log_prob_sum"]
        if is_identically_zero(entropy_term):
            reparameterized = False  # the site's log q enters the estimate, not the surrogate
        else:
            surrogate_guide = surrogate_guide - entropy_term.sum()
        if not is_identically_zero(score_function_term):
            reparameterized = False
            if log_r is None:
                log_r = _compute_log_r(model_trace, guide_trace)
            weight = log_r.sum_to(site["cond_indep_stack"])
            surrogate_guide = surrogate_guide + (weight * score_function_term).sum()
    surrogate = None if reparameterized else model_part + surrogate_guide
    return elbo, surrogate, recon


def _sample_sites(trace: Trace) -> list[Any]:
    return [site for site in trace.nodes.values() if site["type"] == "sample"]


@OBJECTIVES.register("elbo-analytic")
class MeanFieldELBO(Objective, pyro.infer.TraceMeanField_ELBO):
    r"""The ELBO with analytic KL where one is registered: Pyro's ``TraceMeanField_ELBO``.

    .. math::

        \mathrm{ELBO}(x) = \mathbb{E}_q[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z))

    with the KL in closed form where torch/Pyro register one for the (guide, prior) pair
    (a diagonal Normal against a Normal, say) and Monte Carlo otherwise. Needs a fully
    reparameterized guide that satisfies the mean-field condition (Pyro's docs). Same value
    and gradient as Pyro's class, without its per-step ``.item()``.
    """

    replayable = True  # a pure function of tensors: see pyro_vae.training.replay

    def __init__(self, num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.last_terms: Terms = {}

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        recon: Any = 0.0
        kl: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            recon_p, kl_p = _mean_field_particle(model_trace, guide_trace)
            recon = recon + recon_p / self.num_particles
            kl = kl + kl_p / self.num_particles
        recon, kl = as_tensor(recon), as_tensor(kl)
        self.last_terms = {"reconstruction": recon.detach(), "kl": kl.detach()}
        return kl - recon  # the estimate is its own surrogate (fully reparameterized)


def _mean_field_particle(model_trace: Trace, guide_trace: Trace) -> tuple[Any, Any]:
    """Reconstruction and KL of one particle, as ``TraceMeanField_ELBO`` computes them."""
    recon: Any = 0.0
    kl: Any = 0.0
    model_site: Any
    guide_site: Any
    for name, model_site in model_trace.nodes.items():
        if model_site["type"] != "sample":
            continue
        if model_site["is_observed"]:
            recon = recon + model_site["log_prob_sum"]
            continue
        guide_site = guide_trace.nodes[name]
        if pyro.infer.util.is_validation_enabled():
            check_fully_reparametrized(guide_site)
        try:
            kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
        except NotImplementedError:
            entropy_term = guide_site["score_parts"].entropy_term
            kl = kl + entropy_term.sum() - model_site["log_prob_sum"]
            continue
        kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"], mask=guide_site["mask"])
        if torch.is_tensor(kl_qp):
            kl = kl + kl_qp.sum()
        else:
            kl = kl + kl_qp * torch.Size(guide_site["fn"].batch_shape).numel()
    for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
        if guide_site["type"] == "sample" and name not in model_trace.nodes:
            kl = kl + guide_site["score_parts"].entropy_term.sum()
    return recon, kl


@OBJECTIVES.register("tracegraph")
class TraceGraphELBO(Objective, pyro.infer.TraceGraph_ELBO):
    r"""The ELBO through Pyro's ``TraceGraph_ELBO``, for latents that cannot be reparameterized.

    The gradient of a non-reparameterizable site uses the score function (REINFORCE;
    Williams 1992) with only its downstream costs (Schulman et al. 2015) and optional
    baselines (Mnih & Gregor 2014). The value is the ELBO estimate; the gradient equals
    ``TraceGraph_ELBO.loss_and_grads`` on the same draws.
    """

    def __init__(self, num_particles: int = 1) -> None:
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.last_terms: Terms = {}

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Minus the ELBO with ``TraceGraph_ELBO``'s surrogate (score-function terms with
        baselines) as its gradient; a scalar, nats summed over the batch."""
        elbo: Any = 0.0
        surrogate_loss: Any = 0.0
        recon: Any = 0.0
        kl: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_p, surrogate_p = _compute_elbo(model_trace, guide_trace)
            r, q = trace_terms(model_trace, guide_trace)
            elbo, surrogate_loss = elbo + elbo_p, surrogate_loss + surrogate_p
            recon, kl = recon + r, kl + q
        p = self.num_particles
        self.last_terms = {"reconstruction": recon / p, "kl": kl / p}
        return with_gradient_of(-as_tensor(elbo) / p, as_tensor(surrogate_loss) / p)
