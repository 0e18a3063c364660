"""Data sets: the built-in ones (embedded digits, MNIST, Fashion-MNIST, binarized MNIST), their
verified downloads, a user's own arrays and tables, and the fixed train/valid/test splits.

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
from pyro_vae.data.encoding import decode_table, encode_table, load_table
from pyro_vae.data.tables import COLUMN_TYPES, Column, TableSchema, infer_schema

__all__ = [
    "BUILTIN_DATASETS",
    "COLUMN_TYPES",
    "Column",
    "DataError",
    "Dataset",
    "TableSchema",
    "cache_dir",
    "data_root",
    "decode_table",
    "dynamic_binarize",
    "encode_table",
    "infer_schema",
    "is_binary",
    "load_dataset",
    "load_table",
    "static_binarize",
]
