"""Data sets: the built-in ones (embedded digits, MNIST, Fashion-MNIST, binarized MNIST), their
verified downloads, a user's own arrays and tables, the fixed train/valid/test splits
and the rows and labels a run trains and is scored on (:mod:`pyro_vae.data.splits`).

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
from pyro_vae.data.tables import COLUMN_TYPES, Column, TableSchema, infer_schema

__all__ = [
    "BUILTIN_DATASETS",
    "COLUMN_TYPES",
    "TEST_BINARIZATION_SEED",
    "VALID_BINARIZATION_SEED",
    "Column",
    "DataError",
    "Dataset",
    "TableSchema",
    "cache_dir",
    "class_count",
    "data_root",
    "decode_table",
    "dynamic_binarize",
    "encode_table",
    "evaluation_split",
    "hide_labels",
    "infer_schema",
    "is_binary",
    "load_dataset",
    "load_table",
    "split_labels",
    "static_binarize",
    "training_labels",
    "training_split",
]
