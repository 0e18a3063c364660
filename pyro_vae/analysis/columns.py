r"""The reconstruction term of a table run, column by column.

For a VAE with the ``table`` likelihood, :math:`\mathbb{E}_q[\log p(x|z)] = \sum_j
\mathbb{E}_q[o_j \log p_j(v_j|z)]`; :func:`reconstruction_per_column` reports each column's
term averaged over the rows (a missing cell counts 0), so the terms add up to the
reconstruction of the ELBO (``eval.json`` ``reconstruction_per_column``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pyro_vae.infer.decomposition import traces
from pyro_vae.models.likelihoods import TableDistribution, TableLikelihood
from pyro_vae.vae import VAE

__all__ = ["is_table_vae", "reconstruction_per_column", "table_distribution", "unwrap_table"]


def is_table_vae(vae: VAE) -> bool:
    """Whether ``vae`` models a table (its likelihood is ``table``)."""
    return isinstance(vae.model.likelihood, TableLikelihood)


def table_distribution(vae: VAE, x: torch.Tensor) -> TableDistribution:
    """p(x|z) at z ~ q(z|x) (any guide, any hierarchy): the model's site ``"x"`` replayed."""
    model_trace, _ = traces(vae.model, vae.guide, x)
    return unwrap_table(model_trace.nodes["x"]["fn"])


def unwrap_table(fn: Any) -> TableDistribution:
    """The :class:`TableDistribution` inside Pyro's wrappers (masks, independence)."""
    while not isinstance(fn, TableDistribution):
        fn = fn.base_dist
    return fn


@torch.no_grad()
def reconstruction_per_column(
    vae: VAE, x: torch.Tensor, names: Sequence[str], num_samples: int = 1
) -> dict[str, float]:
    r"""``{column: mean over rows of }`` :math:`\mathbb{E}_{q(z|x)}[o_j \log p_j(v_j|z)]`.

    ``x`` are encoded rows (``(N, width)``, :func:`pyro_vae.data.encode_table`), ``names``
    the schema's column names; each expectation is a mean over ``num_samples`` draws of z.
    """
    if not is_table_vae(vae):
        raise ValueError("reconstruction_per_column needs a VAE with the table likelihood")
    total = torch.zeros(len(names), dtype=torch.float64)
    for _ in range(num_samples):
        lp = table_distribution(vae, x).column_log_prob(x)  # (N, C)
        total += lp.double().sum(0).cpu()
    means = total / (num_samples * x.shape[0])
    return {name: float(v) for name, v in zip(names, means, strict=True)}
