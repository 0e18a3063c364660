"""Data sets: the built-in ones (embedded digits, MNIST, Fashion-MNIST, binarized MNIST), their
verified downloads, a user's own arrays, and the fixed train/valid/test splits.

=================  ==========================================================================
``datasets``       :func:`load_dataset` (by name or path) and binarization: the entry
``base``           :class:`Dataset`, :class:`DataError`, the split names, the seeded split
``builtin``        digits, MNIST, Fashion-MNIST, binarized MNIST: IDX and AMAT parsing
``published``      the published files' names, sizes, SHA-256 and default mirrors
``download``       where the files live (``PYRO_VAE_DATA``, ``PYRO_VAE_CACHE``), the download
                   from the mirrors (``PYRO_VAE_MIRROR``) and the SHA-256 verification
``arrays``         a user's ``.npy``, ``.npz`` or ``.csv`` file
=================  ==========================================================================

This subpackage imports nothing else of pyro_vae (but :mod:`pyro_vae.checks`): any layer may
use it.
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
