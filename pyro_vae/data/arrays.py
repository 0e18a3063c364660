"""A user's own data: one ``.npy``, ``.npz`` or ``.csv`` file, checked and split.

A single array (``.npy``, one numeric ``.csv`` table with an optional header line, or an
``.npz`` of one array) is split 80/10/10 into train/valid/test by a seeded permutation
(:func:`~pyro_vae.data.base.split_indices`). An ``.npz`` may instead hold the splits
(``train``, ``valid``, ``test``, optionally ``train_labels``, ``valid_labels``,
``test_labels``), or an array ``x`` with its integer labels ``y`` (or ``labels``), split like
one array with each label kept with its row. Items of shape ``(H, W)`` gain a channel axis,
``(N, 1, H, W)``; rows of a table become ``(N, D)``. Values must be finite numbers; every
problem is a :class:`~pyro_vae.data.base.DataError` that names the file, the row or cell,
and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from pyro_vae.data.base import SPLITS, DataError, Dataset, split_indices

__all__ = ["USER_EXTENSIONS", "load_array_file"]

#: The file extensions :func:`load_array_file` reads.
USER_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".csv")


def _as_data(array: np.ndarray, what: str) -> torch.Tensor:
    """Check a user array (numeric, non-empty, finite) and return float32 (N, ...) items."""
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{what} has dtype {array.dtype}, but a real numeric array (bool, int or float) is "
            "expected. Convert the data to numbers before saving it."
        )
    if array.ndim == 0 or array.size == 0:
        raise DataError(
            f"{what} is empty (shape {array.shape}), but an array with at least one row and one "
            "value per row is expected. Save the data itself, not an empty placeholder."
        )
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf
        data = np.array(array, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{what} contains {int(bad.sum())} NaN or infinite values (after conversion to "
            f"float32, whose range ends near 3.4e38), the first at index {first}. Only finite "
            "values are accepted. Remove or impute them before loading."
        )
    if data.ndim in (1, 3):  # (N,) -> (N, 1); (N, H, W) -> (N, 1, H, W)
        data = data[:, None]
    return torch.from_numpy(data)


def _from_single(
    name: str, array: np.ndarray, what: str, labels: torch.Tensor | None = None
) -> Dataset:
    """One array -> 80/10/10 train/valid/test by a seeded permutation; labels follow their rows."""
    data = _as_data(array, what)
    n = data.shape[0]
    if n < 3:
        raise DataError(
            f"{what} has {n} rows, but at least 3 are needed to split it into train, valid and "
            "test. Provide more rows."
        )
    n_held = max(1, n // 10)
    train, valid, test = split_indices(n, (n - 2 * n_held, n_held, n_held))
    if labels is None:
        return Dataset(name, data[train], data[valid], data[test])
    if labels.shape[0] != n:
        raise DataError(
            f"{what} has {n} rows but its labels have {labels.shape[0]}. Save one integer label "
            "per row, in the same order."
        )
    splits = (data[train], data[valid], data[test], labels[train], labels[valid], labels[test])
    return Dataset(name, *splits, num_classes=int(labels.max()) + 1)


def _read_error(path: Path, kind: str, exc: BaseException) -> DataError:
    return DataError(
        f"Could not read {path} as a {kind} file: {type(exc).__name__}: {exc}. Expected a file "
        f"written by numpy ({'np.save' if kind == '.npy' else 'np.savez'}) without pickled "
        "objects. Check that the file is complete and has the right extension."
    )


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError as exc:
        raise DataError(f"Could not read {path}: {exc}. Check the path and permissions.") from exc


def _load_npy(path: Path) -> Dataset:
    if _is_zip(path):  # np.save into a zip: an .npz under another name
        return _load_npz(path)
    try:  # memory-map first, so a corrupt header cannot make numpy allocate a huge array
        array = np.array(np.load(path, mmap_mode="r", allow_pickle=False))
    except Exception as exc:  # numpy raises many kinds of errors on a corrupt file
        raise _read_error(path, ".npy", exc) from exc
    return _from_single(path.stem, array, str(path))


def _load_npz(path: Path) -> Dataset:
    try:
        # Open the file ourselves: np.load leaks its handle when the zip is corrupt.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except Exception as exc:  # numpy and zipfile raise many kinds of errors on a corrupt file
        raise _read_error(path, ".npz", exc) from exc
    if any(split in arrays for split in SPLITS):
        return _npz_splits(path, arrays)
    if len(arrays) == 1:
        key, array = next(iter(arrays.items()))
        return _from_single(path.stem, array, f"{path}[{key!r}]")
    for label_key in _SINGLE_LABEL_KEYS:
        if set(arrays) == {"x", label_key}:
            labels = _as_labels(arrays[label_key], f"{path}[{label_key!r}]")
            return _from_single(path.stem, arrays["x"], f"{path}['x']", labels)
    raise DataError(
        f"{path} holds the arrays {sorted(arrays)}, but expected either the keys 'train', "
        "'valid' and 'test' (optionally 'train_labels', 'valid_labels', 'test_labels'), a "
        "single array to split, or an array 'x' to split with its labels 'y' (or 'labels'). "
        "Rename the arrays when saving with np.savez."
    )


# an .npz of one array "x" and its labels under one of these keys is split like one array
_SINGLE_LABEL_KEYS = ("y", "labels")


def _npz_splits(path: Path, arrays: dict[str, np.ndarray]) -> Dataset:
    _require_keys(path, arrays, SPLITS)
    train, valid, test = (_as_data(arrays[s], f"{path}[{s!r}]") for s in SPLITS)
    label_keys = tuple(f"{s}_labels" for s in SPLITS)
    if not any(key in arrays for key in label_keys):
        return Dataset(path.stem, train, valid, test)
    _require_keys(path, arrays, label_keys)
    train_y, valid_y, test_y = (_as_labels(arrays[k], f"{path}[{k!r}]") for k in label_keys)
    num_classes = max(int(y.max()) for y in (train_y, valid_y, test_y)) + 1
    return Dataset(path.stem, train, valid, test, train_y, valid_y, test_y, num_classes=num_classes)


def _require_keys(path: Path, arrays: dict[str, np.ndarray], keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(
            f"{path} has arrays {sorted(arrays)} but is missing {missing}. Expected all of "
            f"{list(keys)} together. Save every one of them, or save a single array to split."
        )


def _as_labels(array: np.ndarray, what: str) -> torch.Tensor:
    if array.dtype.kind not in "iu" or array.ndim != 1 or (array.size and array.min() < 0):
        raise DataError(
            f"{what} has dtype {array.dtype} and shape {array.shape}, but labels must be a 1-D "
            "array of non-negative integers (class indices). Convert the labels to int64 "
            "class indices."
        )
    return torch.from_numpy(array.astype(np.int64))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _load_csv(path: Path) -> Dataset:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"Could not read {path} as UTF-8 text: {exc}. Expected a comma-separated text file "
            "of numbers. Save the CSV as UTF-8 text."
        ) from exc
    lines = [(i + 1, ln.rstrip("\r")) for i, ln in enumerate(text.split("\n")) if ln.strip()]
    if lines and not any(_is_number(c) for c in lines[0][1].split(",")):
        lines = lines[1:]
    if not lines:
        raise DataError(
            f"{path} has no data rows, but a CSV with at least 3 rows of numbers is expected. "
            "Add the data rows."
        )
    return _from_single(path.stem, _parse_csv_rows(path, lines), str(path))


def _parse_csv_rows(path: Path, lines: list[tuple[int, str]]) -> np.ndarray:
    try:
        return np.loadtxt(
            [ln for _, ln in lines], delimiter=",", dtype=np.float64, ndmin=2, comments=None
        )
    except ValueError as exc:
        _raise_csv_error(path, lines, exc)


def _raise_csv_error(path: Path, lines: list[tuple[int, str]], exc: Exception) -> NoReturn:
    """Find the first malformed row or cell and raise a DataError naming it."""
    width = len(lines[0][1].split(","))
    for lineno, line in lines:
        cells = line.split(",")
        if len(cells) != width:
            raise DataError(
                f"{path}, line {lineno}: expected {width} comma-separated values like the first "
                f"data row, got {len(cells)}. Give every row the same number of columns."
            ) from exc
        for col, cell in enumerate(cells, start=1):
            if not _is_number(cell):
                raise DataError(
                    f"{path}, line {lineno}, column {col}: the cell {cell!r} is not a number. "
                    "Expected numeric cells only (one optional header line of names is allowed "
                    "at the top). Fix or remove that cell."
                ) from exc
    raise DataError(
        f"Could not parse {path} as numeric CSV: {exc}. Expected comma-separated numbers with "
        "an optional header line. Check the file's format."
    ) from exc


_USER_LOADERS = {".npy": _load_npy, ".npz": _load_npz, ".csv": _load_csv}


def load_array_file(path: Path) -> Dataset:
    """The :class:`~pyro_vae.data.base.Dataset` in a user's ``.npy``, ``.npz`` or ``.csv`` file.

    The data set is named after the file's stem; see the module's docstring for the layouts
    read and how a single array is split.
    """
    loader = _USER_LOADERS.get(path.suffix.lower())
    if loader is None or not path.is_file():
        raise DataError(
            f"Cannot load {path}: expected a file with one of the extensions "
            f"{', '.join(USER_EXTENSIONS)}, got {'a folder' if path.is_dir() else path.suffix!r}. "
            "Save the data with np.save, np.savez or as a numeric CSV file."
        )
    return loader(path)
