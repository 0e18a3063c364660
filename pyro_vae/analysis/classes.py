r"""What the class label adds to a run: accuracy, the confusion matrix, draws per class.

For the semi-supervised VAE M2 (Kingma et al. 2014) the guide's classifier
:math:`q(y|x)` predicts :math:`\hat y = \arg\max_y q(y|x)`; :func:`confusion_matrix`
counts the predictions against the labels and :func:`plot_confusion` draws them
(``plots/confusion.png``). For a conditional or semi-supervised run,
:func:`samples_by_class` draws one row of means of :math:`p(x|z, y=k)`, :math:`z \sim
p(z)`, per class (``plots/samples_by_class.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_vae.analysis.drawing import grid_rows, render, save, to_numpy, to_tiles
from pyro_vae.vae import VAE

__all__ = ["confusion_matrix", "plot_confusion", "samples_by_class"]


def confusion_matrix(truth: torch.Tensor, guess: torch.Tensor, classes: int) -> np.ndarray:
    """Counts ``(C, C)``: entry ``[i, j]`` is the points of class ``i`` predicted as ``j``."""
    flat = truth.long().cpu() * classes + guess.long().cpu()  # (N,)
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes).numpy()


def plot_confusion(counts: np.ndarray, path: str | Path, *, title: str = "") -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted) as a PNG at ``path``."""
    classes = counts.shape[0]
    fig = Figure(figsize=(1.2 + 0.45 * classes, 1.0 + 0.45 * classes), layout="constrained")
    ax = fig.add_subplot()
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # each row sums to 1
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(classes):
        for j in range(classes):
            if counts[i, j]:
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, c=colour)
    ax.set_xticks(range(classes))
    ax.set_yticks(range(classes))
    ax.set_xlabel("predicted class, argmax q(y|x)")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(title or f"accuracy {accuracy:.3f} on {counts.sum()} points", fontsize=9)
    return save(fig, path)


def samples_by_class(vae: VAE, out: str | Path, per_class: int = 10) -> Path:
    """``out/samples_by_class.png``: row ``k`` holds means of p(x|z, y=k), z ~ p(z)."""
    classes = vae.model.num_classes
    if not classes:
        raise ValueError("samples_by_class needs a conditional or semi-supervised VAE")
    labels = torch.arange(classes).repeat_interleave(per_class)  # (C * per_class,)
    with torch.no_grad():
        images = vae.sample(labels.shape[0], label=labels)
    title = "means of p(x|z, y), z ~ p(z): one row per class y = 0, 1, ..."
    tiles = to_tiles(to_numpy(images, "images"), "images")
    path = Path(out) / "samples_by_class.png"
    return render(tiles, grid_rows(len(tiles), per_class), path, title=title)
