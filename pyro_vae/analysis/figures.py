"""The figures of the diagnostics: PSIS k̂ with the worst-fit points, posterior pair plots,
and the comparison of objectives across seeds.

Each is a ``plot_*`` function (:func:`plot_psis_khat`, :func:`plot_posterior_pairs`,
:func:`plot_comparison`), so that a figure is never taken for the diagnostic it draws
(:func:`pyro_vae.analysis.psis.psis_khat` computes k̂; :func:`plot_psis_khat` draws it).
Their first names (``psis_khat``, ``posterior_pairs``, ``comparison``) still work.

Drawn with :mod:`pyro_vae.analysis.drawing`: matplotlib's object API only (no ``pyplot``),
each figure with its own Agg canvas, every PNG written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyro_vae.analysis.drawing import ArrayLike, figure, save, to_numpy, to_tiles

__all__ = ["plot_comparison", "plot_posterior_pairs", "plot_psis_khat"]

_THRESHOLDS = ((0.5, "0.5: usable", "tab:orange"), (0.7, "0.7: unreliable", "tab:red"))
_TILE_COLUMN_PX = 100  # the width of one worst point's column of tiles and its caption


def plot_psis_khat(
    khat: ArrayLike,
    path: str | Path,
    *,
    originals: ArrayLike | None = None,
    recons: ArrayLike | None = None,
    worst: Sequence[int] = (),
    labels: Sequence[int] | None = None,
    point_ids: Sequence[int] | None = None,
) -> Path:
    """k̂ of every point against its index with the 0.5 and 0.7 thresholds, and the worst points.

    ``point_ids[i]`` is the x position of ``khat[i]`` (e.g. its index in the test split, the
    index eval.json and the tiles use; default: ``i``), so a subset is plotted at the
    points' own indices. ``worst`` lists indices into ``khat`` (worst first); they are
    circled. With ``originals`` and ``recons``, the data and reconstructions of exactly
    those points (one row each, in the order of ``worst``), they are drawn below the
    scatter, each titled with its k̂ and its label (``labels[j]`` for ``worst[j]``;
    default: its point id): what the guide fits worst, and what it makes of it. The legend
    sits outside the axes, so it never hides a point.
    """
    k = to_numpy(khat, "khat").reshape(-1)
    if k.size == 0:
        raise ValueError("khat must hold at least one value")
    at = np.arange(k.size) if point_ids is None else np.asarray(point_ids, dtype=np.int64)
    if at.shape != k.shape:
        raise ValueError(f"point_ids must name the {k.size} points of khat, got {at.size}")
    worst = [int(i) for i in worst]
    if any(not 0 <= i < k.size for i in worst):
        raise ValueError(f"worst must index khat (0..{k.size - 1}), got {worst}")
    show = originals is not None and recons is not None and len(worst) > 0
    if show and len(to_numpy(originals, "originals")) != len(worst):
        raise ValueError(f"originals must hold the {len(worst)} worst points, one row each")
    ncols = max(1, len(worst)) if show else 1
    height = 340 + (280 if show else 0)
    # each worst point's caption is two short lines over its own column (index, then k-hat),
    # and a column is wide enough for them: one string, at 90 px a column, ran together
    with figure(max(760, _TILE_COLUMN_PX * ncols + 120), height, constrained=True) as fig:
        grid = fig.add_gridspec(3 if show else 1, ncols, height_ratios=[3, 1, 1] if show else [1])
        ax = fig.add_subplot(grid[0, :])
        ax.scatter(at, k, s=8, color="tab:blue", alpha=0.7, label="points")
        if worst:
            ax.scatter(at[worst], k[worst], s=30, facecolors="none", edgecolors="k", label="worst")
        for level, label, color in _THRESHOLDS:
            ax.axhline(level, color=color, linestyle="--", lw=1, label=label)
        xlabel = "data point" if point_ids is None else "data point (index in the split)"
        ax.set(xlabel=xlabel, ylabel=r"Pareto $\hat k$", title=_khat_title(k))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3)
        if show:
            assert originals is not None and recons is not None
            names = [int(at[i]) for i in worst] if labels is None else [int(v) for v in labels]
            if len(names) != len(worst):
                raise ValueError(f"labels must name the {len(worst)} worst points")
            _worst_tiles(fig, grid, originals, recons, worst, names, k)
        return save(fig, path)


def _khat_title(k: np.ndarray) -> str:
    return (
        rf"PSIS $\hat k$ per point: mean {k.mean():.2f}, max {k.max():.2f}, "
        f"{_percent(float((k > 0.7).mean()))} above 0.7"
    )


def _caption(name: int, khat: float) -> str:
    """A worst point's caption, on two lines: ``#692`` over ``k̂=1.52``."""
    return f"#{name}\n" + rf"$\hat k$={khat:.2f}"


def _percent(fraction: float) -> str:
    """``72%``; a fraction under 1% but above 0 as ``0.3%`` (not ``0%``)."""
    return f"{fraction:.1%}" if 0 < fraction < 0.01 else f"{fraction:.0%}"


