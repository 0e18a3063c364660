"""Data sets: the built-in ones (embedded digits, MNIST, Fashion-MNIST, binarized MNIST), their
verified downloads, a user's own arrays, and the fixed train/valid/test splits.

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
