r"""Distributions behind some likelihoods that torch and Pyro lack or compute loosely.

- :class:`ContinuousBernoulli`, parameterized by logits, with a log-normalizer and a mean
  that stay exact for every logit (torch's version clamps the probabilities, which caps its
  log-normalizer near :math:`\log 40` for logits beyond about :math:`\pm 17`, and switches
  to a Taylor series only inside :math:`\lambda \in (0.499, 0.501)`).
- :class:`DiscretizedLogistic`, a logistic density integrated over the bins of an 8-bit
  grid on [0, 1] (Salimans et al. 2017).
- :class:`QuantizedCategorical`, a categorical over the same grid whose values are the grid
  points themselves, so it scores image data in [0, 1] directly.

All three work in float32 and float64, broadcast a value against their batch shape, and
have an exact ``mean``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.nn import functional as F

__all__ = ["ContinuousBernoulli", "DiscretizedLogistic", "QuantizedCategorical", "grid"]

# Below these |logit| values the closed forms lose digits to cancellation (or divide 0 by 0),
# and the Taylor series about 0 take over; their next terms are below 1e-12 there.
_SMALL_NORM = 1e-4
_SMALL_MEAN = 1e-1
_SMALL_ICDF = 1e-4


class _Grid(constraints.Constraint):
    """Values ``k / (bins - 1)`` for ``k = 0, ..., bins - 1`` (up to float rounding)."""

    is_discrete = True
    event_dim = 0

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def check(self, value: torch.Tensor) -> torch.Tensor:
        scaled = value * (self.bins - 1)
        return (value >= 0) & (value <= 1) & ((scaled - scaled.round()).abs() <= 1e-3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins={self.bins})"


def grid(bins: int) -> _Grid:
    """The support constraint of data quantized to ``bins`` levels on [0, 1]."""
    return _Grid(bins)


def _index(value: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index ``k = round(value * (bins - 1))`` of grid values, as int64."""
    return (value * (bins - 1)).round().clamp(0, bins - 1).long()


