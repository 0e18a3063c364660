r"""Training objectives: ELBO classes, by name.

Every objective here is a Pyro ELBO class: ``objective(model, guide)`` is an
``nn.Module`` loss (Pyro's ``ELBOModule``), ``objective.differentiable_loss(model, guide,
x)`` is minus the objective's estimate for the batch with the estimator's gradient, and
``objective.loss`` is its value as a float. Where Pyro's own class has no
``differentiable_loss`` (``RenyiELBO``, ``TraceGraph_ELBO``) or calls ``.item()`` per
site (``Trace_ELBO``, ``TraceMeanField_ELBO``), the subclass here computes the same value
and the same gradient without host synchronisation; tests check each against Pyro's class
on the same draws.

After each call, ``objective.last_terms`` holds the detached batch sums of the *true*
ELBO's two terms, ``reconstruction`` :math:`\sum_n \mathbb{E}_q[\log p(x_n|z)]` and ``kl``
:math:`\sum_n \mathrm{KL}(q(z|x_n)\|p(z))`, read off the same traces (one or more draws),
whatever the objective optimizes. That is what the trainer reports as ``train_elbo``;
the objective's own value is reported beside it as ``train_objective``.

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

import logging
import math
from collections.abc import Callable
from typing import Any

import pyro.infer
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.tracegraph_elbo import _compute_elbo
from pyro.infer.util import check_fully_reparametrized, get_dependent_plate_dims, torch_sum
from pyro.ops.provenance import detach_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.registry import Registry

__all__ = [
    "IWAE",
    "OBJECTIVES",
    "BetaELBO",
    "DReGIWAE",
    "FreeBitsELBO",
    "KLWarmupELBO",
    "MeanFieldELBO",
    "RenyiObjective",
    "StickingTheLandingELBO",
    "TraceELBO",
    "TraceGraphELBO",
    "batch_terms",
    "build_objective",
    "kl_per_dimension",
    "objective_names",
]

OBJECTIVES: Registry[pyro.infer.ELBO] = Registry("objective")

Fn = Callable[..., Any]
Terms = dict[str, torch.Tensor]


def _tensor(value: Any) -> torch.Tensor:
    """``value`` as a tensor; a tensor passes through untouched (a recording stays exact)."""
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def _mean_of_estimates(
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
            r, q = _trace_terms(model_trace, guide_trace)
            value, surrogate = value + v, surrogate + s
            recon, kl = recon + r, kl + q
    m, draws = elbo.num_estimates, elbo.num_estimates * elbo.k
    elbo.last_terms = {"reconstruction": recon / draws, "kl": kl / draws}
    return _with_gradient_of(-value / m, -surrogate / m)


def _with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is ``value`` and whose gradient is that of ``surrogate``."""
    return value.detach() + (surrogate - surrogate.detach())


def _detached(t: Any) -> torch.Tensor:
    return _tensor(detach_provenance(t)).detach()


