"""The plots of a run: image grids, reconstructions, prior samples and training curves.

:func:`plot_run` turns a finished :func:`~pyro_vae.fit` into ``RUN_DIR/plots``:
``curves.png``, ``reconstructions.png`` and ``samples.png``, what ``pyro-vae train``
writes; :func:`write_run_plots` does the same from arrays. The figures are drawn as
:mod:`~pyro_vae.analysis.drawing` describes (the accepted shapes, no ``pyplot``, atomic
PNG files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from pyro_vae.analysis.classes import samples_by_class
from pyro_vae.analysis.drawing import (
    ArrayLike,
    as_number,
    check_positive,
    figure,
    grid_rows,
    render,
    save,
    to_numpy,
    to_tiles,
)
from pyro_vae.data import Dataset, evaluation_split, load_dataset
from pyro_vae.training.fit import FitResult, split_labels
from pyro_vae.training.lock import run_lock

__all__ = [
    "SAMPLES_TITLE",
    "curves",
    "image_grid",
    "plot_run",
    "reconstructions",
    "samples",
    "write_run_plots",
]

SAMPLES_TITLE = "means of p(x|z), z ~ p(z)"

_RECON_COLS = 10
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
_ACCURACY_PANEL = ("accuracy", r"accuracy of the classifier $q(y|x)$")  # M2 only
# split, marker, line style, x offset in epochs, legend label. The train figures of an epoch
# are a running mean over its minibatches while the weights change: they describe the model
# at mid-epoch on average, so they are drawn there; the valid figures are the weights at the
# epoch's end. Early in training the two differ for that reason alone.
_SPLITS = (
    ("train", "o", "-", -0.5, "train: running mean over the epoch"),
    ("valid", "s", "--", 0.0, "valid: at the epoch's end"),
)
_CURVES_NOTE = (
    "train: the mean over each epoch's minibatches while the weights change, drawn at "
    "mid-epoch; valid: the weights at the epoch's end, on the validation split.\n"
    "Early in training the two differ for that reason alone: the train ELBO lags behind."
)


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
    drawn = to_tiles(to_numpy(images, "images"), "images")
    ncols = min(check_positive(ncols, "ncols"), len(drawn))
    return render(drawn, grid_rows(len(drawn), ncols), path, title=title)


def reconstructions(
    originals: ArrayLike,
    reconstructions: ArrayLike,
    path: str | Path,
    *,
    num: int = 10,
    grey: ArrayLike | None = None,
) -> Path:
    """Write the first ``num`` originals above their reconstructions to the PNG ``path``.

    Rows are labelled ``original`` and ``reconstruction``; more than 10 images are laid out as
    several such row pairs. ``reconstructions`` must have as many rows as ``originals`` and the
    same number of values per row (it is reshaped like ``originals``, so a flat decoder output
    is accepted). Shapes are as for :func:`image_grid`; anything else raises ValueError.

    ``grey`` is for binarized data: the grey data of which ``originals`` are the binary
    draws the model saw, shaped like ``originals``. A row ``data (grey)`` then comes first,
    and the draws are labelled ``binarized input``, so random-looking pixels read as what
    they are: a Bernoulli draw from the grey image, not broken data.
    """
    orig = to_numpy(originals, "originals")
    recon = to_numpy(reconstructions, "reconstructions")
    sources = [to_tiles(orig, "originals")]
    n = min(check_positive(num, "num"), len(sources[0]))
    labels = ["original", "reconstruction"]
    if grey is not None:
        data = to_numpy(grey, "grey")
        if data.shape != orig.shape:
            raise ValueError(
                f"grey must have the shape of originals {tuple(orig.shape)}, "
                f"got {tuple(data.shape)}"
            )
        sources.insert(0, to_tiles(data, "grey"))
        labels = ["data (grey)", "binarized input", "reconstruction"]
    if recon.shape[:1] != orig.shape[:1] or recon.size != orig.size:
        raise ValueError(
            f"reconstructions must match originals of shape {tuple(orig.shape)}, "
            f"got shape {tuple(recon.shape)}"
        )
    sources.append(to_tiles(recon.reshape(orig.shape), "reconstructions"))
    rows: list[list[int]] = []
    for row in grid_rows(n, min(n, _RECON_COLS)):
        rows += [[k * n + i for i in row] for k in range(len(sources))]
    stacked = np.concatenate([source[:n] for source in sources])
    return render(stacked, rows, path, row_labels=labels * (len(rows) // len(sources)))


def samples(
    images: ArrayLike, path: str | Path, *, ncols: int = 10, title: str = SAMPLES_TITLE
) -> Path:
    """Write prior samples as a grid titled ``title`` (the means of p(x|z)); see image_grid."""
    return image_grid(images, path, ncols=ncols, title=title)


def _history_entry(i: int, entry: object) -> tuple[float, dict[str, float]]:
    """The epoch of ``history[i]`` and its recorded metrics, checked."""
    if not isinstance(entry, Mapping) or "epoch" not in entry:
        raise ValueError(f"history[{i}] must be a dict with an 'epoch' key, got {entry!r}")
    epoch = as_number(entry["epoch"], f"history[{i}]['epoch']")
    if not math.isfinite(epoch):
        raise ValueError(f"history[{i}]['epoch'] must be finite, got {epoch!r}")
    keys = [key for key, _ in (*_CURVE_PANELS, _ACCURACY_PANEL)]
    names = [f"{split[0]}_{key}" for split in _SPLITS for key in keys]
    metrics = {
        name: as_number(entry[name], f"history[{i}][{name!r}]")
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


def _epoch_axis(epochs: np.ndarray, xs: np.ndarray) -> tuple[tuple[float, float], bool]:
    """Shared x limits for the curve panels (over the epochs and the points drawn, ``xs``),
    and whether every epoch is a whole number."""
    lo, hi = float(min(epochs.min(), xs.min())), float(max(epochs.max(), xs.max()))
    integer = bool(np.all(epochs == np.round(epochs)))
    pad = max(0.04 * (hi - lo), 0.25 if integer else 0.0) or 0.5
    return (lo - pad, hi + pad), integer


def _curve_panel(
    ax: Axes, key: str, title: str, series: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    """One panel of :func:`curves`: the train and valid lines of ``key``, or a note."""
    for color, (split, marker, style, offset, label) in enumerate(_SPLITS):
        if f"{split}_{key}" in series:
            x, y = series[f"{split}_{key}"]
            every = max(1, len(x) // 30)  # markers on at most ~30 points
            ax.plot(  # each split has its colour in every panel
                x + offset,
                y,
                linestyle=style,
                marker=marker,
                ms=4,
                markevery=every,
                label=label,
                color=f"C{color}",
            )
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", color="0.5")
        ax.set_yticks([])
    unit = "fraction of the points" if key == "accuracy" else "nats per data point"
    ax.set(title=title, xlabel="epoch", ylabel=unit)
    ax.grid(alpha=0.3)


def curves(
    history: Sequence[Mapping[str, float]], path: str | Path, *, point_estimate: bool = False
) -> Path:
    """Write training curves to the PNG ``path``: ELBO, reconstruction and KL side by side,
    and the semi-supervised VAE's classifier accuracy (``valid_accuracy``) where recorded.

    With ``point_estimate`` (a Delta guide) the panels are titled by what the same numbers
    are there: log p(x|z*) + log p(z*), log p(x|z*) and -log p(z*).

    ``history`` holds one dict per epoch with an ``"epoch"`` key and any of ``train_elbo``,
    ``valid_elbo``, ``train_reconstruction``, ``valid_reconstruction``, ``train_kl`` and
    ``valid_kl`` in nats per data point; missing keys are skipped. Raises ValueError for an
    empty history, an entry without a finite ``"epoch"``, or a non-numeric value.

    The two splits' figures are not alike, and the plot says so (its legend and a note):
    an epoch's ``train_*`` figures are the running mean over its minibatches while the
    weights change, drawn half an epoch early (at mid-epoch, where the weights were on
    average); its ``valid_*`` figures are the weights at the epoch's end.
    """
    epochs, series = _history_series(history)
    offsets = {split: offset for split, _, _, offset, _ in _SPLITS}
    drawn = [x + offsets[name.split("_", 1)[0]] for name, (x, _) in series.items()]
    xlim, integer = _epoch_axis(epochs, np.concatenate([epochs, *drawn]))
    panels = [*(_POINT_PANELS if point_estimate else _CURVE_PANELS)]
    if any(name.endswith("_accuracy") for name in series):
        panels.append(_ACCURACY_PANEL)
    with figure(1300 * len(panels) // 3, 400, constrained=True) as fig:
        fig.supxlabel(_CURVES_NOTE, fontsize=8, color="0.3")
        for ax, (key, title) in zip(fig.subplots(1, len(panels)), panels, strict=True):
            _curve_panel(ax, key, title, series)
            ax.set_xlim(xlim)
            if integer:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        return save(fig, path)


def write_run_plots(
    run_dir: str | Path,
    *,
    history: Sequence[Mapping[str, float]],
    originals: ArrayLike | None = None,
    recons: ArrayLike | None = None,
    sample_images: ArrayLike | None = None,
    point_estimate: bool = False,
    grey: ArrayLike | None = None,
) -> list[Path]:
    """Write a run's plots into ``run_dir/plots`` and return their paths in that order.

    Always ``curves.png``; ``reconstructions.png`` when ``originals`` and ``recons`` are given
    (both or neither, else ValueError) and ``samples.png`` when ``sample_images`` is given.
    ``grey`` is the grey data of binarized ``originals`` (see :func:`reconstructions`).
    """
    if (originals is None) != (recons is None):
        raise ValueError("originals and recons must be given together or not at all")
    out = Path(run_dir) / "plots"
    paths = [curves(history, out / "curves.png", point_estimate=point_estimate)]
    if originals is not None and recons is not None:
        path = out / "reconstructions.png"
        paths.append(reconstructions(originals, recons, path, grey=grey))
    if sample_images is not None:
        paths.append(samples(sample_images, out / "samples.png"))
    return paths


def plot_run(result: FitResult, dataset: Dataset | None = None) -> list[Path]:
    """Write the plots of a finished :func:`~pyro_vae.fit` into ``run_dir/plots``.

    The curves of the ELBO, reconstruction and KL per epoch, ten test images beside their
    reconstructions (for binarized data: the grey images, the binary draws the model saw,
    and their reconstructions), and 100 samples: what ``pyro-vae train`` writes. The trainer draws
    nothing itself; this is the one call that turns its result into pictures. ``dataset``
    is the data set ``fit`` was given, if any (default: ``config.train.dataset``, loaded).
    """
    if result.run_dir is None:
        raise ValueError("the run was trained with write=False: there is no run directory")
    with run_lock(result.run_dir):  # a writer of the run (the CLI's train holds it already)
        return _plot_run(result, dataset)


def _plot_run(result: FitResult, dataset: Dataset | None) -> list[Path]:
    assert result.run_dir is not None
    vae, tc = result.vae, result.config.train
    dataset = dataset or load_dataset(tc.dataset, progress=False, schema=tc.schema)
    device = next(vae.parameters()).device
    x = evaluation_split(dataset, "test", tc.binarize)[:10].to(device)  # (10, *data_shape)
    grey = dataset.split("test")[:10] if tc.binarize == "dynamic" else None  # before the draw
    y = split_labels(vae, dataset, "test")
    with torch.no_grad():
        recons = vae.reconstruct(x, None if y is None else y[:10].to(device))
        sample_images = vae.sample(100)
    paths = write_run_plots(
        result.run_dir,
        history=result.history,
        originals=x,
        recons=recons,
        sample_images=sample_images,
        point_estimate=bool(result.summary.get("point_estimate", False)),
        grey=grey,
    )
    classes = vae.model.num_classes
    if classes:  # conditional or semi-supervised: one row of draws per class
        paths.append(samples_by_class(vae, result.run_dir / "plots"))
    return paths
