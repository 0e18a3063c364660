"""pyro_vae.analysis.figures: the diagnostics' figures are written, and laid out readably."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyro_vae.analysis import diagnostics, figures

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_diagnostic_plots_write_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 1, 8, 8))
    paths = [
        figures.plot_psis_khat(
            rng.normal(0.4, 0.3, 50),
            tmp_path / "k.png",
            originals=images,
            recons=images,
            worst=[4, 1, 0],
        ),
        figures.plot_posterior_pairs(
            rng.normal(size=(100, 3)), rng.normal(size=(100, 3)), tmp_path / "p.png"
        ),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="the 2 worst points"):
        figures.plot_psis_khat(np.zeros(5), tmp_path / "x.png", originals=images,
                                   recons=images, worst=[0, 1])  # fmt: skip
    with pytest.raises(ValueError, match="same L"):
        figures.plot_posterior_pairs(np.zeros((5, 2)), np.zeros((5, 3)), tmp_path / "y.png")


def test_psis_plot_places_points_at_their_split_indices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scatter's x are the points' indices in the split (what the tiles and eval.json
    name), the worst point is circled there, and the legend sits outside the axes."""
    seen = {}

    def keep(fig: Any, path: Any) -> Path:  # inspect the figure instead of writing it
        fig.canvas.draw()
        ax = fig.axes[0]
        seen["points"] = ax.collections[0].get_offsets()[:, 0].tolist()
        seen["worst"] = ax.collections[1].get_offsets()[:, 0].tolist()
        seen["legend_x0"] = ax.get_legend().get_window_extent().x0
        seen["axes_x1"] = ax.get_window_extent().x1
        return Path(path)

    monkeypatch.setattr(figures, "save", keep)
    khat = np.array([0.1, 0.9, 0.3, 0.2])
    ids = [250, 7, 120, 31]  # a seeded subset of a split: not 0..3
    images = np.zeros((1, 1, 8, 8))
    figures.plot_psis_khat(
        khat, tmp_path / "k.png", originals=images, recons=images, worst=[1], point_ids=ids
    )
    assert seen["points"] == ids and seen["worst"] == [7]
    assert seen["legend_x0"] >= seen["axes_x1"]
    with pytest.raises(ValueError, match="point_ids must name the 4 points"):
        figures.plot_psis_khat(khat, tmp_path / "x.png", point_ids=[1, 2])


def test_the_worst_points_captions_can_each_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten worst points with four-digit indices: each caption is its own text over its own
    tile (index, then k-hat), and no two captions overlap (they once ran into one string,
    "#692 k=1.52#498 k=1.49#6732...")."""
    seen: dict[str, Any] = {}

    def keep(fig: Any, path: Any) -> Path:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        captions = [ax.title for ax in fig.axes[1:] if ax.get_title()]
        seen["texts"] = [t.get_text() for t in captions]
        seen["boxes"] = [t.get_window_extent(renderer) for t in captions]
        seen["tiles"] = [ax.get_window_extent() for ax in fig.axes[1:] if ax.get_title()]
        return Path(path)

    monkeypatch.setattr(figures, "save", keep)
    rng = np.random.default_rng(1)
    khat = rng.normal(0.9, 0.3, 8000)
    worst = np.argsort(-khat)[:10].tolist()
    images = rng.uniform(size=(10, 1, 28, 28))
    figures.plot_psis_khat(khat, tmp_path / "k.png", originals=images, recons=images, worst=worst)
    assert len(seen["texts"]) == 10
    for text, i in zip(seen["texts"], worst, strict=True):
        assert text.splitlines() == [f"#{i}", rf"$\hat k$={khat[i]:.2f}"]
    boxes = seen["boxes"]
    for left, right in itertools.pairwise(boxes):
        assert left.x1 < right.x0, (left, right)  # side by side, apart
    for box, tile in zip(boxes, seen["tiles"], strict=True):
        assert tile.x0 - 2 <= box.x0 and box.x1 <= tile.x1 + 2  # within its own column


def test_figures_are_named_plot_and_keep_their_first_names() -> None:
    """A figure is never taken for the diagnostic it draws: figures.plot_psis_khat draws what
    diagnostics.psis_khat computes. The first names still work."""
    assert not set(figures.__all__) & set(diagnostics.__all__)
    assert all(name.startswith("plot_") for name in figures.__all__)
    assert figures.psis_khat is figures.plot_psis_khat
    assert figures.posterior_pairs is figures.plot_posterior_pairs
    assert figures.comparison is figures.plot_comparison
