r"""The latent side of bits-back coding: z in buckets of equal prior mass.

BB-ANS (Townsend, Bird & Barber 2019, sec. 3) codes a continuous latent by cutting every
dimension of the prior :math:`p(z_l) = \mathcal{N}(m_l, s_l^2)` into :math:`K = 2^b`
buckets of equal mass :math:`1/K`, with edges at the prior's quantiles
:math:`e_{l,k} = m_l + s_l\,\Phi^{-1}(k/K)` and the bucket's value at its middle quantile
:math:`m_l + s_l\,\Phi^{-1}((k + \tfrac12)/K)`. Under the prior a bucket index is uniform,
so :math:`-\log_2 P(k) = b` bits per dimension. The guide's posterior is quantized to the
same buckets: the mass of bucket :math:`k` is the difference of its CDF at the two edges,

.. math::
    Q(k_l) = \Phi\Big(\frac{e_{l,k+1} - \mu_l}{\sigma_l}\Big)
           - \Phi\Big(\frac{e_{l,k} - \mu_l}{\sigma_l}\Big).

A table of all :math:`K` masses per dimension would cost :math:`K` CDF evaluations; the
index is instead coded in two steps, a coarse bucket of :math:`2^c` fine ones and the fine
bucket within it, each a categorical of :math:`2^c` or :math:`2^{b-c}` masses, and the
product of the two is exactly :math:`Q(k_l)`.

A posterior with correlations (``lowrank``, ``full``) is coded dimension by dimension in
the Cholesky factor's order, :math:`Q(k) = \prod_l Q(k_l \mid k_{<l})`: given the
bucket values of the dimensions before it, :math:`z_l` is Normal with mean
:math:`\mu_l + \sum_{j<l} L_{lj}\epsilon_j` and scale :math:`L_{ll}`, where
:math:`\epsilon_j = (z_j - \text{its conditional mean}) / L_{jj}`. An IAF posterior has no
closed-form conditionals; it is coded under its linearization at the base mean, the
Gaussian :math:`\mathcal{N}(f(\mu_0), J\,\mathrm{diag}(\sigma_0^2)\,J^\top)` with :math:`J`
the flow's Jacobian there. The round trip stays exact (coder and decoder compute the same
Gaussian); its rate is the ELBO of that Gaussian, not of the flow.

Mixture priors (``mixture``, ``vamp``) are coded by :mod:`~pyro_vae.compression.mixture`.

All of this runs in float64 numpy, the same code and array shapes when compressing and
decompressing, so that both sides compute the same probabilities bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyro.distributions as dist
import torch
from scipy.special import ndtr, ndtri

__all__ = ["Buckets", "GaussianCode", "LatentCoder", "gaussian_code", "make_buckets"]

Symbols = np.ndarray  # int32 bucket indices, (L,)


@dataclass(frozen=True)
class Buckets:
    """Standard-Normal quantiles cutting the prior into ``2**bits`` equal-mass buckets.

    ``edges`` has ``K + 1`` entries (``-inf`` and ``inf`` at the ends), ``centres`` ``K``.
    A bucket index is coded as a coarse index (``2**coarse_bits`` values) and a fine one.
    """

    bits: int
    coarse_bits: int
    edges: np.ndarray  # (K + 1,) float64
    centres: np.ndarray  # (K,) float64

    @property
    def fine(self) -> int:
        """Fine buckets per coarse bucket, ``2**(bits - coarse_bits)``."""
        return 1 << (self.bits - self.coarse_bits)

    @property
    def coarse(self) -> int:
        """Coarse buckets, ``2**coarse_bits``."""
        return 1 << self.coarse_bits


@functools.lru_cache(maxsize=8)
def make_buckets(bits: int, coarse_bits: int) -> Buckets:
    """The equal-mass buckets of a standard Normal for ``2**bits`` buckets per dimension."""
    k = 1 << bits
    edges = ndtri(np.arange(k + 1, dtype=np.float64) / k)  # ndtri(0) = -inf, ndtri(1) = inf
    centres = ndtri((np.arange(k, dtype=np.float64) + 0.5) / k)
    edges.setflags(write=False)
    centres.setflags(write=False)
    return Buckets(bits, coarse_bits, edges, centres)


@dataclass(frozen=True)
class GaussianCode:
    """The posterior as the coder sees it: a mean and, for a correlated one, a Cholesky factor.

    ``scale`` (L,) for a diagonal Normal (``chol`` None); ``chol`` (L, L) lower-triangular
    otherwise. float64.
    """

    loc: np.ndarray
    scale: np.ndarray | None = None
    chol: np.ndarray | None = None


def _row(t: torch.Tensor) -> np.ndarray:
    """The single row of a ``(1, ...)`` tensor as float64 numpy."""
    return np.asarray(t.detach().to("cpu", torch.float64).numpy()[0])


def gaussian_code(q: dist.TorchDistribution) -> GaussianCode:
    """The :class:`GaussianCode` of the guide's q(z|x) for one point (batch shape ``(1,)``).

    Raises ``ValueError`` for a family without a Gaussian form (the caller checks the family
    first and words the message).
    """
    base = q.base_dist if isinstance(q, dist.Independent) else q
    if isinstance(base, dist.Normal):
        return GaussianCode(loc=_row(base.loc), scale=_row(base.scale))
    if isinstance(q, dist.LowRankMultivariateNormal):
        factor = _row(q.cov_factor)  # (L, R)
        cov = factor @ factor.T + np.diag(_row(q.cov_diag))
        return GaussianCode(loc=_row(q.loc), chol=np.linalg.cholesky(cov))
    if isinstance(q, dist.MultivariateNormal):
        return GaussianCode(loc=_row(q.loc), chol=_row(q.scale_tril))
    if isinstance(q, dist.TransformedDistribution):
        return _linearized_flow(q)
    raise ValueError(f"no Gaussian form for {type(q).__name__}")


def _linearized_flow(q: dist.TransformedDistribution) -> GaussianCode:
    r"""The flow's pushforward of its base Normal, linearized at the base mean."""
    base = q.base_dist.base_dist if isinstance(q.base_dist, dist.Independent) else q.base_dist
    if not isinstance(base, dist.Normal):
        raise ValueError(f"a flow over a {type(base).__name__} base")

    def flow(u: torch.Tensor) -> torch.Tensor:
        z = u.unsqueeze(0)  # (1, L)
        for transform in q.transforms:
            z = transform(z)
        return z[0]  # (L,)

    loc0 = base.loc.detach()[0]  # (L,)
    with torch.enable_grad():
        jac = torch.autograd.functional.jacobian(flow, loc0)  # (L, L)
    with torch.no_grad():
        mean = flow(loc0)
    factor = jac.detach().to(torch.float64).numpy() * _row(base.scale)[None, :]  # J diag(s0)
    return GaussianCode(
        loc=mean.detach().to(torch.float64).numpy(), chol=np.linalg.cholesky(factor @ factor.T)
    )


