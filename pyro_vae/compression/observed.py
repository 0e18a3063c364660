r"""The observed side of bits-back coding: x as integer symbols under p(x|z).

A discrete likelihood gives every value x can take a probability; a continuous one gives a
density, which is not a code (a density assigns no bits to a value; a code needs a
probability mass over a countable alphabet). This module maps data to symbols and back,
exactly, and builds the per-dimension probability tables constriction codes with, from the
same distributions the model scores (``models/likelihoods.py``), in float64:

=========================  ===================  =========================================
likelihood                 symbols              table per dimension
=========================  ===================  =========================================
``bernoulli``              0, 1                 :math:`\sigma(\ell)` (constriction Bernoulli)
``categorical256``         k = 255 x            :math:`\mathrm{softmax}(\ell)`, 256 entries
``discretized-logistic``   k = 255 x            logistic CDF differences at
                                                :math:`(k \pm \frac12)/255`, tails folded in
``poisson``                counts 0..M          pmf of 0..M-1, :math:`P(X \ge M)` on M
``negative-binomial``      counts 0..M          pmf of 0..M-1, :math:`P(X \ge M)` on M
=========================  ===================  =========================================

``M`` is the largest count in the data, recorded in the container, so the alphabet is
finite and every count in the data has a symbol.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from scipy.special import betainc, expit, gammaln, pdtrc

from pyro_vae.models.likelihoods import (
    Bernoulli,
    Categorical256,
    DiscretizedLogisticLikelihood,
    Likelihood,
    NegativeBinomial,
    Poisson,
)

__all__ = ["CODED_LIKELIHOODS", "ObservedCode", "observed_code"]

# what the coder accepts, by registry name: the message for a refused likelihood lists them
CODED_LIKELIHOODS = ("bernoulli", "categorical256", "discretized-logistic", "poisson",
                     "negative-binomial")  # fmt: skip
_LEVELS = 255  # 8-bit data: x = k / 255


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().to("cpu", torch.float64).numpy()).reshape(-1)


def _f64t(t: torch.Tensor) -> torch.Tensor:
    """A flat float64 CPU copy of ``t`` (one row per data dimension)."""
    return t.detach().to("cpu", torch.float64).reshape(-1, 1)


class ObservedCode:
    """Symbols of one likelihood's data and their tables under p(x|z).

    ``max_symbol`` is the largest symbol (1 for binary data, 255 for 8-bit, the largest
    count for counts). Subclasses define :meth:`tables`.
    """

    name = ""
    scale = 1  # float data are symbols / scale
    bernoulli = False  # coded with constriction's Bernoulli instead of a categorical table

    def __init__(self, max_symbol: int) -> None:
        import constriction

        self.max_symbol = max_symbol
        model = constriction.stream.model
        self.family = (
            model.Bernoulli(perfect=False) if self.bernoulli else model.Categorical(perfect=False)
        )

    # ------------------------------------------------------------------ data <-> symbols

    def to_symbols(self, x: np.ndarray) -> np.ndarray:
        """int64 symbols of ``x``, or ``ValueError`` if a value has none (the exact check)."""
        with np.errstate(invalid="ignore", over="ignore"):
            sym = (
                np.rint(x * self.scale).astype(np.int64)
                if x.dtype.kind == "f"
                else x.astype(np.int64)
            )
        bad = (sym < 0) | (sym > self.max_symbol) | (self.to_values(sym, x.dtype) != x)
        if bad.any():
            raise ValueError(
                f"x holds {int(bad.sum())} value(s) that the {self.name} likelihood cannot code "
                f"exactly (e.g. {x[bad].flat[0]!r}); it codes {self.alphabet()}."
            )
        return sym

    def to_values(self, sym: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """The data values of ``sym`` in ``dtype``: the inverse of :meth:`to_symbols`."""
        return sym.astype(dtype)

    def model_input(self, sym: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """What the encoder reads for these symbols, as training fed it (float)."""
        return torch.from_numpy(self.to_values(sym, np.dtype(np.float32))).to(dtype)

    def alphabet(self) -> str:
        """The values this likelihood codes, in words."""
        return f"the integers 0..{self.max_symbol}"

    # ------------------------------------------------------------------ coding

    def tables(self, base: dist.TorchDistribution) -> np.ndarray:  # pragma: no cover
        """Per-dimension probabilities (D, max_symbol + 1), or (D,) for Bernoulli, float64."""
        raise NotImplementedError

    def encode(self, coder: Any, sym: np.ndarray, base: dist.TorchDistribution) -> None:
        """Push one point's symbols (flat, D) under p(x|z) = ``base``."""
        coder.encode_reverse(sym.astype(np.int32), self.family, self.tables(base))

    def decode(self, coder: Any, base: dist.TorchDistribution) -> np.ndarray:
        """Pop one point's symbols (flat, D) under p(x|z) = ``base``."""
        return np.asarray(coder.decode(self.family, self.tables(base)), dtype=np.int64)


