r"""Closed-form KL divergences of the correlated Gaussian guides from a diagonal Normal prior.

torch registers KL(MVN || MVN) and the low-rank pairs, and (with Pyro's additions)
KL(Independent(Normal) || Independent(Normal)), but not a full-covariance or low-rank plus
diagonal q against the ``Independent(Normal, 1)`` that the ``normal`` and
``learned-normal`` priors return. Importing this module registers both with
:func:`torch.distributions.kl.register_kl`, so :func:`~pyro_vae.infer.decomposition.elbo_terms`
and the ``elbo-analytic`` objective take them as analytic. For
:math:`q = \mathcal{N}(\mu_q, \Sigma_q)` and :math:`p = \mathcal{N}(\mu_p,
\mathrm{diag}\,\sigma_p^2)` in :math:`L` dimensions, KL = cross-entropy - entropy:

.. math::

   \mathrm{KL}(q\,\|\,p) = -\mathrm{H}[q] + \sum_{i=1}^{L} \Big[\log \sigma_{p,i}
   + \tfrac12 \log 2\pi + \frac{(\Sigma_q)_{ii} + (\mu_{q,i} - \mu_{p,i})^2}{2\sigma_{p,i}^2}
   \Big], \qquad \mathrm{H}[q] = \tfrac12 L (1 + \log 2\pi) + \tfrac12 \log\det\Sigma_q.

Only the diagonal of :math:`\Sigma_q` enters, because :math:`p` is factorized; for a
diagonal :math:`\Sigma_q` this is the closed form of Kingma & Welling (2014), appendix B.
A prior of another form raises ``NotImplementedError``, which ``kl_divergence``'s callers
(``elbo_terms``, ``TraceMeanField_ELBO``) take as "use Monte Carlo".
"""

from __future__ import annotations

import math

import torch
from torch.distributions import (
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    register_kl,
)

__all__ = ["kl_gaussian_diagonal_normal"]


def kl_gaussian_diagonal_normal(
    q: MultivariateNormal | LowRankMultivariateNormal, p: Independent
) -> torch.Tensor:
    r""":math:`\mathrm{KL}(\mathcal{N}(\mu_q, \Sigma_q) \,\|\, \mathcal{N}(\mu_p,
    \mathrm{diag}\,\sigma_p^2))` in closed form, of shape ``broadcast(q.batch_shape,
    p.batch_shape)``.

    ``p`` must be ``Independent(Normal, 1)`` with ``q``'s event shape; anything else raises
    ``NotImplementedError`` (no closed form here).
    """
    base = p.base_dist
    if (
        not isinstance(base, Normal)
        or p.reinterpreted_batch_ndims != 1
        or p.event_shape != q.event_shape
    ):
        raise NotImplementedError
    var_p = base.scale.pow(2)  # (..., L)
    cross = (q.variance + (q.mean - base.loc).pow(2)) / (2 * var_p)  # (..., L)
    cross = cross + base.scale.log() + 0.5 * math.log(2 * math.pi)
    return cross.sum(-1) - q.entropy()


register_kl(MultivariateNormal, Independent)(kl_gaussian_diagonal_normal)
register_kl(LowRankMultivariateNormal, Independent)(kl_gaussian_diagonal_normal)
