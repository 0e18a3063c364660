r"""Training objectives: ELBO classes, by name.

Every objective here is a Pyro ELBO class: ``objective(model, guide)`` is an
``nn.Module`` loss (Pyro's ``ELBOModule``), ``objective.differentiable_loss(model, guide,
x)`` is minus the objective's estimate for the batch with the estimator's gradient, and
``objective.loss`` is its value as a float. Where Pyro's own class has no
``differentiable_loss`` (``RenyiELBO``, ``TraceGraph_ELBO``) or calls ``.item()`` per
site (``Trace_ELBO``, ``TraceMeanField_ELBO``), the subclass here computes the same value
and the same gradient without host synchronisation; tests check each against Pyro's class
on the same draws.

Every class derives from :class:`~pyro_vae.infer.base.Objective`, so ``loss_and_grads``
(what ``pyro.infer.SVI.step`` calls) and the ``nn.Module`` route differentiate the very
``differentiable_loss`` that defines the objective: the three routes train one gradient
(a test checks each objective on the same draws). A site marked for enumeration
(``config_enumerate``) is refused, not silently sampled. The classes live in
:mod:`~pyro_vae.infer.elbos`, :mod:`~pyro_vae.infer.bounds` and
:mod:`~pyro_vae.infer.regularized`; every name stays importable from here.

After each call (on every route), ``objective.last_terms`` holds the detached batch sums
of the *true* ELBO's two terms, ``reconstruction`` :math:`\sum_n \mathbb{E}_q[\log
p(x_n|z)]` and ``kl`` :math:`\sum_n \mathrm{KL}(q(z|x_n)\|p(z))`, read off the same traces
(one or more draws), whatever the objective optimizes. That is what the trainer reports as
``train_elbo``; the objective's own value is reported beside it as ``train_objective``.

======================  =============================================================
spec                    objective
======================  =============================================================
``elbo``                ELBO, Pyro's ``Trace_ELBO`` estimator
``elbo-analytic``       ELBO with analytic KL where registered, ``TraceMeanField_ELBO``
``iwae:k=K``            IWAE bound :math:`\mathcal{L}_K` (Burda et al. 2015), ``RenyiELBO(alpha=0)``
``renyi:alpha=A,k=K``   Rényi bound :math:`\mathcal{L}_\alpha` (Li & Turner 2016), ``RenyiELBO``
``tracegraph``          ELBO, ``TraceGraph_ELBO`` (score-function terms with baselines)
``beta:beta=B``         :math:`\mathbb{E}_q[\log p(x|z)] - B\,\mathrm{KL}` (Higgins et al. 2017)
``warmup:epochs=N``     ELBO with the KL weight annealed linearly over N epochs
``free-bits:lambda=L``  KL floor of L nats per latent dimension (Kingma et al. 2016)
``dreg:k=K``            IWAE bound, doubly reparameterized gradient (Tucker et al. 2018)
``stl``                 ELBO, sticking-the-landing gradient (Roeder et al. 2017)
``elbo-enum``           ELBO, enumerated sites summed: ``TraceEnum_ELBO`` (M2, Kingma et al. 2014)
======================  =============================================================

The context argument ``num_particles`` (``TrainConfig.num_particles``) is the number of
independent estimates averaged per step: draws of ``z`` for the ELBO objectives, and
independent :math:`\mathcal{L}_K` estimates (each of ``k`` draws) for ``iwae``, ``renyi``
and ``dreg``.

**Is ``RenyiELBO`` per data point?** Yes, for the programs of this package. Pyro's
``RenyiELBO`` sums each site's log density only over the plates *not shared by every
site* (``get_dependent_plate_dims``) before the log-sum-exp over particles, and sums over
the remaining (shared) dims after it. With every site inside the ``"data"`` plate, the log
weights have shape ``(K, N)`` and the bound is :math:`\sum_n \log \frac1K \sum_k
w_{kn}`, the per-point IWAE bound of Burda et al. It is the bound of the whole batch as
one data point only when some site lies outside the data plate (a global latent), where
the weights do not factorize over points and that *is* the right bound. A test checks
both cases against the per-point log weights of :func:`pyro_vae.infer.importance.log_weights`.
"""

from __future__ import annotations

from typing import Any

import pyro.infer
import torch

from pyro_vae.infer.base import OBJECTIVES, Fn, Objective
from pyro_vae.infer.bounds import IWAE, DReGIWAE, RenyiObjective, StickingTheLandingELBO
from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.infer.elbos import MeanFieldELBO, TraceELBO, TraceGraphELBO
from pyro_vae.infer.enumerated import EnumELBO
from pyro_vae.infer.regularized import BetaELBO, FreeBitsELBO, KLWarmupELBO, kl_per_dimension

__all__ = [
    "IWAE",
    "OBJECTIVES",
    "BetaELBO",
    "DReGIWAE",
    "EnumELBO",
    "FreeBitsELBO",
    "KLWarmupELBO",
    "MeanFieldELBO",
    "Objective",
    "RenyiObjective",
    "StickingTheLandingELBO",
    "TraceELBO",
    "TraceGraphELBO",
    "batch_terms",
    "build_objective",
    "kl_per_dimension",
    "objective_names",
]


def batch_terms(
    objective: pyro.infer.ELBO, model: Fn, guide: Fn, x: torch.Tensor, *args: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch sums of the true reconstruction and KL after ``objective`` ran on ``x``.

    Read from ``objective.last_terms`` (the same traces, no extra work); an objective
    without ``last_terms`` (a user's own ELBO class) gets one extra, gradient-free
    :func:`~pyro_vae.infer.decomposition.elbo_terms` pass on the batch.
    """
    terms = getattr(objective, "last_terms", None)
    if terms:
        return terms["reconstruction"], terms["kl"]
    with torch.no_grad():
        t = elbo_terms(model, guide, x, *args)
    return t["reconstruction"].sum(), t["kl"].sum()


def objective_names() -> list[str]:
    """The registered objective names, for ``pyro-vae components``."""
    return OBJECTIVES.names()


def build_objective(spec: str, *, num_particles: int = 1) -> pyro.infer.ELBO:
    """The ELBO object a spec names, e.g. ``"elbo"``, ``"iwae:k=50"``, ``"beta:beta=4"``."""
    return OBJECTIVES.build(spec, num_particles=num_particles)
