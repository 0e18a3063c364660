"""The amortized guide q(z|x) as a Pyro program."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.structure import (
    check_data_shape,
    check_labels,
    latent_site_names,
    one_hot,
    unique_name,
)

from .posteriors import Posterior

__all__ = ["PINNED_LOGIT", "Guide"]

# The logit a known label gives every other class: exp(-1e4) is 0 in float32 and float64,
# and the logit stays finite, so that 0 * log q is 0, not nan, in the enumerated sum.
PINNED_LOGIT = -1.0e4


class Guide(nn.Module):
    r"""The amortized guide :math:`q_\phi(z \mid x)`: an encoder and a posterior family.

    Calling ``guide(x)`` samples the latent site ``"z"`` under the plate ``"data"`` over the
    rows of ``x``, matching :class:`~pyro_vae.models.Model` site for site. It takes the same
    arguments as the model, as Pyro requires of a guide.

    With ``upper`` stages (an encoder and a family for each further layer) it is the
    bottom-up guide of Burda et al. (2015, sec. 5), :math:`q(z_1|x)\,q(z_2|z_1)\cdots`, with
    sites ``"z1"``, ``"z2"``, .... With ``num_classes > 0`` it is the conditional guide
    :math:`q(z|x, y)` (Sohn, Lee & Yan 2015): the one-hot label is appended to the
    encoder's features, and ``guide(x, y)`` takes int64 labels ``(N,)``.

    With a ``classifier`` (a network from x to ``num_classes`` logits) it is the guide of
    the semi-supervised model M2 (Kingma et al. 2014), :math:`q(y|x)\,q(z|x,y)`. The site
    ``"y"`` is marked ``infer={"enumerate": "parallel"}`` (what ``config_enumerate`` does):
    ``TraceEnum_ELBO`` sums it over the classes, weighted by :math:`q(y|x)`, instead of
    sampling it. A known label (``y[n] >= 0``) pins :math:`q(y|x_n)` to that class, so the
    point's ELBO is the labelled bound :math:`\mathcal{L}(x, y)`; a hidden one (``-1``,
    or ``y=None``) gives :math:`\mathcal{U}(x) = \sum_y q(y|x)\,\mathcal{L}(x, y)
    + \mathcal{H}(q(y|x))`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        posterior: Posterior,
        *,
        upper: Sequence[tuple[nn.Module, Posterior]] = (),
        num_classes: int = 0,
        data_shape: tuple[int, ...] | None = None,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.classifier = classifier  # x -> logits of q(y|x) (M2), or None
        self.data_shape = data_shape  # checked at every call; None: the encoder decides
        self.encoder = encoder
        self.posterior = posterior
        self.upper_encoders = nn.ModuleList(enc for enc, _ in upper)
        self.upper_posteriors = nn.ModuleList(post for _, post in upper)
        self.num_classes = num_classes
        self.site_names = latent_site_names(1 + len(upper))
        self.pyro_name = unique_name(self, "guide")

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The bottom stage's input to its family: encoder features, then one-hot y."""
        h = self.encoder(x)  # (N, H)
        if self.num_classes and y is not None:
            label = one_hot(y, self.num_classes, h.dtype)  # (..., N, C); y may be enumerated
            shape = torch.broadcast_shapes(h.shape[:-1], label.shape[:-1])
            h = torch.cat([h.expand(*shape, -1), label.expand(*shape, -1)], dim=-1)  # (..., H + C)
        return h

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``(N, C)`` of the classifier q(y|x) of M2."""
        if self.classifier is None:
            raise ValueError(
                "this guide has no classifier q(y|x): VAEConfig.semi_supervised is off"
            )
        return self.classifier(x)  # type: ignore[no-any-return]

    def label_logits(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """q(y|x)'s logits ``(N, C)``, pinned to the class where a label is known (``y >= 0``)."""
        logits = self.class_logits(x)  # (N, C)
        if y is None:
            return logits
        pinned = torch.where(one_hot(y, self.num_classes, torch.bool), 0.0, PINNED_LOGIT)
        return torch.where((y >= 0).unsqueeze(-1), pinned.to(logits.dtype), logits)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int | None = None
    ) -> torch.Tensor:
        pyro.module(self.pyro_name, self)
        check_data_shape(x, self.data_shape)
        semi = self.classifier is not None
        check_labels(y, x.shape[0], self.num_classes, optional=semi)
        with pyro.plate("data", x.shape[0]):
            if semi:  # M2: y summed over the classes by TraceEnum_ELBO
                q_y = dist.Categorical(logits=self.label_logits(x, y))
                y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})  # (N,) or (C, 1...)
            z = pyro.sample(self.site_names[0], self.posterior(self.features(x, y)))  # (N, L1)
            bottom = z
            for name, enc, post in zip(
                self.site_names[1:], self.upper_encoders, self.upper_posteriors, strict=True
            ):
                z = pyro.sample(name, post(enc(z)))  # (N, L_l)
        return bottom

    def posterior_at(self, u: torch.Tensor) -> dist.TorchDistribution:
        """The top stage's family q(z_top | u) at inputs ``u`` ``(M, ...)`` (no sampling).

        ``u`` lives where the top stage's input does: data space for one layer, the space
        of the layer below otherwise. For a conditional one-layer guide every ``u`` is paired
        with every label: the batch shape is then ``(M * C,)``, else ``(M,)``.
        """
        if self.upper_encoders:
            return self.upper_posteriors[-1](self.upper_encoders[-1](u))  # type: ignore[no-any-return]
        if not self.num_classes:
            return self.posterior(self.encoder(u))  # type: ignore[no-any-return]
        m, c = u.shape[0], self.num_classes
        labels = torch.arange(c, device=u.device).repeat(m)  # (M C,)
        return self.posterior(self.features(u.repeat_interleave(c, dim=0), labels))  # type: ignore[no-any-return]
