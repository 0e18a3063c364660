"""The rows a run trains on and is scored on, and their labels (pyro_vae.data.splits)."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.data import (
    DataError,
    Dataset,
    class_count,
    evaluation_split,
    split_labels,
    training_labels,
    training_split,
)


def _dataset(labels: bool = True, num_classes: int = 3) -> Dataset:
    x = torch.linspace(0, 1, 24).reshape(6, 4)  # (6, 4) grey levels in [0, 1]
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ys = (y, y[:3], y[3:]) if labels else (None, None, None)
    classes = num_classes if labels else None
    return Dataset("toy", x, x[:3], x[3:], *ys, num_classes=classes)


def test_evaluation_splits_are_binarized_once_with_fixed_seeds() -> None:
    data = _dataset()
    assert torch.equal(evaluation_split(data, "test", "none"), data.test)
    first = evaluation_split(data, "test", "dynamic")
    assert torch.equal(first, evaluation_split(data, "test", "dynamic"))  # the same draw
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="binarize must be 'none' or 'dynamic' here"):
        evaluation_split(data, "test", "auto")


def test_training_rows_and_their_labels_line_up() -> None:
    data = _dataset()
    assert torch.equal(training_split(data), data.train)
    both = training_split(data, "train+valid")
    assert both.shape[0] == 9 and torch.equal(both[6:], data.valid)
    labels = training_labels(data, "train+valid", conditional=True)
    assert labels is not None and labels.shape[0] == both.shape[0]
    assert training_labels(data, "train+valid", conditional=False) is None
    with pytest.raises(ValueError, match="train_on must be 'train' or 'train\\+valid'"):
        training_split(data, "valid")


def test_an_unconditional_model_gets_no_labels_and_no_classes() -> None:
    data = _dataset()
    assert split_labels(data, "test", conditional=False) is None
    assert torch.equal(split_labels(data, "test", conditional=True), data.test_labels)  # type: ignore[arg-type]
    assert class_count(data, conditional=False) == 0
    assert class_count(_dataset(labels=False), conditional=False) == 0
    assert class_count(data, conditional=True) == 3


def test_a_conditional_model_needs_labels_in_range() -> None:
    with pytest.raises(DataError, match="needs class labels, but data set 'toy' has none") as e:
        class_count(_dataset(labels=False), conditional=True)
    assert "VAEConfig(conditional=True)" in str(e.value) and "--" not in str(e.value)
    with pytest.raises(DataError, match=r"labels of 'toy' must lie in 0\.\.1"):
        class_count(_dataset(num_classes=2), conditional=True)
