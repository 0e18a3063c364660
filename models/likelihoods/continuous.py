"""Likelihoods of continuous data: the continuous Bernoulli and the Beta for values in [0, 1],
Normal with a learned or decoded scale, and Laplace for real values.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ..likelihood_dists import ContinuousBernoulli
from .base import (
    LIKELIHOODS,
    Likelihood,
    _check_range,
    _LearnedScale,
    _positive,
)

# --------------------------------------------------------------------------- continuous data


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    r"""Continuous Bernoulli for data in [0, 1] (Loaiza-Ganem & Cunningham 2019).

    :math:`p(x|z) = \prod_d C(\lambda_d)\,\lambda_d^{x_d}(1-\lambda_d)^{1-x_d}` with
    :math:`\lambda = \sigma(\ell)` from the decoder's logits and the normalizer
    :math:`C(\lambda) = 2\operatorname{artanh}(1-2\lambda)/(1-2\lambda)` that the plain
    Bernoulli "likelihood" of grey pixels leaves out. The mean
    :math:`\lambda/(2\lambda-1) + 1/(2\operatorname{artanh}(1-2\lambda))` (not
    :math:`\lambda`) is what ``sample``/``reconstruct`` show. Data: floats in [0, 1], e.g.
    grey images with ``--binarize none``. The log-normalizer is computed in the logit, exact
    for every logit (see :class:`~pyro_vae.models.likelihood_dists.ContinuousBernoulli`).
    """

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split(raw)  # (..., *data_shape)
        return ContinuousBernoulli(logits).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        _check_range(
            x,
            "continuous Bernoulli",
            0.0,
            1.0,
            "Rescale the data into [0, 1] (e.g. divide 8-bit values by 255), or use a "
            "likelihood for real-valued data (VAEConfig(likelihood='normal-decoder') or "
            "VAEConfig(likelihood='laplace')).",
        )


@LIKELIHOODS.register("normal-learned")
class NormalLearnedScale(Likelihood):
    r"""Normal with one learned scale shared by all dimensions.

    :math:`p(x|z) = \prod_d \mathcal{N}(x_d; \mu_d(z), \sigma^2)`.
    The decoder gives the mean :math:`\mu`; :math:`\sigma = \operatorname{softplus}(\rho) +
    \sigma_{\min}` is a single learned scalar shared by all dimensions and data points,
    starting at ``init_scale`` and never below ``min_scale``. Data: any finite reals.
    Kingma & Welling (2014), appendix C.2, with the noise level learned by maximum likelihood.
    """

    def __init__(
        self, data_shape: tuple[int, ...], *, init_scale: float = 1.0, min_scale: float = 1e-3
    ) -> None:
        super().__init__(data_shape)
        self.scale = _LearnedScale(init_scale, min_scale)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split(raw)  # (..., *data_shape)
        return dist.Normal(loc, self.scale().to(loc.dtype)).to_event(len(self.data_shape))


@LIKELIHOODS.register("normal-decoder")
class NormalDecoderScale(Likelihood):
    r"""Normal with a per-dimension scale from the decoder.

    :math:`p(x|z) = \prod_d \mathcal{N}(x_d; \mu_d(z), \sigma_d(z)^2)`.
    The decoder gives two outputs per dimension, :math:`\mu` and :math:`\rho`, and
    :math:`\sigma = \operatorname{softplus}(\rho) + \sigma_{\min}` (``min_scale``), a floor
    that keeps the density bounded (without it the likelihood of data on a grid grows
    without limit as :math:`\sigma \to 0`). Data: any finite reals.
    Kingma & Welling (2014), appendix C.2.
    """

    num_params = 2

    def __init__(self, data_shape: tuple[int, ...], *, min_scale: float = 1e-3) -> None:
        super().__init__(data_shape)
        self.min_scale = _positive("min_scale", min_scale)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        loc, rho = self.split(raw)  # (..., *data_shape) each
        scale = F.softplus(rho) + self.min_scale  # (..., *data_shape)
        return dist.Normal(loc, scale).to_event(len(self.data_shape))


@LIKELIHOODS.register("laplace")
class Laplace(Likelihood):
    r"""Laplace with one learned scale shared by all dimensions.

    :math:`p(x|z) = \prod_d \frac{1}{2b} e^{-|x_d - \mu_d(z)|/b}`.
    The decoder gives the location :math:`\mu`; the scale :math:`b = \operatorname{softplus}
    (\rho) + b_{\min}` is one learned scalar (like ``normal-learned``), starting at
    ``init_scale``. The reconstruction term is then an L1 error with a learned temperature.
    Data: any finite reals. Laplace (1774); as a VAE likelihood e.g. Rybkin et al. (2021).
    """

    def __init__(
        self, data_shape: tuple[int, ...], *, init_scale: float = 1.0, min_scale: float = 1e-3
    ) -> None:
        super().__init__(data_shape)
        self.scale = _LearnedScale(init_scale, min_scale)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split(raw)  # (..., *data_shape)
        return dist.Laplace(loc, self.scale().to(loc.dtype)).to_event(len(self.data_shape))


@LIKELIHOODS.register("beta")
class Beta(Likelihood):
    r"""Beta for data in the open interval (0, 1), concentrations from the decoder.

    :math:`p(x|z) = \prod_d \mathrm{Beta}(x_d; \alpha_d, \beta_d)`,
    :math:`\mathrm{Beta}(x; \alpha, \beta) = x^{\alpha-1}(1-x)^{\beta-1} / B(\alpha, \beta)`.
    The decoder gives two outputs per dimension;
    :math:`\alpha = \operatorname{softplus}(\cdot) + c_{\min}`, :math:`\beta` likewise
    (``min_concentration``). The mean is :math:`\alpha / (\alpha + \beta)`.
    Data exactly 0 or 1 have density 0 or infinity and are refused: squeeze them into
    (0, 1) first, or use ``continuous-bernoulli``.
    Used for VAEs of grey images by e.g. Loaiza-Ganem & Cunningham (2019).
    """

    num_params = 2

    def __init__(self, data_shape: tuple[int, ...], *, min_concentration: float = 1e-2) -> None:
        super().__init__(data_shape)
        self.min_concentration = _positive("min_concentration", min_concentration)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        a, b = self.split(raw)  # (..., *data_shape) each
        alpha = F.softplus(a) + self.min_concentration
        beta = F.softplus(b) + self.min_concentration
        return dist.Beta(alpha, beta).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        _check_range(
            x,
            "Beta",
            0.0,
            1.0,
            "The Beta density lives on the open interval, so values 0 and 1 (black and "
            "white pixels, or binarized data: use TrainConfig(binarize='none')) cannot be "
            "scored. Squeeze the data first, x' = eps + (1 - 2 eps) x with e.g. eps = 1e-3 "
            "(save it as your own .npy and pass TrainConfig(dataset='FILE.npy')), or use "
            "VAEConfig(likelihood='continuous-bernoulli'), which accepts the closed interval "
            "[0, 1].",
            open_ends=True,
        )
