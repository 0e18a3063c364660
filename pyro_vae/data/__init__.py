"""Data sets: the built-in ones (embedded digits, MNIST, Fashion-MNIST, binarized MNIST), their
verified downloads, a user's own arrays, the fixed train/valid/test splits and the rows
and labels a run trains and is scored on (:mod:`pyro_vae.data.splits`).

This subpackage imports nothing else of pyro_vae: any layer may use it.
"""

from pyro_vae.data.datasets import (
    BUILTIN_DATASETS,
    DataError,
    Dataset,
    cache_dir,
    data_root,
    dynamic_binarize,
    is_binary,
    load_dataset,
    static_binarize,
)
from pyro_vae.data.splits import (
    TEST_BINARIZATION_SEED,
    VALID_BINARIZATION_SEED,
    class_count,
    evaluation_split,
    hide_labels,
    split_labels,
    training_labels,
    training_split,
)

__all__ = [
    "BUILTIN_DATASETS",
    "TEST_BINARIZATION_SEED",
    "VALID_BINARIZATION_SEED",
    "DataError",
    "Dataset",
    "cache_dir",
    "class_count",
    "data_root",
    "dynamic_binarize",
    "evaluation_split",
    "hide_labels",
    "is_binary",
    "load_dataset",
    "split_labels",
    "static_binarize",
    "training_labels",
    "training_split",
]
