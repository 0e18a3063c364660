"""PNG plots of a run: image grids, reconstructions, prior samples and training curves.

Only matplotlib's object API is used: every plot is a :class:`~matplotlib.figure.Figure`
drawn by its own :class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`, never ``pyplot``,
so nothing needs a display or touches matplotlib's global figure registry or backend setting.
Every PNG is written atomically: to a temporary file in the destination folder, then moved into
place with :func:`os.replace`, so a reader never sees a half-written image.

Image inputs are numpy arrays or torch tensors of shape ``(N, *item)``: any data a VAE can
be trained on can be drawn. Pixel values are clipped to ``[0, 1]``.

- ``(N, 1, H, W)`` and ``(N, H, W)``: one grey image per item; ``(N, 3, H, W)``: one RGB image.
- ``(N, C, H, W)`` with any other ``C``, and items of more than three axes such as
  ``(N, A, B, C, H, W)``: each item is the grey 2-D slices over its last two axes (its
  channels; for more axes, in C order), laid out left to right and top to bottom in a
  near-square block, with a thin blue line between slices (white separates items).
- flat ``(N, D)``: ``sqrt(D) x sqrt(D)`` images when ``D`` is a perfect square, else one
  small line plot per row.

Only an item with no axis (``(N,)``) or an empty axis is refused.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
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
from matplotlib.ticker import MaxNLocator

from pyro_vae.data import Dataset, evaluation_split, load_dataset
from pyro_vae.training.fit import FitResult, split_labels

__all__ = [
    "SAMPLES_TITLE",
    "curves",
    "image_grid",
    "plot_run",
    "reconstructions",
    "samples",
    "write_run_plots",
]

ArrayLike: TypeAlias = "np.ndarray | torch.Tensor"

SAMPLES_TITLE = "means of p(x|z), z ~ p(z)"

_DPI = 100
_TILE_PX = 84  # target on-screen size of one image tile, in pixels
_MARGIN_PX = 10
_TITLE_PX = 36
_TITLE_PT = 12
_LABEL_PT = 10
_LINE_PANEL_PX = (130, 90)  # one small-multiples line panel: width, height
_LINE_TICKS_PX = (34, 24)  # room for the y tick labels (left) and x tick labels (below)
_RECON_COLS = 10
_SHAPES = "(N, *item) with N >= 1, at least one item axis and no empty axis, e.g. (N, C, H, W)"
_SLICE_LINE = "#4a90d9"  # the line between the 2-D slices of one item (see the module doc)
_CURVE_PANELS = (
    ("elbo", "ELBO"),
    ("reconstruction", r"reconstruction $\mathbb{E}_{q(z|x)}[\log\, p(x|z)]$"),
    ("kl", r"$\mathrm{KL}(q(z|x)\,\|\,p(z))$"),
)
_POINT_PANELS = (  # a Delta guide: log q = 0 at the point z*, so the terms read thus
    ("elbo", r"objective $\log p(x|z^*) + \log p(z^*)$"),
    ("reconstruction", r"reconstruction $\log p(x|z^*)$"),
    ("kl", r"$-\log p(z^*)$ at the guide's point"),
)
_SPLITS = (("train", "o", "-"), ("valid", "s", "--"))


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: object, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array; tensors are detached and moved to the CPU first."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be a numeric numpy array or torch tensor, got {type(x).__name__}"
        ) from err


def _tiles(arr: np.ndarray, name: str) -> np.ndarray:
    """Tiles to draw: images ``(N, H, W)`` / ``(N, H, W, 3)``, or line data ``(N, D)``.

    Items that are not a one- or three-channel image become a block of their grey 2-D
    slices (see :func:`_slice_blocks`); only an item without axes or an empty axis is refused.
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


