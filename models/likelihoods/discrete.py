"""Likelihoods of discrete data beyond {0, 1}: 8-bit images (the discretized logistic and
the 256-way categorical, data k/255) and counts (Poisson, negative binomial).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ..likelihood_dists import DiscretizedLogistic, QuantizedCategorical, grid
from .base import (
    BINS,
    LIKELIHOODS,
    Likelihood,
    SupportError,
    _check_range,
    _example,
    _positive,
)

# --------------------------------------------------------------------------- 8-bit images


def _check_8bit(x: torch.Tensor, name: str) -> None:
    advice = (
        "Pass 8-bit images scaled to [0, 1] (pixel / 255, as mnist and fashion-mnist are "
        "loaded) with TrainConfig(binarize='none'), or use a likelihood for continuous data "
        "in [0, 1] (VAEConfig(likelihood='continuous-bernoulli') or "
        "VAEConfig(likelihood='beta'))."
    )
    _check_range(x, name, 0.0, 1.0, advice)
    on_grid = grid(BINS).check(x)
    if not bool(on_grid.all()):
        raise SupportError(
            f"the {name} likelihood needs 8-bit data, values k/255 for integers k in 0..255, "
            f"but {_example(x, ~on_grid)}; e.g. the digits data set has 17 grey levels k/16. "
            + advice
        )


@LIKELIHOODS.register("discretized-logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    r"""Discretized logistic for 8-bit images on [0, 1] (Salimans et al. 2017, PixelCNN++).

    Each pixel value :math:`x = k/255` gets the mass of a logistic density
    :math:`\mathrm{Logistic}(\mu, s)` on its bin :math:`[x - \frac{1}{510}, x + \frac{1}{510})`,
    with the edge bins :math:`x = 0` and :math:`x = 1` extended to :math:`\mp\infty`:
    :math:`P(x) = \sigma(\frac{x + 1/510 - \mu}{s}) - \sigma(\frac{x - 1/510 - \mu}{s})`.
    The decoder gives :math:`\mu` and :math:`\rho` per pixel, :math:`s =
    \operatorname{softplus}(\rho) + s_{\min}`. One logistic per pixel, not PixelCNN++'s
    mixture. ``.mean`` is the exact mean of the discrete distribution, a sum over the 255
    bin edges. Data: values k/255 (use ``--binarize none``). It scores the
    probabilities of discrete values, so its NLL compares with ``categorical256`` on the
    same data but not with densities (``normal``, ``beta``, ...).
    """

    num_params = 2

    def __init__(self, data_shape: tuple[int, ...], *, min_scale: float = 1e-3) -> None:
        super().__init__(data_shape)
        self.min_scale = _positive("min_scale", min_scale)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        loc, rho = self.split(raw)  # (..., *data_shape) each
        scale = F.softplus(rho) + self.min_scale
        return DiscretizedLogistic(loc, scale, bins=BINS).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        _check_8bit(x, "discretized logistic")


@LIKELIHOODS.register("categorical256")
class Categorical256(Likelihood):
    r"""256-way categorical per pixel for 8-bit images on [0, 1] (van den Oord et al. 2016).

    :math:`P(x_d = k/255 \mid z) = \operatorname{softmax}(\ell_d)_k`, with 256 logits per
    pixel from the decoder (``num_params = 256``; the decoder's output is laid out as
    256 blocks of ``D``, as :meth:`Likelihood.split` cuts it). No order between the levels
    is assumed. The mean :math:`\sum_k \frac{k}{255} P(k)` is what ``sample``/``reconstruct``
    show. Data: values k/255 (use ``--binarize none``). PixelRNN, van den Oord,
    Kalchbrenner & Kavukcuoglu (2016).
    """

    num_params = BINS

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        logits = torch.stack(self.split(raw), dim=-1)  # (..., *data_shape, 256)
        return QuantizedCategorical(logits).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        _check_8bit(x, "categorical256")


# --------------------------------------------------------------------------- counts


def _check_counts(x: torch.Tensor, name: str) -> None:
    counts = (x >= 0) & (x == x.round())
    if not bool(counts.all()):
        raise SupportError(
            f"the {name} likelihood needs counts (non-negative integers, stored as floats), "
            f"but {_example(x, ~counts)}. Pass the raw counts (not normalized or "
            "log-transformed values), with TrainConfig(binarize='none'); for intensities in "
            "[0, 1] use VAEConfig(likelihood='continuous-bernoulli') or "
            "VAEConfig(likelihood='bernoulli')."
        )


@LIKELIHOODS.register("poisson")
class Poisson(Likelihood):
    r"""Poisson for counts, :math:`p(x|z) = \prod_d \lambda_d^{x_d} e^{-\lambda_d} / x_d!`.

    The decoder gives :math:`\rho`; the rate is :math:`\lambda = \operatorname{softplus}(\rho)
    + \lambda_{\min}` (``min_rate``), which grows linearly rather than exponentially and so
    cannot overflow. Data: non-negative integers (as floats). The mean is :math:`\lambda`.
    E.g. Poisson VAEs of spike counts and word counts; Kingma & Welling (2014) for the VAE.
    """

    def __init__(self, data_shape: tuple[int, ...], *, min_rate: float = 1e-6) -> None:
        super().__init__(data_shape)
        self.min_rate = _positive("min_rate", min_rate)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (rho,) = self.split(raw)  # (..., *data_shape)
        rate = F.softplus(rho) + self.min_rate
        return dist.Poisson(rate).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        _check_counts(x, "Poisson")


@LIKELIHOODS.register("negative-binomial")
class NegativeBinomial(Likelihood):
    r"""Negative binomial for overdispersed counts, by mean :math:`m` and total count :math:`r`.

    .. math::
        p(x|z) = \prod_d \frac{\Gamma(x_d + r_d)}{x_d!\,\Gamma(r_d)}
            \Big(\frac{r_d}{r_d + m_d}\Big)^{r_d} \Big(\frac{m_d}{r_d + m_d}\Big)^{x_d},

    mean :math:`m`, variance :math:`m + m^2/r` (:math:`r \to \infty` is the Poisson). The
    decoder gives two outputs per dimension; :math:`m = \operatorname{softplus}(\cdot) +
    m_{\min}` and :math:`r = \operatorname{softplus}(\cdot) + r_{\min}`. In torch's terms
    this is ``NegativeBinomial(total_count=r, logits=log m - log r)``; in scipy's,
    ``nbinom(n=r, p=r/(r+m))``. Data: non-negative integers (as floats).
    The mean/dispersion form of scVI, Lopez et al. (2018).
    """

    num_params = 2

    def __init__(
        self,
        data_shape: tuple[int, ...],
        *,
        min_mean: float = 1e-6,
        min_total_count: float = 1e-3,
    ) -> None:
        super().__init__(data_shape)
        self.min_mean = _positive("min_mean", min_mean)
        self.min_total_count = _positive("min_total_count", min_total_count)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        a, b = self.split(raw)  # (..., *data_shape) each
        mean = F.softplus(a) + self.min_mean
        total = F.softplus(b) + self.min_total_count
        logits = torch.log(mean) - torch.log(total)  # log of p / (1 - p) in torch's terms
        return dist.NegativeBinomial(total_count=total, logits=logits).to_event(
            len(self.data_shape)
        )

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        _check_counts(x, "negative binomial")
