r"""Pareto-smoothed importance sampling: how far each point's IW estimate can be trusted.

- :func:`psis_khat`: the Pareto :math:`\hat k` of each point's importance weights
  p(x,z)/q(z|x) (Yao et al. 2018; Vehtari et al. 2024), through ``arviz.psislw``;
- :func:`khat_summary` and :func:`worst_points`: what eval.json reports of them;
- :func:`interpret_khat`: one sentence on what the figures mean for the IW NLL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pyro_vae.analysis.common import Fn, arviz, check_count, check_x, chunks
from pyro_vae.infer.importance import log_weights

__all__ = ["interpret_khat", "khat_summary", "psis_khat", "worst_points"]


def psis_khat(
    model: Fn,
    guide: Fn,
    x: torch.Tensor,
    *args: Any,
    num_samples: int = 1000,
    max_elements: int = 2**25,
    **kwargs: Any,
) -> np.ndarray:
    r"""Pareto :math:`\hat k` of each point's importance weights, shape ``(N,)``.

    For each :math:`x_n`, ``num_samples`` draws :math:`z_s \sim q(z|x_n)` give weights
    :math:`w_s = p(x_n, z_s) / q(z_s|x_n)`; ``arviz.psislw`` fits a generalized Pareto
    distribution to their upper tail and returns its shape :math:`\hat k` (Yao et al.
    2018, "Yes, but did it work?"). :math:`\hat k < 0.5`: the weights have finite variance
    and q is a good proposal for p(z|x_n); :math:`0.5 \le \hat k < 0.7`: usable;
    :math:`\hat k \ge 0.7`: importance sampling from q is unreliable at that point, so
    its IW log-likelihood is suspect and q misses posterior mass there. Weights that are
    all equal (q is the exact posterior at that point) have no tail to fit and get
    :math:`\hat k = 0`.
    """
    x = check_x(x)
    check_count("num_samples", num_samples, minimum=2)
    per_point = max(1, math.prod(x.shape[1:]))
    chunk = max(1, max_elements // (per_point * num_samples))
    with torch.no_grad():
        lw = torch.cat(
            [
                log_weights(model, guide, xb, num_samples, *rows, **kwargs)
                for xb, rows in chunks(x, args, chunk)
            ],
            dim=1,
        )  # (S, N)
    lw_np = lw.T.double().cpu().numpy()  # (N, S)
    flat = np.ptp(lw_np, axis=1) <= 1e-9 * np.maximum(1.0, np.abs(lw_np).max(axis=1))
    khat = np.zeros(lw_np.shape[0])
    if (~flat).any():
        _, k = arviz().psislw(lw_np[~flat])
        khat[~flat] = np.asarray(k, dtype=np.float64)
    return khat


def khat_summary(khat: np.ndarray) -> dict[str, float]:
    """``mean``, ``max`` and the fractions of points above the 0.5 and 0.7 thresholds."""
    khat = np.asarray(khat, dtype=np.float64)
    if khat.size == 0:
        raise ValueError("khat must hold at least one value")
    return {
        "mean": float(khat.mean()),
        "max": float(khat.max()),
        "frac_above_0.5": float((khat > 0.5).mean()),
        "frac_above_0.7": float((khat > 0.7).mean()),
    }


def worst_points(
    khat: np.ndarray, num: int = 10, **columns: Sequence[float]
) -> list[dict[str, Any]]:
    """The ``num`` points with the largest k̂, worst first, with any per-point ``columns``."""
    order = np.argsort(-np.asarray(khat), kind="stable")[:num]
    rows = []
    for i in order.tolist():
        row: dict[str, Any] = {"index": int(i), "khat": float(khat[i])}
        row.update({name: float(values[i]) for name, values in columns.items()})
        rows.append(row)
    return rows


def interpret_khat(summary: dict[str, float]) -> str:
    r"""One sentence on what :func:`khat_summary`'s figures mean for the IW NLL, and what to do.

    The importance-weighted bound :math:`\log \frac1K \sum_k w_k` is a lower bound on
    :math:`\log p(x)` whose gap shrinks as :math:`K` grows only as fast as the weights' tail
    allows: with :math:`\hat k \ge 0.7` at a point the weights have (nearly) infinite
    variance there, so the NLL, minus the bound, is too high by an amount that even
    thousands of draws leave large and that its spread over draws does not show (Yao et
    al. 2018; Vehtari et al. 2024). The remedies: more importance samples, a guide family
    that covers the posterior better (a flow or a full covariance), or training with the
    importance-weighted objective (IWAE), which makes q a better proposal. Up to 5% of
    points above 0.7 barely move the mean NLL, and the sentence says so.
    """
    above = summary["frac_above_0.7"]
    usable = summary["frac_above_0.5"]
    if above > _FEW:
        return (
            f"k-hat > 0.7 at {_percent(above)} of points: there q(z|x) is an unreliable "
            "importance proposal, so the IW NLL above is likely too high (a loose bound) by "
            "more than its noise shows; to tighten it, use more importance samples, a richer "
            "guide (a flow or a full covariance) or IWAE training."
        )
    if above > 0:
        return (
            f"k-hat > 0.7 at {_percent(above)} of points (the worst points in eval.json): the "
            "IW NLL above is reliable elsewhere and likely too high at those few; more "
            "importance samples, a richer guide or IWAE training would fix them."
        )
    if usable > 0:
        return (
            f"k-hat <= 0.7 at every point ({_percent(usable)} between 0.5 and 0.7): q(z|x) is "
            "a usable importance proposal, and the IW NLL above can be trusted; more "
            "importance samples tighten it where k-hat exceeds 0.5."
        )
    return (
        "k-hat <= 0.5 at every point: q(z|x) is a good importance proposal, and the IW NLL "
        "above is reliable."
    )


_FEW = 0.05  # at most this fraction of points above 0.7: the NLL's mean is barely affected


def _percent(fraction: float) -> str:
    """``72%``, or ``0.3%`` for a fraction under 1% (which would read as ``0%``)."""
    return f"{fraction:.1%}" if fraction < 0.01 else f"{fraction:.0%}"
