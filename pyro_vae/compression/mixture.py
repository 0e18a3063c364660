r"""Equal-mass buckets under a mixture-of-Gaussians prior (``mixture``; ``vamp`` of a Normal guide).

A mixture :math:`p(z) = \sum_c \pi_c \mathcal{N}(z; \mu_c, \mathrm{diag}\,\sigma_c^2)` does
not factor over dimensions, so the buckets are those of its autoregressive factors,

.. math::
    p(z) = \prod_l p(z_l \mid z_{<l}), \qquad
    p(z_l \mid z_{<l}) = \sum_c w_{c,l}\, \mathcal{N}(z_l; \mu_{c,l}, \sigma_{c,l}^2),
    \quad w_{c,l} \propto \pi_c \prod_{j<l} \mathcal{N}(z_j; \mu_{c,j}, \sigma_{c,j}^2),

each again a mixture with reweighted components, given the bucket values of the
dimensions before. Dimension :math:`l` is cut at the quantiles :math:`F_l^{-1}(k/K)` of its
conditional CDF :math:`F_l(z) = \sum_c w_{c,l}\Phi((z-\mu_{c,l})/\sigma_{c,l})`, found by
bisection (a fixed number of halvings, so both sides compute the same edges); a bucket's
value is the quantile of its middle, :math:`F_l^{-1}((k+\tfrac12)/K)`. Under the prior every
bucket index is again uniform, :math:`b` bits per dimension, and the posterior's mass in a
bucket is its CDF difference at the edges, as for a Normal prior. Everything runs one
dimension at a time, so the cost grows with the number of components; a VampPrior with
hundreds of pseudo-inputs codes slowly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import logsumexp, ndtr

from .latent import Buckets, GaussianCode, LatentCoder, Symbols, _masses

__all__ = ["MixtureLatentCoder"]

_HALVINGS = 48  # bisection steps: the bracket of ~80 prior scales shrinks to ~3e-13 of it
_LOG_ROOT_2PI = 0.5 * np.log(2 * np.pi)

# pick(d, mean, sd, edges) -> bucket of dimension d; edges(probabilities) -> z quantiles
Pick = Callable[[int, float, float, Callable[[np.ndarray], np.ndarray]], int]


class MixtureLatentCoder(LatentCoder):
    """A :class:`LatentCoder` whose buckets are the conditional quantiles of a mixture prior.

    ``logits`` (C,) are the mixture weights' logits, ``locs`` and ``scales`` (C, L) its
    components'.
    """

    def __init__(
        self,
        logits: np.ndarray,
        locs: np.ndarray,
        scales: np.ndarray,
        buckets: Buckets,
        family: object,
    ) -> None:
        super().__init__(locs.mean(0), scales.mean(0), buckets, family)
        self.log_weights = logits - logsumexp(logits)
        self.locs, self.scales = locs, scales
        k = 1 << buckets.bits
        self.coarse_probs = np.arange(buckets.coarse + 1) * buckets.fine / k
        self.fine_probs = np.arange(buckets.fine + 1) / k

    def _quantiles(self, log_w: np.ndarray, d: int, probs: np.ndarray) -> np.ndarray:
        """:math:`F_d^{-1}` at ``probs`` for the conditional weights ``exp(log_w)``; 0 and 1
        give -inf and inf."""
        w = np.exp(log_w - logsumexp(log_w))[None, :]  # (1, C)
        mu, sd = self.locs[:, d][None, :], self.scales[:, d][None, :]
        lo = np.full(len(probs), float(np.min(mu - 40 * sd)))
        hi = np.full(len(probs), float(np.max(mu + 40 * sd)))
        target = probs[:, None]
        for _ in range(_HALVINGS):
            mid = 0.5 * (lo + hi)
            below = (w * ndtr((mid[:, None] - mu) / sd)).sum(axis=1, keepdims=True) < target
            lo, hi = np.where(below[:, 0], mid, lo), np.where(below[:, 0], hi, mid)
        z = 0.5 * (lo + hi)
        return np.where(probs <= 0, -np.inf, np.where(probs >= 1, np.inf, z))

    def _walk_mixture(self, q: GaussianCode | None, pick: Pick) -> np.ndarray:
        """Visit the dimensions in order; returns the bucket values. ``pick`` chooses each
        dimension's bucket given the posterior's conditional mean and scale there (0 and 1
        without a posterior) and the prior's conditional quantile function."""
        dims = self.locs.shape[1]
        log_w = self.log_weights.copy()
        eps, values = np.zeros(dims), np.zeros(dims)
        for d in range(dims):
            mean, sd = 0.0, 1.0
            if q is not None and q.chol is None:
                assert q.scale is not None
                mean, sd = float(q.loc[d]), float(q.scale[d])
            elif q is not None:
                assert q.chol is not None
                mean = float(q.loc[d] + np.dot(q.chol[d, :d], eps[:d]))
                sd = float(q.chol[d, d])

            def edges(probs: np.ndarray, d: int = d, log_w: np.ndarray = log_w) -> np.ndarray:
                return self._quantiles(log_w, d, probs)

            k = pick(d, mean, sd, edges)
            values[d] = edges(np.array([(k + 0.5) / (1 << self.buckets.bits)]))[0]
            eps[d] = (values[d] - mean) / sd
            z = (values[d] - self.locs[:, d]) / self.scales[:, d]
            log_w = log_w - 0.5 * z * z - np.log(self.scales[:, d]) - _LOG_ROOT_2PI
        return values

    def _stage_masses(self, mean: float, sd: float, edges: np.ndarray) -> np.ndarray:
        return _masses(((edges - mean) / sd)[None, :])  # (1, n)

    def values(self, k: Symbols) -> np.ndarray:
        """The bucket values of ``k``: conditional quantiles, one dimension after another."""
        return self._walk_mixture(None, lambda d, mean, sd, edges: int(k[d]))

    def decode_posterior(self, coder: object, q: GaussianCode) -> Symbols:
        """Pop the buckets under q, one dimension at a time (the edges depend on the past)."""
        out = np.zeros(self.locs.shape[1], dtype=np.int32)

        def pick(d: int, mean: float, sd: float, edges: Callable[[np.ndarray], np.ndarray]) -> int:
            coarse = self._stage_masses(mean, sd, edges(self.coarse_probs))
            hi = int(coder.decode(self.family, coarse)[0])  # type: ignore[attr-defined]
            fine_edges = edges(hi * self.buckets.fine / (1 << self.buckets.bits) + self.fine_probs)
            lo = int(coder.decode(self.family, self._stage_masses(mean, sd, fine_edges))[0])  # type: ignore[attr-defined]
            out[d] = hi * self.buckets.fine + lo
            return int(out[d])

        self._walk_mixture(q, pick)
        return out

    def encode_posterior(self, coder: object, k: Symbols, q: GaussianCode) -> None:
        """Push ``k`` back under q: the inverse of :meth:`decode_posterior`."""
        stages: list[tuple[int, int, np.ndarray, np.ndarray]] = []

        def pick(d: int, mean: float, sd: float, edges: Callable[[np.ndarray], np.ndarray]) -> int:
            hi, lo = divmod(int(k[d]), self.buckets.fine)
            coarse = self._stage_masses(mean, sd, edges(self.coarse_probs))
            fine_edges = edges(hi * self.buckets.fine / (1 << self.buckets.bits) + self.fine_probs)
            stages.append((hi, lo, coarse, self._stage_masses(mean, sd, fine_edges)))
            return int(k[d])

        self._walk_mixture(q, pick)
        for hi, lo, coarse, fine in reversed(stages):  # the stack: last popped, first pushed
            coder.encode_reverse(np.array([lo], dtype=np.int32), self.family, fine)  # type: ignore[attr-defined]
            coder.encode_reverse(np.array([hi], dtype=np.int32), self.family, coarse)  # type: ignore[attr-defined]
