r"""Regularized ELBOs: β-VAE, KL warm-up and free bits.

Each reports the *unweighted* ELBO terms in ``last_terms``, whatever it optimizes.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.infer
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from pyro_vae.checks import is_int
from pyro_vae.infer import sites
from pyro_vae.infer.base import OBJECTIVES, Fn, Objective, Terms, as_tensor
from pyro_vae.infer.elbos import TraceELBO

__all__ = ["BetaELBO", "FreeBitsELBO", "KLWarmupELBO", "kl_per_dimension"]


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
        if not is_int(warmup) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative int (epochs), got {warmup!r}")
        super().__init__(num_particles)
        self.beta = float(beta)
        self.warmup = warmup
        self.kl_weight = self.beta
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        """Set the KL weight for (1-based) ``epoch``: ``beta * min(1, epoch / warmup)``."""
        if not is_int(epoch) or epoch < 1:
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
        if not is_int(epochs) or epochs < 1:
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


@OBJECTIVES.register("free-bits")
class FreeBitsELBO(Objective, pyro.infer.Trace_ELBO):
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
            plate = sites.data_plate(model_trace, guide_trace)
            for site in model_trace.nodes.values():
                if site["type"] == "sample" and site["is_observed"]:
                    recon = recon + site["log_prob_sum"] / self.num_particles
            for name, latent in guide_trace.nodes.items():
                if latent["type"] == "sample":
                    total, penalty = self._site_kl(name, latent, model_trace, plate)
                    kl = kl + total / self.num_particles
                    objective = objective - penalty / self.num_particles
        recon, kl = as_tensor(recon), as_tensor(kl)
        self.last_terms = {"reconstruction": recon.detach(), "kl": kl.detach()}
        return -(recon + objective)

    def _site_kl(
        self, name: str, site: Any, model_trace: Trace, plate: sites.DataPlate
    ) -> tuple[Any, Any]:
        """(total KL, free-bits penalty) of one latent site, batch sums."""
        if name not in model_trace.nodes or not site["fn"].has_rsample:
            raise ValueError(
                f"free-bits needs a reparameterized guide site {name!r} that the model also "
                "samples; use TrainConfig(objective='elbo') or TrainConfig(objective='tracegraph') "
                "for this guide"
            )
        if site["mask"] is not None:
            raise ValueError(f"free-bits does not support masked latent sites (site {name!r})")
        try:
            prior: Any = model_trace.nodes[name]["fn"]
            unit = kl_per_dimension(site["fn"], prior)
        except ValueError as e:
            raise ValueError(f"free-bits at latent site {name!r}: {e}") from None
        scale = site["scale"]
        frame = sites.plate_frame(site, plate)
        if frame is None:  # a global latent: each coordinate is one unit
            return scale * unit.sum(), scale * unit.clamp(min=self.free_bits).sum()
        dim = unit.dim() - len(site["fn"].event_shape) + frame.dim
        n = unit.shape[dim]
        mean = unit.mean(dim)  # (..., L): batch-averaged KL per dimension
        return scale * unit.sum(), scale * n * mean.clamp(min=self.free_bits).sum()
