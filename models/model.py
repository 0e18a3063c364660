"""The generative model p(x|z) p(z) as a Pyro program."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from torch import nn
from torch.nn import functional as F

from pyro_vae.nn import MLP
from pyro_vae.structure import (
    check_data_shape,
    check_labels,
    latent_site_names,
    one_hot,
    unique_name,
)

from .likelihoods import Likelihood
from .priors import Prior

__all__ = ["ConditionalNormal", "Model"]


class ConditionalNormal(nn.Module):
    r"""A stochastic layer, :math:`p(z_l|z_{l+1}) = \mathcal{N}(z_l; \mu(z_{l+1}),
    \mathrm{diag}\,\sigma(z_{l+1})^2)`.

    An MLP maps the layer above to :math:`\mu` and :math:`\sigma = \mathrm{softplus}(\cdot)
    + \sigma_{\min}`. The IWAE paper's two-layer model uses widths (100, 100) and tanh
    between z2 (50) and z1 (100); Burda, Grosse & Salakhutdinov (2015), sec. 5.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        act: str,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        self.out_dim, self.min_scale = out_dim, min_scale
        self.net = MLP((in_dim,), (*hidden, 2 * out_dim), act)

    def forward(self, z: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = self.net(z).chunk(2, dim=-1)  # (..., out_dim) each
        return dist.Normal(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)


class Model(nn.Module):
    r"""The generative model :math:`p_\theta(x, z) = p(z)\, p_\theta(x \mid z)`.

    Calling ``model(x)`` runs the Pyro program: under a plate ``"data"`` over the rows of
    ``x``, the latent site ``"z"`` is drawn from the prior and the site ``"x"`` observes
    ``x`` under the likelihood of the decoded ``z``. The joint is unscaled: its log density
    is the sum over the rows. ``model(None, batch_size=n)`` draws ``n`` new data points.

    With ``layers`` (``layers[l-1]`` is :math:`p(z_l|z_{l+1})`) the model is the top-down
    hierarchy :math:`p(z_L) \prod_l p(z_l|z_{l+1})\, p(x|z_1)` of Burda et al. (2015,
    sec. 5), sites ``"zL"``, ..., ``"z1"``, ``"x"``; the prior is the density of the top
    layer. With ``num_classes > 0`` the decoder reads :math:`[z_1, \mathrm{onehot}(y)]`,
    :math:`p(x|z, y)` (Kingma et al. 2014, model M2; Sohn, Lee & Yan 2015), and
    ``model(x, y)`` takes int64 labels.

    With ``semi_supervised`` it is M2 of Kingma et al. (2014),
    :math:`p(x|y,z)\,p(y)\,p(z)` with a uniform :math:`p(y)`: the class is the latent site
    ``"y"`` of every point, whose value the guide supplies (enumerated over the classes
    where the label is hidden, pinned to the label where it is known); ``model(x, y)``
    takes labels with ``-1`` for hidden ones, or ``y=None`` for none at all.

    The networks are registered with ``pyro.module`` under a name unique to this instance,
    so ``pyro.infer.SVI`` sees them as ``param`` sites and two models never share entries
    of Pyro's global param store.
    """

    def __init__(
        self,
        prior: Prior,
        decoder: nn.Module,
        likelihood: Likelihood,
        *,
        layers: Sequence[ConditionalNormal] = (),
        num_classes: int = 0,
        data_shape: tuple[int, ...] | None = None,
        semi_supervised: bool = False,
    ) -> None:
        super().__init__()
        self.semi_supervised = semi_supervised
        self.data_shape = data_shape  # checked at every call; None: the decoder decides
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.layers = nn.ModuleList(layers)
        self.num_classes = num_classes
        self.site_names = latent_site_names(1 + len(layers))
        self.pyro_name = unique_name(self, "model")

    def prior_logits(self) -> torch.Tensor:
        """The logits ``(C,)`` of the uniform class prior p(y) = 1/C of M2."""
        param = next(self.decoder.parameters())
        return torch.zeros(self.num_classes, dtype=param.dtype, device=param.device)

    def decoder_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The bottom latent, with the one-hot label appended for a conditional model."""
        if not self.num_classes or y is None:
            return z  # (..., L1)
        label = one_hot(y, self.num_classes, z.dtype)  # (..., C); y may be enumerated
        shape = torch.broadcast_shapes(z.shape[:-1], label.shape[:-1])
        return torch.cat([z.expand(*shape, -1), label.expand(*shape, -1)], dim=-1)  # (..., L1 + C)

    def forward(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        pyro.module(self.pyro_name, self)
        n = x.shape[0] if x is not None else y.shape[0] if y is not None else batch_size
        if n is None:
            raise ValueError("model needs data x, or batch_size to draw new data")
        check_labels(y, n, self.num_classes, optional=self.semi_supervised)
        if x is not None:
            check_data_shape(x, self.data_shape)
            if is_validation_enabled():  # off in the training loop (checked once)
                self.likelihood.check_support(x)  # SupportError with advice, not torch's dump
        with pyro.plate("data", n):
            if self.semi_supervised:  # p(y) uniform; the guide supplies y (see Guide)
                y = pyro.sample("y", dist.Categorical(logits=self.prior_logits()))  # (N,)
            z = pyro.sample(self.site_names[-1], self.prior())  # (N, L_top)
            for name, layer in zip(
                reversed(self.site_names[:-1]), reversed(self.layers), strict=True
            ):
                z = pyro.sample(name, layer(z))  # (N, L_l)
            raw = self.decoder(self.decoder_input(z, y))  # (N, P * D)
            return pyro.sample("x", self.likelihood(raw), obs=x)  # (N, *data_shape)
