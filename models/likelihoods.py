"""Likelihoods p(x|z): modules mapping the decoder's raw output to a distribution over x.

A likelihood declares ``num_params``, the raw decoder outputs it needs per data dimension;
the decoder emits ``(..., num_params * D)`` with ``D = prod(data_shape)``. The returned
distribution has ``event_shape == data_shape`` and the decoder's leading dims as batch.

Each likelihood checks the support of data at the boundary (:meth:`Likelihood.check_support`),
once per data set rather than inside the training loop, and refuses data it cannot score with
a message that says what to do.

What data each likelihood expects (pyro-vae's image data sets are floats in [0, 1]):

==========================  ==========================================================
``bernoulli``               {0, 1} (binarized images: ``--binarize dynamic``)
``continuous-bernoulli``    [0, 1]
``beta``                    the open interval (0, 1)
``normal``, ``normal-*``,   any finite reals
``laplace``
``discretized-logistic``,   8-bit values k/255, k = 0..255 (``--binarize none``)
``categorical256``
``poisson``,                non-negative integers (stored as floats)
``negative-binomial``
==========================  ==========================================================

Every returned distribution has an exact ``.mean``, which ``VAE.sample`` and
``VAE.reconstruct`` show.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.checks import inverse_softplus, is_number
from pyro_vae.registry import Registry

from .likelihood_dists import ContinuousBernoulli, DiscretizedLogistic, QuantizedCategorical, grid

__all__ = [
    "BINS",
    "LIKELIHOODS",
    "Bernoulli",
    "BernoulliLogits",
    "Beta",
    "Categorical256",
    "ContinuousBernoulliLikelihood",
    "DiscretizedLogisticLikelihood",
    "Laplace",
    "Likelihood",
    "NegativeBinomial",
    "Normal",
    "NormalDecoderScale",
    "NormalLearnedScale",
    "Poisson",
    "SupportError",
]

BINS = 256  # levels of an 8-bit image


class SupportError(ValueError):
    """Data outside the support of the chosen likelihood."""


class Likelihood(nn.Module):
    """Base class: ``likelihood(raw) -> Distribution`` with event shape ``data_shape``.

    ``num_params`` is the number of decoder outputs per data dimension. ``binary_data``
    says the likelihood scores {0, 1} data only, so that ``binarize="auto"`` (the default)
    binarizes for it: a user's own Bernoulli-like likelihood sets it to ``True`` too.
    """

    num_params: int = 1
    binary_data: bool = False

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)

    def split(self, raw: torch.Tensor) -> list[torch.Tensor]:
        """Cut ``(..., P * D)`` into ``P`` tensors of shape ``(..., *data_shape)``."""
        batch = raw.shape[:-1]
        parts = raw.reshape(*batch, self.num_params, *self.data_shape)  # (..., P, *data_shape)
        return list(parts.unbind(len(batch)))

    def check_support(self, x: torch.Tensor) -> None:
        """Raise :class:`SupportError` if any value of ``x`` is outside the support."""
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise SupportError(
                f"the data hold {bad} NaN or infinite value(s); {type(self).__name__} needs "
                "finite values. Clean or impute the data before training."
            )

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover
        """:math:`p(x|z)` from the decoder's raw outputs ``raw`` of shape ``(..., P * D)``.

        ``P`` is :attr:`num_params` and ``D`` the number of data dimensions; the result has
        ``event_shape == data_shape`` and batch shape ``raw.shape[:-1]``.
        """
        raise NotImplementedError


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood", config_field="likelihood")


class BernoulliLogits(dist.Bernoulli):
    r"""Pyro's ``Bernoulli`` with a log-density that negates in place.

    :math:`\log p(x) = -\mathrm{BCE}(\ell, x)`, as torch computes it, but without allocating
    a second tensor of the broadcast shape for the minus sign: with ``k`` draws of ``z``
    per image the shape is ``(k, N, D)``, and that allocation cost a fifth of the IW
    evaluation (``benchmarks/README.md``, "Speed"). Values and gradients are bit-identical.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)  # views, no copies
        return F.binary_cross_entropy_with_logits(logits, value, reduction="none").neg_()


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    r"""Bernoulli, :math:`p(x|z) = \prod_d\! \sigma(\ell_d)^{x_d}(1-\sigma(\ell_d))^{1-x_d}`.

    The decoder gives the logits :math:`\ell`. Only for data in {0, 1}: for grey values use
    ``--binarize dynamic`` (x ~ Bernoulli(pixel) each epoch, Burda et al. 2015) or a
    continuous likelihood. Kingma & Welling (2014), appendix C.1.
    """

    binary_data = True

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split(raw)  # (..., *data_shape)
        return BernoulliLogits(logits=logits).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        binary = (x == 0) | (x == 1)
        if not bool(binary.all()):
            bad = int((~binary).sum())
            raise SupportError(
                f"the Bernoulli likelihood needs binary data (0 or 1), but {bad} of "
                f"{x.numel()} values are not (e.g. {float(x[~binary][0]):.4g}). Use "
                "TrainConfig(binarize='dynamic') to draw x ~ Bernoulli(pixel) every epoch, or "
                "a likelihood for continuous data (e.g. VAEConfig(likelihood='normal'))."
            )


@LIKELIHOODS.register("normal")
class Normal(Likelihood):
    r"""Normal with a fixed scale, :math:`p(x|z) = \prod_d \mathcal{N}(x_d; \mu_d(z), \sigma^2)`.

    The decoder gives the mean :math:`\mu`; ``scale`` (:math:`\sigma`, default 1) is fixed.
    With :math:`\sigma = 1` the log-likelihood is :math:`-\tfrac12\|x-\mu\|^2` up to a
    constant, the squared error of a plain autoencoder. Kingma & Welling (2014), C.2.
    """

    def __init__(self, data_shape: tuple[int, ...], *, scale: float = 1.0) -> None:
        super().__init__(data_shape)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.scale = scale

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split(raw)  # (..., *data_shape)
        return dist.Normal(loc, self.scale).to_event(len(self.data_shape))


# --------------------------------------------------------------------------- helpers


def _positive(name: str, value: float) -> float:
    if not is_number(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _example(x: torch.Tensor, bad: torch.Tensor) -> str:
    """How many values are bad, and the first one, for a support message."""
    return f"{int(bad.sum())} of {x.numel()} values are not (e.g. {float(x[bad][0]):.6g})"


def _check_range(
    x: torch.Tensor, name: str, low: float, high: float, advice: str, open_ends: bool = False
) -> None:
    inside = (x > low) & (x < high) if open_ends else (x >= low) & (x <= high)
    if not bool(inside.all()):
        interval = f"({low:g}, {high:g})" if open_ends else f"[{low:g}, {high:g}]"
        raise SupportError(
            f"the {name} likelihood needs data in {interval}, but {_example(x, ~inside)}. " + advice
        )


class _LearnedScale(nn.Module):
    r"""One learned positive scalar, :math:`\sigma = \operatorname{softplus}(\rho) + \sigma_{\min}`.

    :math:`\rho` is a parameter initialized so that :math:`\sigma` starts at ``init``; the
    floor keeps the density bounded whatever the optimizer does.
    """

    def __init__(self, init: float, floor: float) -> None:
        super().__init__()
        _positive("init_scale", init)
        _positive("min_scale", floor)
        if init <= floor:
            raise ValueError(f"init_scale must exceed min_scale ({floor}), got {init}")
        self.floor = floor
        self.raw = nn.Parameter(torch.tensor(inverse_softplus(init - floor)))

    def forward(self) -> torch.Tensor:
        return F.softplus(self.raw) + self.floor  # ()


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
