"""What every loader returns: the :class:`Dataset` of three splits, the :class:`DataError`
that reports any problem with the input, and the seeded permutation that cuts data into
splits.

The loaders (:mod:`~pyro_vae.data.builtin` for the built-in data sets,
:mod:`~pyro_vae.data.arrays` for a user's files) build a :class:`Dataset`;
:func:`~pyro_vae.data.datasets.load_dataset` picks the loader.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from pyro_vae.data.tables import TableSchema

__all__ = ["SPLITS", "SPLIT_SEED", "DataError", "Dataset", "split_indices"]

#: The names of a data set's three splits, in order.
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: The seed of every split a loader cuts itself (digits, a user's single array, MNIST's valid).
SPLIT_SEED = 0


class DataError(ValueError):
    """A dataset could not be found, downloaded, verified or parsed."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Three splits of a dataset as float32 tensors, with optional int64 labels.

    ``table`` is the :class:`~pyro_vae.data.tables.TableSchema` of a table read from a CSV
    (its rows encoded as :mod:`~pyro_vae.data.tables` says), None for arrays and images.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    num_classes: int | None = None
    table: TableSchema | None = None

    def __post_init__(self) -> None:
        for split in SPLITS:
            data, labels = self.split(split), self.labels(split)
            if data.dim() < 2 or data.shape[1:] != self.train.shape[1:]:
                raise DataError(
                    f"Dataset {self.name!r}: split {split!r} has shape {tuple(data.shape)}, but "
                    f"every split must have shape (N, *{tuple(self.train.shape[1:])}) like the "
                    "train split. Build the splits from arrays with the same per-item shape."
                )
            if labels is not None and labels.shape != (data.shape[0],):
                raise DataError(
                    f"Dataset {self.name!r}: {split}_labels has shape {tuple(labels.shape)}, but "
                    f"expected ({data.shape[0]},), one label per row of the {split} split. "
                    "Pass one integer label per item, or no labels."
                )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.split(s).shape[0]}" for s in SPLITS)
        return (
            f"Dataset(name={self.name!r}, {sizes}, data_shape={self.data_shape}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one item, ``train.shape[1:]``."""
        return tuple(self.train.shape[1:])

    def split(self, name: str) -> torch.Tensor:
        """The data tensor of split ``name`` ("train", "valid" or "test")."""
        return {"train": self.train, "valid": self.valid, "test": self.test}[_check_split(name)]

    def labels(self, name: str) -> torch.Tensor | None:
        """The int64 labels of split ``name``, or None if the dataset has no labels."""
        labels = {"train": self.train_labels, "valid": self.valid_labels, "test": self.test_labels}
        return labels[_check_split(name)]


def _check_split(name: str) -> str:
    if name not in SPLITS:
        raise DataError(
            f"Unknown split {name!r}. Expected one of {', '.join(SPLITS)}. Pass one of those names."
        )
    return name


def split_indices(n: int, sizes: Sequence[int], seed: int = SPLIT_SEED) -> list[np.ndarray]:
    """Cut ``range(n)`` by a seeded permutation into sorted index arrays of the given sizes.

    The permutation comes from a CPU :class:`torch.Generator` seeded with ``seed``, so the
    same ``(n, sizes, seed)`` gives the same splits on every machine and in every process.
    """
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator).numpy()
    bounds = np.cumsum([0, *sizes])
    return [np.sort(perm[a:b]) for a, b in itertools.pairwise(bounds)]
