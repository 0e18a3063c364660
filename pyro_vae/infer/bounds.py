r"""Importance-weighted bounds: Rényi and IWAE, and the path-derivative gradients STL and DReG.

``k`` draws per estimate are vectorized with a particle plate; ``num_particles`` independent
estimates are averaged. Pyro's ``RenyiELBO`` sums each site over the plates not shared by
every site before the log-sum-exp over draws, so with every site in the data plate the bound
is per data point (see :mod:`pyro_vae.infer.objectives`).
"""

from __future__ import annotations

import math
from typing import Any

import pyro.infer
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.trace_struct import Trace

from pyro_vae.checks import is_int
from pyro_vae.infer.base import (
    OBJECTIVES,
    Fn,
    Objective,
    QuietGuess,
    Terms,
    as_tensor,
    mean_of_estimates,
)

__all__ = ["IWAE", "DReGIWAE", "RenyiObjective", "StickingTheLandingELBO"]


@OBJECTIVES.register("renyi")
class RenyiObjective(QuietGuess, Objective, pyro.infer.RenyiELBO):
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
        if not is_int(k) or k < 1:
            raise ValueError(f"k must be a positive int (draws per estimate), got {k!r}")
        if not is_int(num_particles):
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number other than 1, got {alpha!r}")
        if alpha == 1:  # Pyro's own refusal names its classes, not this package's specs
            raise ValueError(
                "alpha=1 is the ELBO (the Renyi bound's limit as alpha -> 1): use "
                "TrainConfig(objective='elbo')"
            )
        super().__init__(alpha=alpha, num_particles=k, vectorize_particles=True)
        self.k = k
        self.num_estimates = num_particles
        self.last_terms: Terms = {}

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        r""":math:`-\sum_n \mathcal{L}_\alpha(x_n)` as a tensor to differentiate, averaged over
        ``num_particles`` independent estimates of ``k`` draws each (a scalar, nats)."""
        return mean_of_estimates(self, self._bound, model, guide, args, kwargs)

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
        elbo, surrogate = as_tensor(elbo), as_tensor(surrogate)
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


class _PathDerivativeELBO(QuietGuess, Objective):
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
            if not is_int(value) or value < 1:
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
                f"sites {names}; use TrainConfig(objective='iwae') or "
                "TrainConfig(objective='elbo') for this guide"
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
        log_w = as_tensor(log_w - torch_sum(log_q, sum_dims))
        return (log_w.unsqueeze(0) if self.k == 1 else log_w), site

    def _estimate(self, log_w: torch.Tensor, site: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        def bound(model_trace: Trace, guide_trace: Trace) -> tuple[Any, Any]:
            return self._estimate(*self._path_log_weights(model_trace, guide_trace))

        return mean_of_estimates(self, bound, model, guide, args, kwargs)


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
