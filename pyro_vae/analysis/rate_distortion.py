r"""The rate–distortion view of a β sweep (Alemi et al. 2018, "Fixing a Broken ELBO").

For a VAE trained with the β-ELBO :math:`\mathbb{E}_q[\log p(x|z)] - \beta\,
\mathrm{KL}(q(z|x)\,\|\,p(z))`, the two terms of the ELBO are a lossy code's two costs, in
nats per data point:

.. math::

   R = \mathrm{KL}(q(z|x)\,\|\,p(z)) \quad\text{(rate)}, \qquad
   D = -\mathbb{E}_q[\log p(x|z)] \quad\text{(distortion)},

and :math:`-\mathrm{ELBO} = R + D \ge -\log p(x)`. Small β buys a low distortion with a high
rate; large β the reverse. Each run's importance-weighted NLL is marked at the point
:math:`(R, \mathrm{NLL} - R)` straight below it: the distortion at which its −ELBO would
equal the IW estimate of −log p(x). The vertical distance between a run and its mark is its
bound's gap. :func:`~pyro_vae.analysis.compare.compare` draws this figure,
``rate_distortion.png``, when two or more of its objectives are β-ELBOs (``beta:beta=B``, and
``elbo`` as β = 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyro_vae.analysis.drawing import figure, save
from pyro_vae.registry import SpecError, parse_spec

__all__ = ["beta_of", "plot_rate_distortion", "rate_distortion_points"]


def beta_of(objective: str) -> float | None:
    """β of a β-ELBO spec (``beta:beta=0.5`` -> 0.5, ``elbo`` -> 1.0); None for any other."""
    try:
        spec = parse_spec(objective)
    except SpecError:
        return None
    if spec.name == "elbo" and not spec.params:
        return 1.0
    if spec.name == "beta":
        try:
            return float(spec.params.get("beta", "1.0"))
        except ValueError:
            return None
    return None


def rate_distortion_points(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """One point per β-ELBO objective in ``runs`` (compare's per-seed records), in β order.

    Each point holds ``beta``, ``rate`` (mean test KL over seeds), ``distortion`` (mean of
    −test reconstruction) and ``nll`` (mean test IW NLL; NaN where no run had one).
    """
    by_beta: dict[float, list[Mapping[str, Any]]] = {}
    for run in runs:
        beta = beta_of(str(run["objective"]))
        if beta is not None:
            by_beta.setdefault(beta, []).append(run)
    points = []
    for beta in sorted(by_beta):
        group = by_beta[beta]
        nll = [float(r["test_nll"]) for r in group if _finite(r.get("test_nll"))]
        points.append(
            {
                "beta": beta,
                "rate": float(np.mean([float(r["test_kl"]) for r in group])),
                "distortion": float(np.mean([-float(r["test_reconstruction"]) for r in group])),
                "nll": float(np.mean(nll)) if nll else math.nan,
                "seeds": len(group),
            }
        )
    return points


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def plot_rate_distortion(points: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Distortion against rate, the points joined in β order, each IW NLL marked below it."""
    if len(points) < 2:
        raise ValueError("a rate-distortion curve needs at least two values of beta")
    rate = np.array([p["rate"] for p in points])
    distortion = np.array([p["distortion"] for p in points])
    nll = np.array([p["nll"] for p in points])
    with figure(620, 480, constrained=True) as fig:
        ax = fig.subplots()
        ax.plot(rate, distortion, "-o", color="tab:blue", label="runs (β order)", zorder=3)
        for p in points:
            ax.annotate(
                f"β={p['beta']:g}",
                (p["rate"], p["distortion"]),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
            )
        has_nll = np.isfinite(nll)
        if has_nll.any():
            ax.scatter(
                rate[has_nll],
                (nll - rate)[has_nll],
                marker="x",
                color="tab:red",
                zorder=3,
                label="IW NLL − rate (where −ELBO = IW NLL)",
            )
            for r, d, n in zip(rate[has_nll], distortion[has_nll], nll[has_nll], strict=True):
                ax.plot([r, r], [n - r, d], ":", color="tab:red", linewidth=1)
            best = float(np.nanmin(nll))
            span = np.linspace(0.0, float(rate.max()) * 1.15, 2)
            ax.plot(span, best - span, "--", color="0.5", linewidth=1, label=f"R + D = {best:.1f}")
        ax.set_xlabel("rate R = KL(q(z|x) || p(z))  [nats per point]")
        ax.set_ylabel("distortion D = −E_q[log p(x|z)]  [nats per point]")
        ax.set_xlim(left=0.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("rate–distortion over β (Alemi et al. 2018); test split", fontsize=10)
        return save(fig, path)
