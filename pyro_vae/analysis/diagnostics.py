r"""What the guide gets wrong, and where: every diagnostic of a trained (model, guide) pair.

This module gathers the diagnostics under one name (and keeps ``pyro_vae.diagnostics``,
the first layout's path, importable); each lives in the module of its kind:

- :mod:`~pyro_vae.analysis.latent`: :func:`kl_per_dim`, :func:`active_units` and
  :func:`mutual_information`;
- :mod:`~pyro_vae.analysis.psis`: :func:`psis_khat`, :func:`khat_summary`,
  :func:`worst_points` and :func:`interpret_khat`;
- :mod:`~pyro_vae.analysis.gaps`: :func:`check_inference_gaps` and :func:`inference_gaps`
  (Cremer et al. 2018);
- :mod:`~pyro_vae.analysis.mcmc`: :func:`nuts_posterior`, :func:`nuts_transforms`,
  :func:`posterior_samples` and :func:`compare_posteriors`.

Every function takes any Pyro (model, guide) pair with a plate over the rows of ``x``, in
any style (sized or not, at any dim, subsampled, masked, scaled), read by the one rule of
:mod:`pyro_vae.infer.sites` (see :mod:`~pyro_vae.analysis.common`). Figures are per data
point, in nats; the latent statistics are about the continuous code z.
"""

from __future__ import annotations

from pyro_vae.analysis.common import arviz
from pyro_vae.analysis.gaps import check_inference_gaps, inference_gaps
from pyro_vae.analysis.latent import (
    ActiveUnits,
    KLPerDim,
    MutualInformation,
    active_units,
    kl_per_dim,
    mutual_information,
)
from pyro_vae.analysis.mcmc import (
    compare_posteriors,
    nuts_posterior,
    nuts_transforms,
    posterior_samples,
)
from pyro_vae.analysis.psis import interpret_khat, khat_summary, psis_khat, worst_points

__all__ = [
    "ActiveUnits",
    "KLPerDim",
    "MutualInformation",
    "active_units",
    "arviz",
    "check_inference_gaps",
    "compare_posteriors",
    "inference_gaps",
    "interpret_khat",
    "khat_summary",
    "kl_per_dim",
    "mutual_information",
    "nuts_posterior",
    "nuts_transforms",
    "posterior_samples",
    "psis_khat",
    "worst_points",
]
