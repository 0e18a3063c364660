r"""The ELBO with discrete latents summed out: Pyro's ``TraceEnum_ELBO``, and M2's objective.

The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling 2014) has a class
:math:`y` that is observed for a few points and latent for the rest. Its guide
:math:`q(y|x)\,q(z|x,y)` marks ``y`` for enumeration (``infer={"enumerate": "parallel"}``,
what ``config_enumerate`` writes), and ``TraceEnum_ELBO`` sums the bound over the classes
instead of sampling ``y``:

.. math::

    \mathcal{U}(x) = \sum_y q(y|x)\,\bigl(\mathbb{E}_{q(z|x,y)}[\log p(x|y,z) + \log p(y)
        + \log p(z) - \log q(z|x,y)] - \log q(y|x)\bigr),

and for a labelled point, whose :math:`q(y|x)` the guide pins to its class, the labelled
bound :math:`\mathcal{L}(x, y)`. Since :math:`\mathcal{L}` does not train the classifier,
Kingma et al. (eq. 9) add :math:`\alpha\,\mathbb{E}_{\tilde p_l(x,y)}[\log q(y|x)]` over
the labelled points, with :math:`\alpha = 0.1 N`. :class:`EnumELBO` does both: its
``classifier_weight`` multiplies :math:`\log q(y_n|x_n)` of each labelled point of the
batch (:func:`pyro_vae.training.fit.fit` sets it to :math:`\alpha / N_l`, ``N_l`` labelled
points among ``N``, so that the sum over the data set is the paper's expectation).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pyro.infer
import torch
from pyro.poutine.trace_struct import Trace

from pyro_vae.infer import sites
from pyro_vae.infer.base import OBJECTIVES, Fn, Objective, QuietGuess, Terms, as_tensor

__all__ = ["EnumELBO", "labelled_log_q"]


@OBJECTIVES.register("elbo-enum")
class EnumELBO(QuietGuess, Objective, pyro.infer.TraceEnum_ELBO):
    r"""The ELBO with enumerated discrete sites summed exactly: Pyro's ``TraceEnum_ELBO``.

    The value and gradient are ``TraceEnum_ELBO.differentiable_loss``'s, minus
    ``classifier_weight`` times :math:`\sum_{n\ \mathrm{labelled}} \log q(y_n|x_n)` when
    the guide has a classifier (``guide.class_logits``) and labels are passed as
    ``(x, y)`` with ``-1`` for hidden ones. ``last_terms`` holds the batch sums of the true
    ELBO's ``reconstruction`` (observed sites, averaged over the enumerated classes with
    their guide weights) and ``kl`` (reconstruction minus ELBO), without the classifier term.
    """

    def __init__(self, num_particles: int = 1, classifier_weight: float = 0.0) -> None:
        # a program without enumerated sites is scored too: its ELBO, as Trace_ELBO's
        super().__init__(
            num_particles=num_particles,
            vectorize_particles=False,
            strict_enumeration_warning=False,
        )
        if classifier_weight < 0:
            raise ValueError(f"classifier_weight must be >= 0, got {classifier_weight}")
        self.classifier_weight = float(classifier_weight)
        self.last_terms: Terms = {}

    def _get_traces(self, model: Fn, guide: Fn, args: Any, kwargs: Any) -> Iterator[Any]:
        # enumeration is what this class is for: Pyro's traces, no refusal
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Found plate statements in guide")
            yield from pyro.infer.TraceEnum_ELBO._get_traces(self, model, guide, args, kwargs)

    def differentiable_loss(self, model: Fn, guide: Fn, *args: Any, **kwargs: Any) -> torch.Tensor:
        from pyro.infer.traceenum_elbo import _compute_dice_elbo

        elbo: Any = 0.0
        recon: Any = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = elbo + _compute_dice_elbo(model_trace, guide_trace)
            recon = recon + expected_reconstruction(model_trace, guide_trace)
        p = self.num_particles
        elbo, recon = as_tensor(elbo) / p, as_tensor(recon) / p
        self.last_terms = {"reconstruction": recon.detach(), "kl": (recon - elbo).detach()}
        loss = -elbo
        if self.classifier_weight and len(args) > 1 and hasattr(guide, "class_logits"):
            loss = loss - self.classifier_weight * labelled_log_q(guide, args[0], args[1])
        return loss


def expected_reconstruction(model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
    r""":math:`\sum_n \sum_y q(y|x_n) \log p(x_n|y, z)` of one draw, detached.

    The weights are the guide's probabilities of the enumerated configurations (the
    product over its enumerated sites), broadcast against each observed site's log density.
    """
    log_w: Any = 0.0
    for _, site in sites.enumerated_sites(guide_trace):
        log_w = log_w + site["log_prob"].detach()
    total: Any = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            lp = site["log_prob"].detach()
            total = total + (torch.exp(as_tensor(log_w)) * lp).sum()
    return as_tensor(total)


def labelled_log_q(guide: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    r""":math:`\sum_{n:\,y_n \ge 0} \log q(y_n|x_n)` of the guide's classifier, with gradient."""
    if y is None:
        return torch.zeros((), device=x.device)
    log_q = guide.class_logits(x).log_softmax(-1)  # (N, C)
    known = y >= 0
    picked = log_q.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N,)
    return torch.where(known, picked, 0.0).sum()
