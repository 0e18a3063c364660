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
    ) -> None:
        super().__init__()
        self.data_shape = data_shape  # checked at every call; None: the decoder decides
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.layers = nn.ModuleList(layers)
        self.num_classes = num_classes
        self.site_names = latent_site_names(1 + len(layers))
        self.pyro_name = unique_name(self, "model")

    def decoder_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The bottom latent, with the one-hot label appended for a conditional model."""
        if not self.num_classes or y is None:
            return z  # (..., L1)
        label = one_hot(y, self.num_classes, z.dtype).expand(*z.shape[:-1], -1)  # (..., C)
        return torch.cat([z, label], dim=-1)  # (..., L1 + C)

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
        check_labels(y, n, self.num_classes)
        if x is not None:
            check_data_shape(x, self.data_shape)
            if is_validation_enabled():  # off in the training loop (checked once)
                self.likelihood.check_support(x)  # SupportError with advice, not torch's dump
        with pyro.plate("data", n):
            z = pyro.sample(self.site_names[-1], self.prior())  # (N, L_top)
            for name, layer in zip(
                reversed(self.site_names[:-1]), reversed(self.layers), strict=True
            ):
                z = pyro.sample(name, layer(z))  # (N, L_l)
            raw = self.decoder(self.decoder_input(z, y))  # (N, P * D)
            return pyro.sample("x", self.likelihood(raw), obs=x)  # (N, *data_shape)