class ContinuousBernoulli(TorchDistribution):
    r"""Continuous Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham 2019), by logits.

    .. math::
        p(x \mid \lambda) = C(\lambda)\, \lambda^x (1-\lambda)^{1-x}, \qquad
        C(\lambda) = \frac{2\,\operatorname{artanh}(1 - 2\lambda)}{1 - 2\lambda},
        \quad C(\tfrac12) = 2,

    with :math:`\lambda = \sigma(\eta)`. In the logit :math:`\eta` everything is stable:
    :math:`\log p(x) = x\eta - \operatorname{softplus}(\eta) + \log C`,
    :math:`C = \eta / \tanh(\eta/2)`, and
    :math:`\mathbb{E}[x] = 1/(1 - e^{-\eta}) - 1/\eta`; near :math:`\eta = 0` the series
    :math:`\log C = \log 2 + \eta^2/12 - \dots` and
    :math:`\mathbb{E}[x] = \tfrac12 + \eta/12 - \eta^3/720 + \eta^5/30240 - \dots` are used
    instead.
    Sampling inverts the CDF, :math:`x = \log(1 + u (e^\eta - 1)) / \eta`, so it is
    reparameterized.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        self.logits = logits
        super().__init__(logits.shape, validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> ContinuousBernoulli:
        new = self._get_checked_instance(ContinuousBernoulli, _instance)
        new.logits = self.logits.expand(torch.Size(batch_shape))
        super(ContinuousBernoulli, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_normalizer(self) -> torch.Tensor:
        r""":math:`\log C(\lambda)`, symmetric in the logit; ``log 2`` at logit 0."""
        a = self.logits.abs()
        small = a < _SMALL_NORM
        a_safe = torch.where(small, torch.ones_like(a), a)
        exact = torch.log(a_safe / -torch.expm1(-a_safe)) + F.softplus(-a_safe)
        return torch.where(small, math.log(2.0) + a * a / 12, exact)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        eta = self.logits
        softplus = eta.clamp(min=0) + torch.log1p(torch.exp(-eta.abs()))  # exact for all eta
        return value * eta - softplus + self.log_normalizer()

    @property
    def mean(self) -> torch.Tensor:
        eta = self.logits
        small = eta.abs() < _SMALL_MEAN
        safe = torch.where(small, torch.ones_like(eta), eta)
        exact = 1 / -torch.expm1(-safe) - 1 / safe
        series = 0.5 + eta / 12 - eta**3 / 720 + eta**5 / 30240 - eta**7 / 1209600
        return torch.where(small, series, exact)

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        eta = self.logits.expand(shape)
        a = eta.abs()
        v = torch.where(eta >= 0, u, 1 - u)  # X(eta) = 1 - X(-eta) with u -> 1 - u
        small = a < _SMALL_ICDF
        a_safe = torch.where(small, torch.ones_like(a), a)
        # for a > 0: x = 1 + log1p((1 - v) expm1(-a)) / a, the CDF inverted without overflow
        pos = torch.where(
            small, v + a * v * (1 - v) / 2, 1 + torch.log1p((1 - v) * torch.expm1(-a_safe)) / a_safe
        )
        return torch.where(eta >= 0, pos, 1 - pos).clamp(0, 1)


class DiscretizedLogistic(TorchDistribution):
    r"""Logistic density integrated over the bins of a grid on [0, 1] (Salimans et al. 2017).

    Data take the values :math:`x = k/(B-1)`, :math:`k = 0, \dots, B-1` (:math:`B = 256`
    for 8-bit images). Bin :math:`k` covers :math:`[x - h, x + h)`, :math:`h = 1/(2(B-1))`,
    and the two edge bins extend to :math:`\pm\infty`, so the probabilities sum to one:

    .. math::
        P(x) = \begin{cases}
            \sigma\!\left(\frac{x + h - \mu}{s}\right) & x = 0 \\
            \sigma\!\left(\frac{x + h - \mu}{s}\right) - \sigma\!\left(\frac{x - h - \mu}{s}\right)
                & 0 < x < 1 \\
            1 - \sigma\!\left(\frac{x - h - \mu}{s}\right) & x = 1.
        \end{cases}

    The difference is taken in log space without cancellation through the identity
    :math:`\sigma(b) - \sigma(a) = \sigma(b)\,\sigma(-a)\,(1 - e^{a-b})`, so no branch on the
    size of the difference is needed (PixelCNN++ switches to the density at the bin centre).
    The mean is exact: :math:`\mathbb{E}[x] = \frac{1}{B-1}\sum_{k=1}^{B-1}
    \sigma\!\left(\frac{\mu - (k - \frac12)/(B-1)}{s}\right)`, a sum of tail probabilities.
    Samples are a logistic draw rounded to the nearest grid point and clamped to [0, 1].
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        bins: int = 256,
        validate_args: bool | None = None,
    ) -> None:
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.bins = bins
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return _Grid(self.bins)

    def expand(self, batch_shape: Any, _instance: Any = None) -> DiscretizedLogistic:
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        shape = torch.Size(batch_shape)
        new.loc, new.scale, new.bins = self.loc.expand(shape), self.scale.expand(shape), self.bins
        super(DiscretizedLogistic, new).__init__(shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k = _index(value, self.bins)
        x = k.to(self.loc.dtype) / (self.bins - 1)  # the grid point, exact
        half = 0.5 / (self.bins - 1)
        lower = (x - half - self.loc) / self.scale  # a: standardized lower edge
        upper = (x + half - self.loc) / self.scale  # b: standardized upper edge
        first, last = k == 0, k == self.bins - 1
        zero = torch.zeros((), dtype=self.loc.dtype, device=self.loc.device)
        width = torch.log(-torch.expm1(-2 * half / self.scale))  # log(1 - e^{a - b})
        return (
            torch.where(last, zero, F.logsigmoid(upper))
            + torch.where(first, zero, F.logsigmoid(-lower))
            + torch.where(first | last, zero, width)
        )

    @property
    def mean(self) -> torch.Tensor:
        total = torch.zeros_like(self.loc)
        for k in range(1, self.bins):  # one pass per threshold keeps memory at batch size
            threshold = (k - 0.5) / (self.bins - 1)
            total = total + torch.sigmoid((self.loc - threshold) / self.scale)
        return total / (self.bins - 1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))  # logistic draw
            k = (y * (self.bins - 1)).round().clamp(0, self.bins - 1)
            return k / (self.bins - 1)


class QuantizedCategorical(TorchDistribution):
    r"""A categorical over the grid :math:`x = k/(B-1)`, scored at the grid values.

    :math:`P(x = k/(B-1)) = \operatorname{softmax}(\ell)_k` for logits
    :math:`\ell \in \mathbb{R}^B` per dimension (PixelRNN's 256-way softmax, van den Oord,
    Kalchbrenner & Kavukcuoglu 2016). ``logits`` has shape ``(*batch, B)``; values are
    floats on the grid, so data in [0, 1] need no conversion to class indices.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "logits": constraints.real_vector
    }

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        self.logits = logits
        self.bins = logits.shape[-1]
        super().__init__(logits.shape[:-1], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return _Grid(self.bins)

    def expand(self, batch_shape: Any, _instance: Any = None) -> QuantizedCategorical:
        new = self._get_checked_instance(QuantizedCategorical, _instance)
        shape = torch.Size(batch_shape)
        new.logits, new.bins = self.logits.expand(*shape, self.bins), self.bins
        super(QuantizedCategorical, new).__init__(shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k = _index(value, self.bins)
        log_p = self.logits.log_softmax(-1)  # (*batch, B)
        shape = torch.broadcast_shapes(k.shape, log_p.shape[:-1])
        picked = log_p.expand(*shape, self.bins).gather(-1, k.expand(shape).unsqueeze(-1))
        return picked.squeeze(-1)

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.linspace(0, 1, self.bins, dtype=self.logits.dtype, device=self.logits.device)
        return (self.logits.softmax(-1) * levels).sum(-1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits).sample(shape)
            return k.to(self.logits.dtype) / (self.bins - 1)
