"""The rows a run trains on and is scored on, and their labels: the data splits as used.

A :class:`~pyro_vae.data.base.Dataset` holds fixed train, valid and test splits. Training
reads the train split (or, for the IWAE paper's regime, train and valid stacked:
:func:`training_split`); validation and test read theirs through :func:`evaluation_split`,
which binarizes them once with a fixed seed under dynamic binarization, so that every run
and every seed is scored on the same binary images. The label helpers give a conditional
model the labels of those same rows, and nothing (``None``) to an unconditional one.

Everything here takes plain arguments (a data set, a split name, ``conditional``), so the
training loop, the analyses and the command line share one definition of each split.
"""

from __future__ import annotations

import torch

from pyro_vae.data.base import DataError, Dataset
from pyro_vae.data.datasets import static_binarize

__all__ = [
    "SPLITS",
    "TEST_BINARIZATION_SEED",
    "TRAIN_ON",
    "VALID_BINARIZATION_SEED",
    "class_count",
    "evaluation_split",
    "hide_labels",
    "split_labels",
    "training_labels",
    "training_split",
]

SPLITS = ("train", "valid", "test")
TRAIN_ON = ("train", "train+valid")

# Valid and test sets are binarized once with fixed seeds, independent of the run's seed,
# so that every run and every seed is scored on the same binary images.
VALID_BINARIZATION_SEED = 1_000_003
TEST_BINARIZATION_SEED = 1_000_033


def evaluation_split(dataset: Dataset, split: str, binarize: str) -> torch.Tensor:
    """A valid/test split as scored: binarized once with a fixed seed under ``dynamic``.

    ``binarize`` is ``"none"`` (the split as stored) or ``"dynamic"`` (a Bernoulli draw of
    each pixel with its intensity as probability, seeded by :data:`VALID_BINARIZATION_SEED`
    or :data:`TEST_BINARIZATION_SEED`).
    """
    if binarize not in ("none", "dynamic"):
        raise ValueError(f"binarize must be 'none' or 'dynamic' here, got {binarize!r}")
    x = dataset.split(split)
    if binarize == "dynamic":
        seed = TEST_BINARIZATION_SEED if split == "test" else VALID_BINARIZATION_SEED
        return static_binarize(x, seed)
    return x


def training_split(dataset: Dataset, train_on: str = "train") -> torch.Tensor:
    """The rows trained on: the train split, or (``train+valid``) train and valid stacked.

    Burda et al. (2015) train on all 60,000 MNIST training images, i.e. ``train+valid``
    here; the valid split is then still scored each epoch, but it is no longer held out.
    """
    if train_on == "train":
        return dataset.split("train")
    if train_on == "train+valid":
        return torch.cat([dataset.split("train"), dataset.split("valid")])  # (N_t + N_v, ...)
    raise ValueError(f"train_on must be 'train' or 'train+valid', got {train_on!r}")


def split_labels(dataset: Dataset, split: str, conditional: bool) -> torch.Tensor | None:
    """The labels ``(N,)`` of ``split`` for a conditional model, else None."""
    return dataset.labels(split) if conditional else None


def training_labels(
    dataset: Dataset, train_on: str = "train", conditional: bool = True
) -> torch.Tensor | None:
    """The labels ``(N,)`` of :func:`training_split`'s rows for a conditional model, else None."""
    if not conditional:
        return None
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be 'train' or 'train+valid', got {train_on!r}")
    parts = [dataset.labels(s) for s in train_on.split("+")]
    return torch.cat([y for y in parts if y is not None])  # (N,)


def class_count(dataset: Dataset, conditional: bool) -> int:
    """The number of classes a model conditioned on ``dataset``'s labels needs (0 if not).

    A conditional model needs labels for every split, each in ``0..num_classes - 1``;
    :class:`~pyro_vae.data.base.DataError` says what is missing otherwise.
    """
    if not conditional:
        return 0
    splits = [dataset.labels(s) for s in SPLITS]
    if dataset.num_classes is None or any(y is None for y in splits):
        raise DataError(
            f"a conditional VAE (VAEConfig(conditional=True)) needs class labels, but data set "
            f"{dataset.name!r} has none. Use a data set with labels (digits, mnist, "
            "fashion-mnist, or an .npz with train_labels, valid_labels and test_labels), or "
            "train an unconditional VAE (VAEConfig(conditional=False))."
        )
    for split, y in zip(SPLITS, splits, strict=True):
        assert y is not None
        if y.numel() and not bool(((y >= 0) & (y < dataset.num_classes)).all()):
            raise DataError(
                f"the {split} labels of {dataset.name!r} must lie in 0..{dataset.num_classes - 1}"
            )
    return dataset.num_classes


def hide_labels(y: torch.Tensor, labelled: int, num_classes: int, seed: int) -> torch.Tensor:
    """``y`` with all but ``labelled`` labels hidden (``-1``), the kept ones balanced.

    Each class keeps ``labelled // num_classes`` labels (the first ``labelled %
    num_classes`` classes one more), drawn without replacement from its rows by a generator
    seeded with ``seed``: the semi-supervised setting of Kingma et al. (2014), where e.g.
    100 MNIST labels are 10 per digit. Raises :class:`DataError` when a class has too few rows.
    """
    if labelled > y.shape[0]:
        raise DataError(
            f"TrainConfig.labelled asks for {labelled} labelled points, but the training rows "
            f"number {y.shape[0]}. Choose at most {y.shape[0]}."
        )
    gen = torch.Generator().manual_seed(seed)
    kept = torch.full_like(y, -1)
    for c in range(num_classes):
        rows = (y == c).nonzero().squeeze(-1)  # (R_c,)
        want = labelled // num_classes + (c < labelled % num_classes)
        if rows.shape[0] < want:
            raise DataError(
                f"TrainConfig.labelled={labelled} keeps {want} labels of class {c}, but the "
                f"training rows hold {rows.shape[0]} of it. Choose a smaller TrainConfig.labelled."
            )
        pick = rows[torch.randperm(rows.shape[0], generator=gen)[:want]]
        kept[pick] = c
    return kept