def _worst_tiles(
    fig: Any,
    grid: Any,
    originals: ArrayLike,
    recons: ArrayLike,
    worst: list[int],
    names: Sequence[int],
    k: np.ndarray,
) -> None:
    orig = to_numpy(originals, "originals")
    rec = to_numpy(recons, "recons").reshape(orig.shape)
    tiles, rec_tiles = to_tiles(orig, "originals"), to_tiles(rec, "recons")
    for col, i in enumerate(worst):
        for row, (source, name) in enumerate(((tiles, "input"), (rec_tiles, "recon."))):
            ax = fig.add_subplot(grid[row + 1, col])
            tile = source[col]
            if tile.ndim >= 2:
                ax.imshow(np.clip(tile, 0, 1), cmap="gray", vmin=0, vmax=1)
                ax.set_axis_off()
            else:
                ax.plot(tile, lw=1)
                ax.set_xticks([])
                ax.tick_params(labelsize=6)
            if row == 0:
                ax.set_title(_caption(names[col], float(k[i])), fontsize=8, linespacing=1.3)
            if col == 0:
                ax.text(-0.1, 0.5, name, transform=ax.transAxes, ha="right", va="center")


def plot_posterior_pairs(
    nuts: ArrayLike,
    guide: ArrayLike,
    path: str | Path,
    *,
    title: str | None = None,
    max_dims: int = 4,
    names: Sequence[str] | None = None,
) -> Path:
    """Pair plot of NUTS draws and guide draws of one point's z, ``(S, L)`` each.

    The lower triangle scatters each pair of the first ``max_dims`` columns, the diagonal
    overlays their histograms: where q(z|x) (orange) and the exact posterior (blue)
    disagree in location, scale or correlation. ``names`` label the columns (default
    ``z[0]``, ``z[1]``, ...).
    """
    a, b = to_numpy(nuts, "nuts"), to_numpy(guide, "guide")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(a.shape + b.shape) == 0:
        raise ValueError(
            f"nuts and guide must be (S, L) arrays with the same L, got {a.shape} and {b.shape}"
        )
    dims = min(a.shape[1], max_dims)
    labels = [f"z[{j}]" for j in range(dims)] if names is None else [str(n) for n in names]
    if len(labels) < dims:
        raise ValueError(f"names must label {dims} columns, got {len(labels)}")
    size = 150 * dims + 60
    with figure(size, size + 30, constrained=True) as fig:
        axes = fig.subplots(dims, dims, squeeze=False)
        for i in range(dims):
            for j in range(dims):
                ax = axes[i][j]
                if j > i:
                    ax.set_axis_off()
                    continue
                if i == j:
                    bins = np.histogram_bin_edges(np.concatenate([a[:, i], b[:, i]]), 30)
                    ax.hist(a[:, i], bins=bins, density=True, alpha=0.5, label="NUTS p(z|x)")
                    ax.hist(b[:, i], bins=bins, density=True, alpha=0.5, label="q(z|x)")
                else:
                    ax.scatter(a[:, j], a[:, i], s=3, alpha=0.3, label="NUTS p(z|x)")
                    ax.scatter(b[:, j], b[:, i], s=3, alpha=0.3, label="q(z|x)")
                ax.tick_params(labelsize=7)
                if i == dims - 1:
                    ax.set_xlabel(labels[j])
                if j == 0 and i > 0:
                    ax.set_ylabel(labels[i])
        axes[0][0].legend(fontsize=7)
        if title:
            fig.suptitle(title)
        return save(fig, path)


def plot_comparison(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One panel per metric: each objective's per-seed values and mean with 95% interval.

    ``rows`` are :func:`pyro_vae.analysis.compare.compare`'s rows: ``objective`` and, per metric,
    ``{"mean", "low", "high", "values"}``.
    """
    if not rows:
        raise ValueError("rows must hold at least one objective")
    metrics = [
        ("test_elbo", "test ELBO (nats)"),
        ("test_nll", "test IW NLL (nats)"),
        ("test_kl", "test KL (nats)"),
        ("active_units", "active units"),
        ("seconds_per_epoch", "seconds per epoch"),
    ]
    names = [str(r["objective"]) for r in rows]
    with figure(260 * len(metrics), 330, constrained=True) as fig:
        for ax, (key, label) in zip(fig.subplots(1, len(metrics)), metrics, strict=True):
            for i, row in enumerate(rows):
                cell = row.get(key)
                if not cell:
                    continue
                values = np.asarray(cell["values"], dtype=np.float64)
                ax.scatter(np.full(values.size, i), values, s=14, color="0.5", zorder=2)
                low, high = cell["low"], cell["high"]
                err = [[cell["mean"] - low], [high - cell["mean"]]] if np.isfinite(low) else None
                ax.errorbar(i, cell["mean"], yerr=err, fmt="o", color="tab:blue", capsize=4)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set_title(label, fontsize=10)
            ax.grid(alpha=0.3)
        fig.suptitle("mean over seeds with 95% t-interval; grey: one seed each")
        return save(fig, path)


# the first names of the figures, before the plot_ prefix told them from the diagnostics
psis_khat = plot_psis_khat
posterior_pairs = plot_posterior_pairs
comparison = plot_comparison