def _masses(t: np.ndarray) -> np.ndarray:
    """Normal masses between consecutive standardized edges ``t`` (rows ascending): (n, E-1).

    Differences of :math:`\\Phi` in float64 are exact to about 1e-16, far below the
    coder's smallest probability (2**-24). A row whose mass is all zero (a bucket the
    posterior gives no mass, reached only through the coder's minimum probability)
    becomes uniform.
    """
    mass = np.diff(ndtr(t), axis=1)
    empty = ~(mass.sum(axis=1) > 0)
    if empty.any():
        mass[empty] = 1.0
    return mass


class LatentCoder:
    """Decodes and encodes one point's bucket indices under q, and under the prior.

    ``prior_loc`` and ``prior_scale`` (L,) are the prior Normal's; ``family`` is the
    constriction categorical model family, ``uniform`` its model of the prior (uniform
    over the ``K`` buckets).
    """

    def __init__(
        self, prior_loc: np.ndarray, prior_scale: np.ndarray, buckets: Buckets, family: object
    ) -> None:
        import constriction

        self.loc, self.scale, self.buckets, self.family = prior_loc, prior_scale, buckets, family
        self.uniform = constriction.stream.model.Uniform(1 << buckets.bits)
        b = buckets
        self.coarse_index = np.arange(b.coarse + 1) * b.fine  # (C + 1,)
        self.fine_offsets = np.arange(b.fine + 1)  # (F + 1,)

    # ------------------------------------------------------------------ the value of a bucket

    def values(self, k: Symbols) -> np.ndarray:
        """The bucket values :math:`m + s\\,\\Phi^{-1}((k + 1/2)/K)`, float64 (L,)."""
        return self.loc + self.scale * self.buckets.centres[k]

    # ------------------------------------------------------------------ the two stages

    def _coarse(self, dims: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
        edges = self.buckets.edges[self.coarse_index][None, :]  # (1, C + 1)
        z = self.loc[dims, None] + self.scale[dims, None] * edges
        return _masses((z - mean[:, None]) / sd[:, None])  # (n, C)

    def _fine(
        self, dims: np.ndarray, mean: np.ndarray, sd: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        index = hi[:, None].astype(np.int64) * self.buckets.fine + self.fine_offsets[None, :]
        z = self.loc[dims, None] + self.scale[dims, None] * self.buckets.edges[index]
        return _masses((z - mean[:, None]) / sd[:, None])  # (n, F)

    def _decode_rows(
        self, coder: object, dims: np.ndarray, mean: np.ndarray, sd: np.ndarray
    ) -> Symbols:
        hi = coder.decode(self.family, self._coarse(dims, mean, sd))  # type: ignore[attr-defined]
        lo = coder.decode(self.family, self._fine(dims, mean, sd, hi))  # type: ignore[attr-defined]
        return (hi.astype(np.int64) * self.buckets.fine + lo).astype(np.int32)

    def _encode_rows(
        self, coder: object, k: Symbols, dims: np.ndarray, mean: np.ndarray, sd: np.ndarray
    ) -> None:
        hi = (k // self.buckets.fine).astype(np.int32)
        lo = (k % self.buckets.fine).astype(np.int32)
        coder.encode_reverse(lo, self.family, self._fine(dims, mean, sd, hi))  # type: ignore[attr-defined]
        coder.encode_reverse(hi, self.family, self._coarse(dims, mean, sd))  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ q(k | x)

    def decode_posterior(self, coder: object, q: GaussianCode) -> Symbols:
        """Pop a bucket index per dimension from ``coder`` under q: the bits-back draw."""
        dims = np.arange(len(q.loc))
        if q.chol is None:
            assert q.scale is not None
            return self._decode_rows(coder, dims, q.loc, q.scale)
        out = np.zeros(len(q.loc), dtype=np.int32)

        def pick(d: int, mean: float, sd: float) -> int:
            row = dims[d : d + 1]
            out[d] = self._decode_rows(coder, row, np.array([mean]), np.array([sd]))[0]
            return int(out[d])

        self._walk(q, pick)
        return out

    def encode_posterior(self, coder: object, k: Symbols, q: GaussianCode) -> None:
        """Push ``k`` back under q: the inverse of :meth:`decode_posterior`."""
        dims = np.arange(len(q.loc))
        if q.chol is None:
            assert q.scale is not None
            self._encode_rows(coder, k, dims, q.loc, q.scale)
            return
        conditionals: list[tuple[float, float]] = []

        def pick(d: int, mean: float, sd: float) -> int:
            conditionals.append((mean, sd))
            return int(k[d])

        self._walk(q, pick)
        for d in reversed(range(len(k))):  # the stack: last decoded, first pushed back
            mean, sd = conditionals[d]
            row = dims[d : d + 1]
            self._encode_rows(coder, k[row], row, np.array([mean]), np.array([sd]))

    def _walk(self, q: GaussianCode, pick: Callable[[int, float, float], int]) -> None:
        """Visit the dimensions in order with their conditional mean and scale given the
        bucket values before; ``pick`` returns the bucket of each (decoded or known)."""
        chol = q.chol
        assert chol is not None
        eps = np.zeros(len(q.loc))
        for d in range(len(q.loc)):
            mean = float(q.loc[d] + np.dot(chol[d, :d], eps[:d]))
            sd = float(chol[d, d])
            k = pick(d, mean, sd)
            value = self.loc[d] + self.scale[d] * self.buckets.centres[k]
            eps[d] = (value - mean) / sd

    # ------------------------------------------------------------------ p(k)

    def decode_prior(self, coder: object, dims: int) -> Symbols:
        """Pop ``dims`` bucket indices under the prior (uniform over buckets)."""
        return coder.decode(self.uniform, dims)  # type: ignore[attr-defined,no-any-return]

    def encode_prior(self, coder: object, k: Symbols) -> None:
        """Push bucket indices under the prior."""
        coder.encode_reverse(k.astype(np.int32), self.uniform)  # type: ignore[attr-defined]
