r"""A VAE's labels: the classes of a conditional or semi-supervised VAE, and which it sees.

The conditional VAE (``VAEConfig(conditional=True)``, ``TrainConfig(labelled='all')``)
is given every label; the semi-supervised VAE M2 (``TrainConfig.labelled`` a number,
Kingma et al. 2014) keeps that many labels of the training rows, balanced over the
classes and chosen by the seed, and hides the others (``-1``). Its objective weighs each
labelled point's :math:`\log q(y|x)` by :func:`classifier_weight`.
"""

from __future__ import annotations

import dataclasses

import torch

from pyro_vae.config import RunConfig, TrainConfig, VAEConfig
from pyro_vae.data import DataError, Dataset, class_count, hide_labels
from pyro_vae.data import split_labels as _split_labels
from pyro_vae.data import training_labels as _training_labels
from pyro_vae.vae import VAE

__all__ = [
    "check_labelled",
    "classifier_weight",
    "split_labels",
    "training_labels",
    "with_classes",
]


def with_classes(config: VAEConfig, dataset: Dataset) -> VAEConfig:
    """A conditional (or semi-supervised) config gets ``num_classes`` from the data set,
    which must have labels; an unconditional one has none (0), whatever a rebuilt run's
    config said."""
    labelled = config.conditional or config.semi_supervised
    return dataclasses.replace(config, num_classes=class_count(dataset, labelled))


def check_labelled(config: RunConfig, dataset: Dataset) -> None:
    """Refuse ``TrainConfig.labelled`` on a data set without labels (DataError)."""
    if config.train.labelled is not None and dataset.num_classes is None:
        raise DataError(
            f"TrainConfig.labelled keeps the labels of some training points, but data set "
            f"{dataset.name!r} has no labels. Use a data set with labels (digits, mnist, "
            "fashion-mnist, or an .npz with train_labels, valid_labels and test_labels), or "
            "leave TrainConfig.labelled unset."
        )


def classifier_weight(tc: TrainConfig, num_rows: int) -> float:
    r"""The weight of each labelled point's :math:`\log q(y|x)` in M2's objective.

    Kingma et al. (2014, eq. 9) add :math:`\alpha\,\mathbb{E}_{\tilde p_l}[\log q(y|x)]`
    with :math:`\alpha = 0.1 N` (``TrainConfig.alpha``, None for that default): over the
    ``TrainConfig.labelled`` points, each point's weight is :math:`\alpha / N_l`.
    """
    alpha = 0.1 * num_rows if tc.alpha is None else float(tc.alpha)
    labelled = tc.labelled if isinstance(tc.labelled, int) else num_rows
    return alpha / labelled


def split_labels(vae: VAE, dataset: Dataset, split: str) -> torch.Tensor | None:
    """The labels of ``split`` if ``vae`` is conditional, else None.

    The VAE-taking form of :func:`pyro_vae.data.split_labels`.
    """
    return _split_labels(dataset, split, vae.config.conditional)


def training_labels(
    vae: VAE,
    dataset: Dataset,
    train_on: str = "train",
    labelled: int | str | None = None,
    seed: int = 0,
) -> torch.Tensor | None:
    """The labels of :func:`~pyro_vae.data.splits.training_split`'s rows for a conditional VAE,
    else None.

    For the semi-supervised VAE (M2) all but ``labelled`` of them are hidden (``-1``),
    balanced over the classes and chosen by ``seed`` (:func:`pyro_vae.data.hide_labels`).
    The VAE-taking form of :func:`pyro_vae.data.training_labels`.
    """
    config = vae.config
    y = _training_labels(dataset, train_on, config.conditional or config.semi_supervised)
    if y is None or not config.semi_supervised:
        return y
    count = labelled if isinstance(labelled, int) else y.shape[0]
    return hide_labels(y, count, config.num_classes, seed)
