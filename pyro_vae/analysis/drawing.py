"""How every figure of pyro-vae is drawn: tiles of any data, figures, atomic PNG files.

Only matplotlib's object API is used: every plot is a :class:`~matplotlib.figure.Figure`
drawn by its own :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` (:func:`figure`),
never ``pyplot``, so nothing needs a display or touches matplotlib's global figure registry
or backend setting. Every PNG is written atomically (:func:`save`): to a temporary file in
the destination folder, then moved into place with :func:`os.replace`, so a reader never
sees a half-written image.

Image inputs are numpy arrays or torch tensors of shape ``(N, *item)`` (:func:`to_tiles`): any
data a VAE can be trained on can be drawn. Pixel values are clipped to ``[0, 1]``.

- ``(N, 1, H, W)`` and ``(N, H, W)``: one grey image per item; ``(N, 3, H, W)``: one RGB image.
- ``(N, C, H, W)`` with any other ``C``, and items of more than three axes such as
  ``(N, A, B, C, H, W)``: each item is the grey 2-D slices over its last two axes (its
  channels; for more axes, in C order), laid out left to right and top to bottom in a
  near-square block, with a thin blue line between slices (white separates items).
- flat ``(N, D)``: ``sqrt(D) x sqrt(D)`` images when ``D`` is a perfect square, else one
  small line plot per row.

Only an item with no axis (``(N,)``) or an empty axis is refused.

The run's plots (:mod:`~pyro_vae.analysis.plots`) and the diagnostics' figures
(:mod:`~pyro_vae.analysis.figures`) are drawn with these helpers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.textpath import TextToPath

from pyro_vae.checks import is_int

__all__ = [
    "DPI",
    "SLICE_LINE",
    "ArrayLike",
    "as_number",
    "check_positive",
    "figure",
    "grid_rows",
    "render",
    "save",
    "to_numpy",
    "to_tiles",
]

ArrayLike: TypeAlias = "np.ndarray | torch.Tensor"

DPI = 100  # every figure: pixels per inch, so sizes are given in pixels
SLICE_LINE = "#4a90d9"  # the line between the 2-D slices of one item (see the module doc)
_TILE_PX = 84  # target on-screen size of one image tile, in pixels
_MARGIN_PX = 10
_TITLE_PX = 36
_TITLE_PT = 12
_LABEL_PT = 10
_LINE_PANEL_PX = (130, 90)  # one small-multiples line panel: width, height
_LINE_TICKS_PX = (34, 24)  # room for the y tick labels (left) and x tick labels (below)
_SHAPES = "(N, *item) with N >= 1, at least one item axis and no empty axis, e.g. (N, C, H, W)"


def to_numpy(x: object, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array; tensors are detached and moved to the CPU first.

    Anything that is not numeric raises a ValueError naming the argument ``name``.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be a numeric numpy array or torch tensor, got {type(x).__name__}"
        ) from err


def to_tiles(arr: np.ndarray, name: str) -> np.ndarray:
    """Tiles to draw: images ``(N, H, W)`` / ``(N, H, W, 3)``, or line data ``(N, D)``.

    ``arr`` is ``(N, *item)`` as the module docstring lists. Items that are not a one- or
    three-channel image become a block of their grey 2-D slices (NaN between slices); only
    an item without axes or an empty axis is refused (a ValueError naming ``name``).
    """
    if arr.ndim < 2 or 0 in arr.shape:
        raise ValueError(f"{name} must have shape {_SHAPES}; got shape {tuple(arr.shape)}")
    if arr.ndim == 4 and arr.shape[1] in (1, 3):
        return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    if arr.ndim >= 4:
        return _slice_blocks(arr.reshape(len(arr), -1, *arr.shape[-2:]))
    side = math.isqrt(arr.shape[1])
    if arr.ndim == 2 and side * side == arr.shape[1]:
        return arr.reshape(-1, side, side)
    return arr


def _slice_blocks(stack: np.ndarray) -> np.ndarray:
    """``(N, S, H, W)`` slices as ``(N, H', W')`` tiles: each item's S slices in a near-square
    block of ``ceil(sqrt(S))`` columns, one NaN pixel (drawn as a blue line) between them."""
    n, count, h, w = stack.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    out = np.full((n, rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for s in range(count):
        y, x = (s // cols) * (h + 1), (s % cols) * (w + 1)
        out[:, y : y + h, x : x + w] = stack[:, s]
    return out


def check_positive(value: int, name: str) -> int:
    """``value`` if it is a positive integer (not a ``bool``), else a ValueError naming ``name``."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def as_number(value: object, name: str) -> float:
    """``value`` as a float, else a ValueError naming ``name``."""
    if isinstance(value, str | bytes):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number, got {value!r}") from err