def _trace_terms(model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch sums of log p(x|z) (observed sites) and log q - log p (latent sites), detached.

    Summed over every dim, particles included: divide by the particle count.
    """
    recon: Any = 0.0
    kl: Any = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            lp = _detached(site["log_prob_sum"])
            recon, kl = (recon + lp, kl) if site["is_observed"] else (recon, kl - lp)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            kl = kl + _detached(site["log_prob_sum"])
    return _tensor(recon), _tensor(kl)


class _ValueOfDifferentiableLoss(pyro.infer.ELBO):
    """``loss`` is ``differentiable_loss`` without the graph: one code path for both."""

    differentiable_loss: Callable[..., torch.Tensor]  # the subclass's (annotation only)

    def loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


class _GradsOfDifferentiableLoss(_ValueOfDifferentiableLoss):
    """``loss_and_grads`` is ``differentiable_loss`` differentiated (for ``pyro.infer.SVI``)."""

    def loss_and_grads(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss.detach())


@OBJECTIVES.register("elbo")
class TraceELBO(_ValueOfDifferentiableLoss, pyro.infer.Trace_ELBO):
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
        loss = surrogate = recon = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_p, surrogate_p, recon_p = _particle(model_trace, guide_trace)
            loss = loss - elbo_p / self.num_particles
            surrogate = surrogate - surrogate_p / self.num_particles
            recon = recon + recon_p / self.num_particles
        assert isinstance(loss, torch.Tensor) and isinstance(surrogate, torch.Tensor)
        self.last_terms = {
            "reconstruction": _tensor(recon).detach(),
            "kl": (_tensor(recon) + loss).detach(),
        }
        # value of the ELBO estimate, gradient of the surrogate (as Trace_ELBO)
        return _with_gradient_of(loss, surrogate)


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


@OBJECTIVES.register("elbo-analytic")
class MeanFieldELBO(_ValueOfDifferentiableLoss, pyro.infer.TraceMeanField_ELBO):
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
        recon, kl = _tensor(recon), _tensor(kl)
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


class _QuietGuess(pyro.infer.ELBO):
    """Pyro guesses ``max_plate_nesting`` once, logging it at INFO; keep the console quiet."""

    def _guess_max_plate_nesting(self, model: Fn, guide: Fn, args: Any, kwargs: Any) -> None:
        logger = logging.getLogger("pyro.infer.elbo")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            super()._guess_max_plate_nesting(model, guide, args, kwargs)
        finally:
            logger.setLevel(level)


@OBJECTIVES.register("renyi")
class RenyiObjective(_QuietGuess, _GradsOfDifferentiableLoss, pyro.infer.RenyiELBO):
    r"""The Rényi bound of Li & Turner (2016), through Pyro's ``RenyiELBO``, per data point.

    .. math::

        \mathcal{L}_\alpha(x) = \frac{1}{1-\alpha}\,
            \mathbb{E}_{z_{1..k} \sim q}\log \frac1k \sum_{i=1}^k
            \Big(\frac{p(x, z_i)}{q(z_i|x)}\Big)^{1-\alpha}

    ``alpha = 0`` is the IWAE bound; ``alpha -> 1`` the ELBO (``alpha = 1`` is refused:
    use ``elbo``); for ``0 <= alpha < 1`` it is a lower bound on log p(x), looser as
    ``alpha`` grows. ``k`` draws are vectorized with a particle plate. The gradient is
    Pyro's (self-normalized weights :math:`\tilde w_i \propto w_i^{1-\alpha}` times the
    reparameterized gradient of :math:`\log w_i`); the value and gradient equal
    ``RenyiELBO(alpha, k, vectorize_particles=True).loss_and_grads`` on the same draws.
    """

    replayable = True  # a pure function of tensors (alpha, k fixed): see pyro_vae.training.replay

    def __init__(self, num_particles: int = 1, *, alpha: float = 0.5, k: int = 5) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int (draws per estimate), got {k!r}")
        if isinstance(num_particles, bool) or not isinstance(num_particles, int):
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number other than 1, got {alpha!r}")
        if alpha == 1:  # Pyro's own refusal names its classes, not this package's specs
            raise ValueError(
                "alpha=1 is the ELBO (the Renyi bound's limit as alpha -> 1): use --objective "
                "elbo (in Python, build_objective('elbo'))"
            )
        super().__init__(alpha=alpha, num_particles=k, vectorize_particles=True)
        self.k = k
        self.num_estimates = num_particles
        self.last_terms: Terms = {}

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        r""":math:`-\sum_n \mathcal{L}_\alpha(x_n)` as a tensor to differentiate, averaged over
        ``num_particles`` independent estimates of ``k`` draws each (a scalar, nats)."""
        return _mean_of_estimates(self, self._bound, model, guide, args, kwargs)

    def _bound(self, model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, Any]:
        """The bound (summed over shared plates) and its surrogate, as ``RenyiELBO``."""
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        elbo: Any = 0.0
        surrogate: Any = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_prob = torch_sum(site["log_prob"], sum_dims)
                elbo, surrogate = elbo + log_prob.detach(), surrogate + log_prob
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            _, score_function_term, entropy_term = site["score_parts"]
            log_prob = torch_sum(site["log_prob"], sum_dims)
            elbo = elbo - log_prob.detach()
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - log_prob
                if not is_identically_zero(score_function_term):
                    raise NotImplementedError(
                        f"site {site['name']!r} is partially reparameterized; RenyiELBO "
                        "supports fully reparameterized or fully non-reparameterized sites"
                    )
            if not is_identically_zero(score_function_term):
                surrogate = surrogate + (self.alpha / (1.0 - self.alpha)) * log_prob
        elbo, surrogate = _tensor(elbo), _tensor(surrogate)
        if self.k == 1:  # no particle plate: add the particle dim
            elbo, surrogate = elbo.unsqueeze(0), surrogate.unsqueeze(0)
        log_weights = (1.0 - self.alpha) * elbo  # (K, N)
        log_mean = log_weights.logsumexp(0, keepdim=True) - math.log(self.k)  # (1, N)
        weights = (log_weights - log_mean).exp()  # (K, N), self-normalized, detached
        value = log_mean.sum() / (1.0 - self.alpha)
        return value, (weights * surrogate).sum() / self.k


@OBJECTIVES.register("iwae")
class IWAE(RenyiObjective):
    r"""The importance-weighted bound of Burda, Grosse & Salakhutdinov (2015), per data point.

    .. math::

        \mathcal{L}_k(x) = \mathbb{E}_{z_{1..k} \sim q(z|x)}
            \log \frac1k \sum_{i=1}^k \frac{p(x, z_i)}{q(z_i|x)}
            \;\le\; \log p(x)

    :math:`\mathcal{L}_1` is the ELBO and :math:`\mathcal{L}_k` grows with ``k``. This is
    Pyro's ``RenyiELBO(alpha=0)`` with ``k`` vectorized particles (see the module notes for
    why it is per data point).
    """

    def __init__(self, num_particles: int = 1, *, k: int = 5) -> None:
        super().__init__(num_particles, alpha=0.0, k=k)


@OBJECTIVES.register("tracegraph")
class TraceGraphELBO(_ValueOfDifferentiableLoss, pyro.infer.TraceGraph_ELBO):
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
            r, q = _trace_terms(model_trace, guide_trace)
            elbo, surrogate_loss = elbo + elbo_p, surrogate_loss + surrogate_p
            recon, kl = recon + r, kl + q
        p = self.num_particles
        self.last_terms = {"reconstruction": recon / p, "kl": kl / p}
        return _with_gradient_of(-_tensor(elbo) / p, _tensor(surrogate_loss) / p)


class _ScaleLatents(Messenger):
    """``poutine.scale(scale=weight)`` applied to latent sample sites only."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def _process_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]


