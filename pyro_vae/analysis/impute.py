r"""Filling a table's missing cells from a trained table VAE, by importance resampling.

MIWAE (Mattei & Frellsen 2019, sec. 4): for a row with observed cells :math:`x_o`, draw
:math:`z_1..z_K \sim q(z|x_o)` (the guide reads the zero-filled row and its mask) and weigh
them by

.. math::
    w_k \propto \frac{p(x_o|z_k)\,p(z_k)}{q(z_k|x_o)},

the self-normalized importance weights of :math:`p(z|x_o)`; the missing cells
:math:`p(x_m|x_o) = \int p(x_m|z)\,p(z|x_o)\,dz` are then

* ``draws=None`` (one table, the best single guess): :math:`\sum_k w_k\,
  \mathbb{E}[x_m|z_k]`, decoded: a real column's conditional mean, a positive column's
  exp of the mean of its log (a median), a count's rounded mean, the most probable level
  of a binary or categorical column;
* ``draws=M`` (multiple imputation, Rubin 1987): M tables, each with :math:`z` resampled
  from :math:`\{z_k\}` by :math:`w` and :math:`x_m \sim p(x_m|z)` drawn, so the spread
  between the tables carries the uncertainty.

Observed cells are copied, never rewritten: the output holds the input's own values.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import pandas as pd
import pyro
import torch

from pyro_vae.analysis.columns import is_table_vae, unwrap_table
from pyro_vae.checks import is_int
from pyro_vae.data import TableSchema, decode_table
from pyro_vae.data.encoding import encode_table, table_cells
from pyro_vae.infer.decomposition import traces
from pyro_vae.models.likelihoods import TableDistribution
from pyro_vae.vae import VAE

__all__ = ["impute", "impute_encoded"]

Table: TypeAlias = pd.DataFrame | np.ndarray


def _log_weights(vae: VAE, x: torch.Tensor, k: int) -> tuple[torch.Tensor, TableDistribution]:
    """Log weights ``(K, N)`` and p(x|z_k) for each draw, batch shape ``(K, N)``."""
    with pyro.plate("iw_particles", k, dim=-2):
        model_trace, guide_trace = traces(vae.model, vae.guide, x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    logw = x.new_zeros(k, x.shape[0])
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample":
            logw = logw + site["log_prob"]
            if not site["is_observed"]:
                logw = logw - guide_trace.nodes[name]["log_prob"]
    return logw, unwrap_table(model_trace.nodes["x"]["fn"])


def impute_encoded(
    vae: VAE, x: torch.Tensor, *, draws: int | None = None, num_samples: int = 100
) -> list[torch.Tensor]:
    """Encoded rows with their missing blocks filled: one tensor (means) or ``draws``."""
    logw, p_x = _log_weights(vae, x, num_samples)
    w = torch.softmax(logw, dim=0)  # (K, N)
    if draws is None:
        return [(w[..., None] * p_x.mean).sum(0)]  # (N, D)
    out = []
    rows = torch.arange(x.shape[0])
    for _ in range(draws):
        k = torch.multinomial(w.T, 1).squeeze(-1)  # (N,)
        out.append(p_x.sample()[k, rows])  # (N, D)
    return out


def _fill(original: Table, filled: pd.DataFrame, cells: pd.DataFrame) -> Table:
    """``original`` with only its missing cells replaced by ``filled``'s."""
    if isinstance(original, np.ndarray):
        out = original.copy()
        for j, name in enumerate(filled.columns):
            rows = cells[name].isna().to_numpy()
            out[rows, j] = np.asarray(filled[name], dtype=float)[rows]
        return out
    result = original.copy()
    for name in filled.columns:
        rows = np.flatnonzero(cells[name].isna().to_numpy())
        if not len(rows):
            continue
        values = filled[name].to_numpy()[rows]
        column = result[name].copy()
        if not (column.dtype.kind == "f" and values.dtype.kind in "biuf"):
            column = column.astype(object)
        column.iloc[rows] = values
        result[name] = column
    return result


@torch.no_grad()
def impute(
    vae: VAE,
    table: Table,
    *,
    schema: TableSchema,
    draws: int | None = None,
    num_samples: int = 100,
    seed: int = 0,
    batch_size: int = 500,
) -> Table | list[Table]:
    """Fill the missing cells (NaN, None) of ``table`` (a DataFrame or a 2-D array).

    ``schema`` is the run's (``TableSchema.load(RUN_DIR)``). ``draws=None`` returns one
    table of conditional means/modes; ``draws=M`` a list of ``M`` tables drawn for multiple
    imputation. ``num_samples`` is K, the draws of z per row. Seeded by ``seed``; the global
    RNG is left as it was. Observed cells are returned as given.
    """
    if not is_table_vae(vae):
        raise ValueError("impute needs a VAE trained on a table (its likelihood is 'table')")
    if draws is not None and (not is_int(draws) or draws < 1):
        raise ValueError(f"draws must be a positive int or None, got {draws!r}")
    if not is_int(num_samples) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    cells = table_cells(schema, table)
    x = encode_table(schema, cells).to(next(vae.parameters()).device)
    vae.model.likelihood.check_support(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        chunks = [
            impute_encoded(vae, xb, draws=draws, num_samples=num_samples)
            for xb in x.split(batch_size)
        ]
    tables = [torch.cat([c[m] for c in chunks]) for m in range(len(chunks[0]))]
    done = [_fill(table, decode_table(schema, t), cells) for t in tables]
    return done[0] if draws is None else done