class _Binary(ObservedCode):
    name = "bernoulli"
    bernoulli = True

    def alphabet(self) -> str:
        return "0 and 1"

    def tables(self, base: dist.TorchDistribution) -> np.ndarray:
        return np.asarray(expit(_f64(base.logits)))


class _EightBit(ObservedCode):
    """x = k / 255 as floats (k itself for integer arrays)."""

    scale = _LEVELS

    def to_values(self, sym: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if np.dtype(dtype).kind != "f":
            return sym.astype(dtype)
        return sym.astype(dtype) / np.dtype(dtype).type(_LEVELS)

    def alphabet(self) -> str:
        return (
            "8-bit values: k/255 for k = 0..255 as floats (exactly k/255 in their dtype), "
            "or the integers 0..255"
        )


class _Categorical256(_EightBit):
    name = "categorical256"

    def tables(self, base: dist.TorchDistribution) -> np.ndarray:
        logits = base.logits.detach().to("cpu", torch.float64)
        return logits.reshape(-1, logits.shape[-1]).softmax(-1).numpy()


class _DiscretizedLogistic(_EightBit):
    """Bin k is [(k - 1/2)/255, (k + 1/2)/255) with the tails folded into bins 0 and 255."""

    name = "discretized-logistic"
    inner = (torch.arange(_LEVELS, dtype=torch.float64) + 0.5) / _LEVELS  # (255,) edges

    def tables(self, base: dist.TorchDistribution) -> np.ndarray:
        loc, scale = _f64t(base.loc), _f64t(base.scale)  # (D, 1) each
        cdf = torch.sigmoid((self.inner - loc) / scale)  # (D, 255)
        ends = torch.ones(len(cdf), 1, dtype=torch.float64)
        cdf = torch.cat([ends - 1, cdf, ends], dim=1)  # (D, 257)
        return (cdf[:, 1:] - cdf[:, :-1]).numpy()  # (D, 256): absolute error ~1e-16


class _Counts(ObservedCode):
    def _pmf(self, k: np.ndarray, base: dist.TorchDistribution) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _tail(self, m: int, base: dist.TorchDistribution) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def tables(self, base: dist.TorchDistribution) -> np.ndarray:
        m = self.max_symbol
        k = np.arange(m, dtype=np.float64)[None, :]  # 0..M-1
        return np.concatenate([self._pmf(k, base), self._tail(m, base)[:, None]], axis=1)


class _Poisson(_Counts):
    name = "poisson"

    def _pmf(self, k: np.ndarray, base: dist.TorchDistribution) -> np.ndarray:
        rate = _f64(base.rate)[:, None]
        return np.exp(k * np.log(rate) - rate - gammaln(k + 1))

    def _tail(self, m: int, base: dist.TorchDistribution) -> np.ndarray:
        return np.asarray(pdtrc(m - 1, _f64(base.rate)))  # P(X >= m)


class _NegativeBinomial(_Counts):
    """torch's NegativeBinomial(total_count=r, logits): pmf C(k+r-1, k) (1-p)^r p^k."""

    name = "negative-binomial"

    def _pmf(self, k: np.ndarray, base: dist.TorchDistribution) -> np.ndarray:
        r, logits = _f64(base.total_count)[:, None], _f64(base.logits)[:, None]
        log_p, log_q = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
        return np.exp(gammaln(k + r) - gammaln(r) - gammaln(k + 1) + r * log_q + k * log_p)

    def _tail(self, m: int, base: dist.TorchDistribution) -> np.ndarray:
        r, p = _f64(base.total_count), expit(_f64(base.logits))
        return np.asarray(betainc(m, r, p))  # P(X >= m) = I_p(m, r)


_CODES: tuple[tuple[type[Likelihood], type[ObservedCode]], ...] = (
    (Bernoulli, _Binary),
    (Categorical256, _Categorical256),
    (DiscretizedLogisticLikelihood, _DiscretizedLogistic),
    (Poisson, _Poisson),
    (NegativeBinomial, _NegativeBinomial),
)


def observed_code(likelihood: Likelihood, max_symbol: int | None = None) -> ObservedCode | None:
    """The code for ``likelihood``'s data, or None for a likelihood that has no code.

    ``max_symbol`` is needed for counts (the largest count); binary and 8-bit data fix it.
    """
    for kind, code in _CODES:
        if isinstance(likelihood, kind):
            if issubclass(code, _Counts):
                return code(max(1, max_symbol or 1))
            return code(1 if code is _Binary else _LEVELS)
    return None


def is_counts(code: ObservedCode) -> bool:
    """True for a count likelihood, whose alphabet is set by the data's largest count."""
    return isinstance(code, _Counts)