@OBJECTIVES.register("beta")
class BetaELBO(TraceELBO):
    r"""The β-VAE objective of Higgins et al. (2017), optionally with a linear KL warm-up.

    .. math::

        \mathcal{L}_\beta(x) = \mathbb{E}_q[\log p(x|z)] - \beta\,\mathrm{KL}(q(z|x)\,\|\,p(z))

    It scales the latent sites only, which is exactly ``poutine.scale`` on the latent
    sample statements of both programs::

        with poutine.scale(scale=beta):          # in the model and in the guide
            z = pyro.sample("z", ...)

    so ``BetaELBO(beta=B)`` equals ``Trace_ELBO`` on programs written that way (a test
    checks it on the same draws), and ``beta = 1`` is the plain ELBO. With ``warmup = N``
    the weight at epoch ``e`` (1-based) is :math:`\beta \min(1, e/N)`: a linear warm-up
    (Bowman et al. 2016; Sønderby et al. 2016). The trainer calls :meth:`set_epoch`; the
    weight is a function of the epoch only, so a resumed run continues it exactly.
    ``last_terms`` holds the unweighted terms.
    """

    def __init__(self, num_particles: int = 1, *, beta: float = 1.0, warmup: int = 0) -> None:
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a positive finite number, got {beta!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative int (epochs), got {warmup!r}")
        super().__init__(num_particles)
        self.beta = float(beta)
        self.warmup = warmup
        self.kl_weight = self.beta
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        """Set the KL weight for (1-based) ``epoch``: ``beta * min(1, epoch / warmup)``."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be a positive int (1-based), got {epoch!r}")
        ramp = min(1.0, epoch / self.warmup) if self.warmup else 1.0
        self.kl_weight = self.beta * ramp

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        scale = _ScaleLatents(self.kl_weight)
        loss = super().differentiable_loss(scale(model), scale(guide), *args, **kwargs)
        self.last_terms["kl"] = self.last_terms["kl"] / self.kl_weight  # unweighted KL
        return loss


@OBJECTIVES.register("warmup")
class KLWarmupELBO(BetaELBO):
    r"""The ELBO with a KL weight rising linearly to 1 over N epochs (Sønderby et al. 2016).

    .. math::

        \mathcal{L}^{(e)}(x) = \mathbb{E}_q[\log p(x|z)]
            - \min(1, e/N)\,\mathrm{KL}(q(z|x)\,\|\,p(z))

    at epoch ``e`` (1-based) with ``N = epochs``; from epoch ``N`` on it is the ELBO.
    ``beta`` multiplies the final weight, as in :class:`BetaELBO` (``beta:beta=B,warmup=N``
    is the same objective).
    """

    replayable = False  # the KL weight changes every epoch: a recording would freeze it

    def __init__(self, num_particles: int = 1, *, epochs: int = 10, beta: float = 1.0) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        super().__init__(num_particles, beta=beta, warmup=epochs)


def _factorized_normal(d: Distribution) -> Normal | None:
    """The Normal base of ``d`` (through ``Independent`` wrappers), or None."""
    while isinstance(d, Independent):
        d = d.base_dist
    return d if isinstance(d, Normal) else None


def kl_per_dimension(q: Distribution, p: Distribution) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(q_j\,\|\,p_j)` for factorized Normal ``q`` and ``p``.

    Both must be ``Normal`` (or ``Independent`` of ``Normal``), so that the KL splits into
    one closed-form term per coordinate; the result has shape
    ``q.batch_shape + q.event_shape`` and sums to ``kl_divergence(q, p)``.
    """
    qn, pn = _factorized_normal(q), _factorized_normal(p)
    if qn is None or pn is None:
        raise ValueError(
            "a per-dimension KL needs factorized Normal distributions (Normal, or Independent "
            f"of Normal) for q and p, got q = {type(q).__name__}"
            f"{_base_name(q)} and p = {type(p).__name__}{_base_name(p)}"
        )
    return kl_divergence(qn, pn)


def _base_name(d: Distribution) -> str:
    return f"({type(d.base_dist).__name__})" if isinstance(d, Independent) else ""


def _data_frame(site: Any) -> Any:
    frames = [f for f in site["cond_indep_stack"] if f.vectorized]
    named = [f for f in frames if f.name == "data"]
    return named[0] if named else (frames[-1] if len(frames) == 1 else None)


@OBJECTIVES.register("free-bits")
class FreeBitsELBO(_ValueOfDifferentiableLoss, pyro.infer.Trace_ELBO):
    r"""The ELBO with free bits: a KL floor of λ nats per latent dimension (Kingma et al. 2016).

    .. math::

        \tilde{\mathcal{L}}_\lambda = \sum_n \mathbb{E}_q[\log p(x_n|z)]
            - N \sum_j \max\Big(\lambda,\;
              \frac1N \sum_n \mathrm{KL}\big(q(z_j|x_n)\,\|\,p(z_j)\big)\Big)

    over a mini-batch of N points (Kingma et al. 2016, eq. 15, one group per dimension):
    a dimension whose batch-averaged KL is under λ is not pushed further towards the
    prior. The KL per dimension is in closed form, so ``q(z|x)`` and ``p(z)`` must be
    factorized Normals at every latent site (others are refused with the reason), and the
    guide reparameterized. Spec: ``free-bits:lambda=L``.
    """

    def __init__(self, num_particles: int = 1, *, lambda_: float = 0.5) -> None:
        if not (math.isfinite(lambda_) and lambda_ >= 0):
            raise ValueError(f"lambda must be a non-negative number (nats), got {lambda_!r}")
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.free_bits = float(lambda_)
        self.last_terms: Terms = {}

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        objective: Any = 0.0
        recon: Any = 0.0
        kl: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            for site in model_trace.nodes.values():
                if site["type"] == "sample" and site["is_observed"]:
                    recon = recon + site["log_prob_sum"] / self.num_particles
            for name, latent in guide_trace.nodes.items():
                if latent["type"] == "sample":
                    total, penalty = self._site_kl(name, latent, model_trace)
                    kl = kl + total / self.num_particles
                    objective = objective - penalty / self.num_particles
        recon, kl = _tensor(recon), _tensor(kl)
        self.last_terms = {"reconstruction": recon.detach(), "kl": kl.detach()}
        return -(recon + objective)

    def _site_kl(self, name: str, site: Any, model_trace: Trace) -> tuple[Any, Any]:
        """(total KL, free-bits penalty) of one latent site, batch sums."""
        if name not in model_trace.nodes or not site["fn"].has_rsample:
            raise ValueError(
                f"free-bits needs a reparameterized guide site {name!r} that the model also "
                "samples; use elbo or tracegraph for this guide"
            )
        if site["mask"] is not None:
            raise ValueError(f"free-bits does not support masked latent sites (site {name!r})")
        try:
            prior: Any = model_trace.nodes[name]["fn"]
            unit = kl_per_dimension(site["fn"], prior)
        except ValueError as e:
            raise ValueError(f"free-bits at latent site {name!r}: {e}") from None
        scale = site["scale"]
        frame = _data_frame(site)
        if frame is None:  # a global latent: each coordinate is one unit
            return scale * unit.sum(), scale * unit.clamp(min=self.free_bits).sum()
        dim = unit.dim() - len(site["fn"].event_shape) + frame.dim
        n = unit.shape[dim]
        mean = unit.mean(dim)  # (..., L): batch-averaged KL per dimension
        return scale * unit.sum(), scale * n * mean.clamp(min=self.free_bits).sum()


class _PathDerivativeELBO(_QuietGuess, _GradsOfDifferentiableLoss):
    r"""Shared machinery of STL and DReG: log weights whose φ-gradient is the path derivative.

    For a reparameterized draw :math:`z = z(\epsilon, \phi)` the log weight
    :math:`\log w = \log p(x, z) - \log q_{\bar\phi}(z|x)` is computed with the guide's
    parameters stopped (:math:`\bar\phi`) and ``z`` live: the guide's log density is
    re-scored at the detached draw and that score subtracted,
    :math:`\log q(z) - \log q(\bar z) + \mathrm{sg}[\log q(\bar z)]`. Its value is
    :math:`\log q(z|x)`, its gradient flows through ``z`` only. That is exact when the
    guide has one latent site (the parameters of its distribution depend on φ and x only),
    which is what these classes accept.
    """

    def __init__(self, num_particles: int, k: int) -> None:
        for name, value in (("num_particles", num_particles), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__init__(num_particles=k, vectorize_particles=True)
        self.k = k
        self.num_estimates = num_particles
        self.last_terms: Terms = {}

    def _get_trace(self, model: Fn, guide: Fn, args: Any, kwargs: Any) -> tuple[Trace, Trace]:
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _path_log_weights(self, model_trace: Trace, guide_trace: Trace) -> tuple[Any, Any]:
        """Log weights ``(K, ...)`` with path-only φ-gradient, and the guide's latent site."""
        latents: list[Any] = [s for s in guide_trace.nodes.values() if s["type"] == "sample"]
        if len(latents) != 1 or not latents[0]["fn"].has_rsample:
            names = [s["name"] for s in latents]
            raise ValueError(
                f"{type(self).__name__} needs a guide with exactly one reparameterized latent "
                f"site (the path derivative stops q's parameters by re-scoring the draw), got "
                f"sites {names}; use iwae or elbo for this guide"
            )
        site = latents[0]
        z: torch.Tensor = site["value"]
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        log_w: Any = 0.0
        for s in model_trace.nodes.values():
            if s["type"] == "sample":
                log_w = log_w + torch_sum(s["log_prob"], sum_dims)
        stopped = scale_and_mask(site["fn"].log_prob(z.detach()), site["scale"], site["mask"])
        log_q = site["log_prob"] - stopped + stopped.detach()  # value log q, path gradient only
        log_w = _tensor(log_w - torch_sum(log_q, sum_dims))
        return (log_w.unsqueeze(0) if self.k == 1 else log_w), site

    def _estimate(self, log_w: torch.Tensor, site: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        def bound(model_trace: Trace, guide_trace: Trace) -> tuple[Any, Any]:
            return self._estimate(*self._path_log_weights(model_trace, guide_trace))

        return _mean_of_estimates(self, bound, model, guide, args, kwargs)


@OBJECTIVES.register("stl")
class StickingTheLandingELBO(_PathDerivativeELBO):
    r"""The ELBO with the sticking-the-landing gradient of Roeder, Wu & Duvenaud (2017).

    .. math::

        \nabla_\phi \mathrm{ELBO} \approx \frac1K \sum_{i=1}^K
            \nabla_z \big[\log p(x, z) - \log q_{\bar\phi}(z|x)\big]_{z = z_i}
            \frac{\partial z_i}{\partial \phi}

    The score-function term :math:`\nabla_\phi \log q_\phi(z|x)` at fixed ``z``, which has
    expectation zero, is dropped: the estimator stays unbiased and its variance vanishes
    as q approaches the posterior. Model gradients and the value are the ELBO's. The
    ``num_particles`` draws are vectorized.
    """

    def __init__(self, num_particles: int = 1) -> None:
        super().__init__(1, num_particles)

    def _estimate(self, log_w: torch.Tensor, site: Any) -> tuple[torch.Tensor, torch.Tensor]:
        mean = log_w.sum() / self.k
        return mean.detach(), mean


@OBJECTIVES.register("dreg")
class DReGIWAE(_PathDerivativeELBO):
    r"""The IWAE bound with the doubly reparameterized gradient of Tucker et al. (2018).

    Value: :math:`\mathcal{L}_k` (as :class:`IWAE`). Gradients, with self-normalized
    weights :math:`\tilde w_i = w_i / \sum_j w_j` (Tucker et al. 2018, eq. 5):

    .. math::

        \nabla_\theta \mathcal{L}_k \approx \sum_i \tilde w_i \nabla_\theta \log w_i,
        \qquad
        \nabla_\phi \mathcal{L}_k \approx \sum_i \tilde w_i^2\,
            \frac{\partial \log w_i}{\partial z_i}\frac{\partial z_i}{\partial \phi}

    with :math:`\log w_i` computed with q's parameters stopped. The surrogate is
    :math:`\sum_i \mathrm{sg}[\tilde w_i] \log w_i` and a gradient hook on the draw
    :math:`z_i` multiplies what reaches it by :math:`\tilde w_i` once more, so the model
    gets :math:`\tilde w_i` and the guide :math:`\tilde w_i^2`. Unbiased for the IWAE
    gradient; its signal-to-noise ratio does not decay with ``k`` as the plain IWAE
    inference-network gradient's does (Rainforth et al. 2018).
    """

    def __init__(self, num_particles: int = 1, *, k: int = 5) -> None:
        super().__init__(num_particles, k)

    def _estimate(self, log_w: torch.Tensor, site: Any) -> tuple[torch.Tensor, torch.Tensor]:
        lw = log_w.detach()  # (K, N)
        log_mean = lw.logsumexp(0) - math.log(self.k)  # (N,)
        weights = (lw - lw.logsumexp(0, keepdim=True)).exp()  # (K, N), sum to 1 over K
        z = site["value"]
        if z.requires_grad:
            batch = site["fn"].batch_shape
            if batch.numel() != weights.numel():
                raise ValueError(
                    f"dreg: the latent site {site['name']!r} has batch shape {tuple(batch)}, "
                    f"which does not match the log weights {tuple(weights.shape)}"
                )
            w = weights.reshape(*batch, *(1,) * len(site["fn"].event_shape))  # broadcast to z
            z.register_hook(lambda grad: grad * w)
        return log_mean.sum(), (weights * log_w).sum()


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