def _positive(value: int, name: str) -> int:
    """``value`` if it is a positive integer, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _number(value: object, name: str) -> float:
    """``value`` as a float, else a ValueError naming ``name``."""
    if isinstance(value, str | bytes):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number, got {value!r}") from err


# --------------------------------------------------------------------------- figures and files


@contextmanager
def _figure(width_px: float, height_px: float, *, constrained: bool = False) -> Iterator[Figure]:
    """A fresh figure with its own Agg canvas, cleared on exit whatever happens."""
    layout = ConstrainedLayoutEngine() if constrained else None
    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, layout=layout)
    FigureCanvasAgg(fig)
    try:
        yield fig
    finally:
        fig.clear()


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (temporary file, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=_DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _text_px(text: str, points: float) -> float:
    """Rendered width of ``text`` in pixels at ``points`` font size."""
    width, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(size=points), ismath=False
    )
    return float(width) * _DPI / 72


# --------------------------------------------------------------------------- tile grids


def _rows(n: int, ncols: int) -> list[list[int]]:
    """Indices ``0..n-1`` laid out in rows of ``ncols``."""
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
            1 - _TITLE_PX / 2 / (fig.get_figheight() * _DPI),
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
    with _figure(fw, fh) as fig:
        ax = fig.add_axes(rect)
        ax.set_axis_off()
        ax.imshow(
            mosaic,
            cmap=colormaps["gray"].with_extremes(bad=_SLICE_LINE) if mosaic.ndim == 2 else None,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            aspect="auto",
        )
        centres = [1 - (pad + r * (h + pad) + h / 2) / mosaic.shape[0] for r in range(len(rows))]
        ys = [rect[1] + rect[3] * c for c in centres]
        _decorate(fig, title, list(zip(row_labels, ys, strict=False)), rect[0] - 6 / fw)
        return _save(fig, path)


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
    with _figure(fw, fh) as fig:
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
        return _save(fig, path)


def _render(
    tiles: np.ndarray,
    rows: list[list[int]],
    path: str | Path,
    *,
    title: str | None = None,
    row_labels: Sequence[str] = (),
) -> Path:
    """Draw ``tiles`` (see :func:`_tiles`) arranged as ``rows`` of indices, and save a PNG."""
    render = _render_images if tiles.ndim >= 3 else _render_lines
    return render(tiles, rows, path, title, row_labels)


# --------------------------------------------------------------------------- public API


def image_grid(
    images: ArrayLike, path: str | Path, *, ncols: int = 10, title: str | None = None
) -> Path:
    """Write ``images`` as a grid of ``ncols`` columns to the PNG ``path``; return ``path``.

    ``images`` has shape ``(N, *item)``: ``(N, C, H, W)`` with ``C`` in ``{1, 3}`` and
    ``(N, H, W)`` are drawn as images (one channel in grey), any other ``C`` or more item
    axes as a block of each item's grey 2-D slices, ``(N, D)`` as square images when ``D``
    is a perfect square, else one line plot per row (see the module docstring). Values are
    clipped to ``[0, 1]``. Raises ValueError for an item without axes (``(N,)``), an empty
    axis, or a non-positive ``ncols``.
    """
    tiles = _tiles(_to_numpy(images, "images"), "images")
    ncols = min(_positive(ncols, "ncols"), len(tiles))
    return _render(tiles, _rows(len(tiles), ncols), path, title=title)


def reconstructions(
    originals: ArrayLike, reconstructions: ArrayLike, path: str | Path, *, num: int = 10
) -> Path:
    """Write the first ``num`` originals above their reconstructions to the PNG ``path``.

    Rows are labelled ``original`` and ``reconstruction``; more than 10 images are laid out as
    several such row pairs. ``reconstructions`` must have as many rows as ``originals`` and the
    same number of values per row (it is reshaped like ``originals``, so a flat decoder output
    is accepted). Shapes are as for :func:`image_grid`; anything else raises ValueError.
    """
    orig = _to_numpy(originals, "originals")
    recon = _to_numpy(reconstructions, "reconstructions")
    tiles = _tiles(orig, "originals")
    if recon.shape[:1] != orig.shape[:1] or recon.size != orig.size:
        raise ValueError(
            f"reconstructions must match originals of shape {tuple(orig.shape)}, "
            f"got shape {tuple(recon.shape)}"
        )
    recon_tiles = _tiles(recon.reshape(orig.shape), "reconstructions")
    n = min(_positive(num, "num"), len(tiles))
    rows: list[list[int]] = []
    for row in _rows(n, min(n, _RECON_COLS)):
        rows += [row, [n + i for i in row]]
    both = np.concatenate([tiles[:n], recon_tiles[:n]])
    labels = ["original", "reconstruction"] * (len(rows) // 2)
    return _render(both, rows, path, row_labels=labels)


def samples(
    images: ArrayLike, path: str | Path, *, ncols: int = 10, title: str = SAMPLES_TITLE
) -> Path:
    """Write prior samples as a grid titled ``title`` (the means of p(x|z)); see image_grid."""
    return image_grid(images, path, ncols=ncols, title=title)


def _history_entry(i: int, entry: object) -> tuple[float, dict[str, float]]:
    """The epoch of ``history[i]`` and its recorded metrics, checked."""
    if not isinstance(entry, Mapping) or "epoch" not in entry:
        raise ValueError(f"history[{i}] must be a dict with an 'epoch' key, got {entry!r}")
    epoch = _number(entry["epoch"], f"history[{i}]['epoch']")
    if not math.isfinite(epoch):
        raise ValueError(f"history[{i}]['epoch'] must be finite, got {epoch!r}")
    names = [f"{split}_{key}" for split, _, _ in _SPLITS for key, _ in _CURVE_PANELS]
    metrics = {
        name: _number(entry[name], f"history[{i}][{name!r}]")
        for name in names
        if entry.get(name) is not None
    }
    return epoch, metrics


def _history_series(
    history: Sequence[Mapping[str, float]],
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """All epochs, and ``{key: (epochs, values)}`` for every recorded metric sorted by epoch."""
    if isinstance(history, str | bytes | Mapping) or not isinstance(history, Sequence):
        raise ValueError(f"history must be a sequence of dicts, got {type(history).__name__}")
    if not history:
        raise ValueError("history must hold at least one epoch, got an empty sequence")
    entries = [_history_entry(i, entry) for i, entry in enumerate(history)]
    points: dict[str, list[tuple[float, float]]] = {}
    for epoch, metrics in entries:
        for name, value in metrics.items():
            points.setdefault(name, []).append((epoch, value))
    series = {name: _columns(sorted(pts)) for name, pts in points.items()}
    return np.array([epoch for epoch, _ in entries]), series


def _columns(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """``[(x, y), ...]`` as two arrays ``x`` and ``y``."""
    arr = np.array(points, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _epoch_axis(epochs: np.ndarray) -> tuple[tuple[float, float], bool]:
    """Shared x limits for the curve panels, and whether every epoch is a whole number."""
    lo, hi = float(epochs.min()), float(epochs.max())
    integer = bool(np.all(epochs == np.round(epochs)))
    pad = max(0.04 * (hi - lo), 0.25 if integer else 0.0) or 0.5
    return (lo - pad, hi + pad), integer


def _curve_panel(
    ax: Axes, key: str, title: str, series: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    """One panel of :func:`curves`: the train and valid lines of ``key``, or a note."""
    for split, marker, style in _SPLITS:
        if f"{split}_{key}" in series:
            x, y = series[f"{split}_{key}"]
            every = max(1, len(x) // 30)  # markers on at most ~30 points
            ax.plot(x, y, linestyle=style, marker=marker, ms=4, markevery=every, label=split)
    if ax.lines:
        ax.legend(fontsize=9)
    else:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", color="0.5")
        ax.set_yticks([])
    ax.set(title=title, xlabel="epoch", ylabel="nats per data point")
    ax.grid(alpha=0.3)


def curves(
    history: Sequence[Mapping[str, float]], path: str | Path, *, point_estimate: bool = False
) -> Path:
    """Write training curves to the PNG ``path``: ELBO, reconstruction and KL side by side.

    With ``point_estimate`` (a Delta guide) the panels are titled by what the same numbers
    are there: log p(x|z*) + log p(z*), log p(x|z*) and -log p(z*).

    ``history`` holds one dict per epoch with an ``"epoch"`` key and any of ``train_elbo``,
    ``valid_elbo``, ``train_reconstruction``, ``valid_reconstruction``, ``train_kl`` and
    ``valid_kl`` in nats per data point; missing keys are skipped. Raises ValueError for an
    empty history, an entry without a finite ``"epoch"``, or a non-numeric value.
    """
    epochs, series = _history_series(history)
    xlim, integer = _epoch_axis(epochs)
    with _figure(1300, 400, constrained=True) as fig:
        panels = _POINT_PANELS if point_estimate else _CURVE_PANELS
        for ax, (key, title) in zip(fig.subplots(1, 3), panels, strict=True):
            _curve_panel(ax, key, title, series)
            ax.set_xlim(xlim)
            if integer:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        return _save(fig, path)


def write_run_plots(
    run_dir: str | Path,
    *,
    history: Sequence[Mapping[str, float]],
    originals: ArrayLike | None = None,
    recons: ArrayLike | None = None,
    sample_images: ArrayLike | None = None,
    point_estimate: bool = False,
) -> list[Path]:
    """Write a run's plots into ``run_dir/plots`` and return their paths in that order.

    Always ``curves.png``; ``reconstructions.png`` when ``originals`` and ``recons`` are given
    (both or neither, else ValueError) and ``samples.png`` when ``sample_images`` is given.
    """
    if (originals is None) != (recons is None):
        raise ValueError("originals and recons must be given together or not at all")
    out = Path(run_dir) / "plots"
    paths = [curves(history, out / "curves.png", point_estimate=point_estimate)]
    if originals is not None and recons is not None:
        paths.append(reconstructions(originals, recons, out / "reconstructions.png"))
    if sample_images is not None:
        paths.append(samples(sample_images, out / "samples.png"))
    return paths


def plot_run(result: FitResult, dataset: Dataset | None = None) -> list[Path]:
    """Write the plots of a finished :func:`~pyro_vae.fit` into ``run_dir/plots``.

    The curves of the ELBO, reconstruction and KL per epoch, ten test images beside their
    reconstructions, and 100 samples: what ``pyro-vae train`` writes. The trainer draws
    nothing itself; this is the one call that turns its result into pictures. ``dataset``
    is the data set ``fit`` was given, if any (default: ``config.train.dataset``, loaded).
    """
    if result.run_dir is None:
        raise ValueError("the run was trained with write=False: there is no run directory")
    vae, tc = result.vae, result.config.train
    dataset = dataset or load_dataset(tc.dataset, progress=False)
    device = next(vae.parameters()).device
    x = evaluation_split(dataset, "test", tc.binarize)[:10].to(device)  # (10, *data_shape)
    y = split_labels(vae, dataset, "test")
    with torch.no_grad():
        recons = vae.reconstruct(x, None if y is None else y[:10].to(device))
        sample_images = vae.sample(100)
    return write_run_plots(
        result.run_dir,
        history=result.history,
        originals=x,
        recons=recons,
        sample_images=sample_images,
        point_estimate=bool(result.summary.get("point_estimate", False)),
    )