# --------------------------------------------------------------------------- figures and files


@contextmanager
def figure(width_px: float, height_px: float, *, constrained: bool = False) -> Iterator[Figure]:
    """A fresh figure of ``width_px`` by ``height_px`` pixels with its own Agg canvas.

    No ``pyplot``: nothing touches matplotlib's global figure registry. ``constrained``
    lays the axes out with matplotlib's constrained layout. The figure is cleared on exit
    whatever happens.
    """
    layout = ConstrainedLayoutEngine() if constrained else None
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    try:
        yield fig
    finally:
        fig.clear()


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (temporary file, then ``os.replace``).

    The parent folders are created; a failed write leaves no file behind. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _text_px(text: str, points: float) -> float:
    """Rendered width of ``text`` in pixels at ``points`` font size."""
    width, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(size=points), ismath=False
    )
    return float(width) * DPI / 72


# --------------------------------------------------------------------------- tile grids


def grid_rows(n: int, ncols: int) -> list[list[int]]:
    """Indices ``0..n-1`` laid out in rows of ``ncols``: ``[[0, 1, 2], [3, 4]]`` for 5, 3."""
    return [list(range(start, min(start + ncols, n))) for start in range(0, n, ncols)]


def _mosaic(tiles: np.ndarray, rows: list[list[int]], pad: int) -> np.ndarray:
    """One image holding the tiles in ``rows``, separated by ``pad`` white pixels."""
    h, w = tiles.shape[1:3]
    ncols = max(len(row) for row in rows)
    shape = (len(rows) * (h + pad) + pad, ncols * (w + pad) + pad, *tiles.shape[3:])
    out = np.ones(shape)
    for r, row in enumerate(rows):
        for c, i in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y : y + h, x : x + w] = tiles[i]
    return np.clip(out, 0.0, 1.0)


def _layout(
    content_px: tuple[float, float], *, title: str | None, left_px: float, bottom_px: float
) -> tuple[tuple[float, float], tuple[float, float, float, float]]:
    """Figure size in pixels, and the content rectangle in figure fractions."""
    cw, ch = content_px
    top = _TITLE_PX if title else _MARGIN_PX
    min_width = _text_px(title, _TITLE_PT) + 2 * _MARGIN_PX if title else 0.0
    width = max(left_px + cw + _MARGIN_PX, min_width)
    height = top + ch + bottom_px
    x0 = left_px + (width - left_px - cw - _MARGIN_PX) / 2
    return (width, height), (x0 / width, bottom_px / height, cw / width, ch / height)


def _decorate(
    fig: Figure, title: str | None, labels: Sequence[tuple[str, float]], label_x: float
) -> None:
    """The title above the content, and row labels right-aligned at ``label_x``."""
    if title:
        fig.text(
            0.5,
            1 - _TITLE_PX / 2 / (fig.get_figheight() * DPI),
            title,
            ha="center",
            va="center",
            fontsize=_TITLE_PT,
        )
    for text, y in labels:
        fig.text(label_x, y, text, ha="right", va="center", fontsize=_LABEL_PT)


