r"""Loading a data set by name or path, and binarizing images.

:func:`load_dataset` is the one entry: a built-in name (:data:`BUILTIN_DATASETS`, read by
:mod:`~pyro_vae.data.builtin` from the files :mod:`~pyro_vae.data.download` finds, fetches
and verifies) or the path of a user's ``.npy``/``.npz``/``.csv`` file (read by
:mod:`~pyro_vae.data.arrays`). Every loader returns a :class:`Dataset` whose splits are
float32 tensors; images have shape ``(N, 1, H, W)`` with values in ``[0, 1]``. Every problem
with the input is reported as a :class:`DataError`.

The modules of ``pyro_vae.data``, by role: ``datasets`` (this one, the entry), ``base``
(:class:`Dataset`, :class:`DataError`, the seeded split), ``builtin`` (digits, MNIST,
Fashion-MNIST, binarized MNIST: IDX and AMAT parsing), ``published`` (the published files'
names, sizes, SHA-256 and default mirrors), ``download`` (``PYRO_VAE_DATA``,
``PYRO_VAE_CACHE``, ``PYRO_VAE_MIRROR``: where the files live, their download and
verification), ``arrays`` (a user's ``.npy``, ``.npz`` or ``.csv`` file), ``splits`` (the
rows a run trains and is scored on, and their labels).

A likelihood of binary data (Bernoulli) is trained on binarized images:
:func:`dynamic_binarize` draws :math:`x \sim \mathrm{Bernoulli}(p)` afresh each time, the
regime of Burda, Grosse & Salakhutdinov (2016, "Importance Weighted Autoencoders");
:func:`static_binarize` draws once from a seed, as the fixed test binarization.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pyro_vae.data.arrays import USER_EXTENSIONS, load_array_file
from pyro_vae.data.base import DataError, Dataset
from pyro_vae.data.builtin import BUILTIN_DATASETS, load_builtin
from pyro_vae.data.download import PARTS, cache_dir, data_root
from pyro_vae.data.encoding import load_table
from pyro_vae.data.tables import is_table_csv

__all__ = [
    "BUILTIN_DATASETS",
    "DataError",
    "Dataset",
    "cache_dir",
    "data_root",
    "dynamic_binarize",
    "is_binary",
    "load_dataset",
    "static_binarize",
]


def load_dataset(
    name: str | os.PathLike[str],
    root: str | Path | None = None,
    *,
    download: bool | None = None,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
    schema: str = "",
) -> Dataset:
    """Load a built-in dataset by name, or a user's .npy/.npz/.csv file by path.

    A ``.csv`` with a header and a text or missing cell, or any ``.csv`` given a ``schema``
    (column types: a TOML file or inline ``name=type;...``, ``TrainConfig.schema``), is a
    table (:mod:`~pyro_vae.data.tables`); its schema is ``Dataset.table``.

    A user's single array is split 80/10/10 by a seeded permutation. An ``.npz`` holds
    either ``train``, ``valid``, ``test`` (and optionally ``train_labels``, ``valid_labels``,
    ``test_labels``), one array, or ``x`` with its integer labels ``y`` (or ``labels``),
    split like one array with each label kept with its row.

    Built-in files are read from ``root`` (default :func:`data_root`), under a folder named like
    the dataset, and verified against their published SHA-256. ``download=None`` downloads
    missing files only into the cache (no ``root`` and no ``$PYRO_VAE_DATA``); ``True`` always
    allows it, ``False`` never. ``mirrors`` (or ``$PYRO_VAE_MIRROR``) replaces the base URLs.
    ``progress`` draws a progress bar for each file being downloaded.
    """
    name = os.fspath(name)
    key = name.strip().lower().replace("_", "-")
    if key == "digits" or key in PARTS:
        return load_builtin(key, root, download=download, mirrors=mirrors, progress=progress)
    path = Path(name).expanduser()
    if path.exists():
        if path.suffix.lower() == ".csv" and (schema.strip() or is_table_csv(path)):
            return load_table(path, schema)
        return load_array_file(path)
    raise DataError(
        f"Unknown dataset {name!r}: it is not a built-in dataset and no such file exists. "
        f"Expected one of {', '.join(BUILTIN_DATASETS)}, or the path of a file with extension "
        f"{', '.join(USER_EXTENSIONS)}. Check the spelling or the path."
    )


# --------------------------------------------------------------------------- binarization


def _check_probabilities(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x):
        raise DataError(
            f"Binarization needs a floating-point tensor of probabilities, got dtype {x.dtype}. "
            "Convert it with x.float() (and scale it to [0, 1]) first."
        )
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise DataError(
            "Binarization needs probabilities in [0, 1], but the tensor has values outside that "
            f"range or NaN (min {x.min().item()}, max {x.max().item()}). Scale the data to [0, 1]."
        )


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a fresh Bernoulli(x) sample, keeping dtype and device (new noise every call)."""
    _check_probabilities(x)
    try:
        return torch.bernoulli(x, generator=generator)
    except RuntimeError as exc:
        raise DataError(
            f"Could not binarize a tensor on {x.device} with the given generator: {exc}. "
            "Expected a generator on the same device as the tensor. Pass a matching generator."
        ) from exc


def static_binarize(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Bernoulli(x) drawn once from a CPU generator seeded with ``seed``: same result each call."""
    _check_probabilities(x)
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x.detach().cpu(), generator=generator).to(x.device)


def is_binary(x: torch.Tensor) -> bool:
    """True if every value of ``x`` is 0 or 1."""
    return bool(((x == 0) | (x == 1)).all())