def _render_images(
    tiles: np.ndarray,
    rows: list[list[int]],
    path: str | Path,
    title: str | None,
    row_labels: Sequence[str],
) -> Path:
    """Draw image tiles as one pixel-exact mosaic and save it."""
    h, w = tiles.shape[1:3]
    scale = max(1, round(_TILE_PX / max(h, w)))
    pad = max(1, round(max(h, w) / 14))
    mosaic = _mosaic(tiles, rows, pad)
    label_px = max((_text_px(t, _LABEL_PT) for t in row_labels), default=0.0)
    left = _MARGIN_PX + (label_px + 8 if row_labels else 0)
    (fw, fh), rect = _layout(
        (mosaic.shape[1] * scale, mosaic.shape[0] * scale),
        title=title,
        left_px=left,
        bottom_px=_MARGIN_PX,
    )
    with figure(fw, fh) as fig:
        ax = fig.add_axes(rect)
        ax.set_axis_off()
        ax.imshow(
            mosaic,
            cmap=colormaps["gray"].with_extremes(bad=SLICE_LINE) if mosaic.ndim == 2 else None,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            aspect="auto",
        )
        centres = [1 - (pad + r * (h + pad) + h / 2) / mosaic.shape[0] for r in range(len(rows))]
        ys = [rect[1] + rect[3] * c for c in centres]
        _decorate(fig, title, list(zip(row_labels, ys, strict=False)), rect[0] - 6 / fw)
        return save(fig, path)


def _render_lines(
    data: np.ndarray,
    rows: list[list[int]],
    path: str | Path,
    title: str | None,
    row_labels: Sequence[str],
) -> Path:
    """Draw each row of ``data`` as a small line plot in a shared-axes grid and save it."""
    nrows, ncols = len(rows), max(len(row) for row in rows)
    label_px = max((_text_px(t, _LABEL_PT) for t in row_labels), default=0.0)
    left = _MARGIN_PX + _LINE_TICKS_PX[0] + (label_px + 8 if row_labels else 0)
    content = (ncols * _LINE_PANEL_PX[0], nrows * _LINE_PANEL_PX[1])
    (fw, fh), rect = _layout(
        content, title=title, left_px=left, bottom_px=_MARGIN_PX + _LINE_TICKS_PX[1]
    )
    with figure(fw, fh) as fig:
        gs = fig.add_gridspec(
            nrows,
            ncols,
            left=rect[0],
            right=rect[0] + rect[2],
            bottom=rect[1],
            top=rect[1] + rect[3],
            wspace=0.08,
            hspace=0.12,
        )
        grid: list[list[Axes]] = gs.subplots(sharex=True, sharey=True, squeeze=False).tolist()
        x = np.arange(data.shape[1])
        marker = "o" if data.shape[1] <= 32 else None
        for r, c in np.ndindex(nrows, ncols):
            ax = grid[r][c]
            ax.tick_params(labelsize=7)
            if c < len(rows[r]):
                ax.plot(x, data[rows[r][c]], lw=1.0, marker=marker, ms=2.5)
            else:
                ax.set_axis_off()
                grid[r - 1][c].xaxis.set_tick_params(labelbottom=True)
        ys = [(row[0].get_position().y0 + row[0].get_position().y1) / 2 for row in grid]
        label_x = grid[0][0].get_position().x0 - (_LINE_TICKS_PX[0] + 6) / fw
        _decorate(fig, title, list(zip(row_labels, ys, strict=False)), label_x)
        return save(fig, path)


def render(
    tiles: np.ndarray,
    rows: list[list[int]],
    path: str | Path,
    *,
    title: str | None = None,
    row_labels: Sequence[str] = (),
) -> Path:
    """Draw ``tiles`` (see :func:`to_tiles`) arranged as ``rows`` of indices, and save a PNG.

    Images are drawn as one pixel-exact mosaic, line data as small multiples with shared
    axes; ``row_labels[r]`` is written left of row ``r`` and ``title`` above. Returns ``path``.
    """
    draw = _render_images if tiles.ndim >= 3 else _render_lines
    return draw(tiles, rows, path, title, row_labels)
