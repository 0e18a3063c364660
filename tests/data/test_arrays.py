"""Tests of pyro_vae.data.arrays: a user's .npy, .npz and .csv files, their splits and their
refusals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import (
    SPLIT_NAMES,
)

from pyro_vae.data.datasets import DataError, load_dataset

# --------------------------------------------------------------------------- user files


def test_npy_two_dimensional_splits_80_10_10(tmp_path: Path) -> None:
    array = np.arange(100 * 6, dtype=np.float64).reshape(100, 6)
    np.save(tmp_path / "table.npy", array)
    ds = load_dataset(str(tmp_path / "table.npy"))
    assert ds.name == "table" and ds.data_shape == (6,) and ds.num_classes is None
    assert [ds.split(s).shape[0] for s in SPLIT_NAMES] == [80, 10, 10]
    rows = torch.cat([ds.train, ds.valid, ds.test])
    assert rows.dtype == torch.float32
    assert sorted(rows[:, 0].tolist()) == array[:, 0].tolist()  # a partition of the rows
    again = load_dataset(tmp_path / "table.npy")
    assert torch.equal(again.test, ds.test)


def test_npy_images_gain_a_channel_axis_and_three_rows_suffice(tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", np.zeros((3, 5, 7), dtype=np.uint8))
    ds = load_dataset(str(tmp_path / "img.npy"))
    assert ds.data_shape == (1, 5, 7)
    assert [ds.split(s).shape[0] for s in SPLIT_NAMES] == [1, 1, 1]


def test_npz_with_splits_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(
        path,
        train=np.ones((6, 2, 2)),
        valid=np.zeros((2, 2, 2)),
        test=np.zeros((3, 2, 2)),
        train_labels=np.array([0, 1, 2, 0, 1, 2]),
        valid_labels=np.array([4, 0]),
        test_labels=np.array([1, 1, 1]),
    )
    ds = load_dataset(str(path))
    assert ds.data_shape == (1, 2, 2) and ds.num_classes == 5
    assert ds.valid_labels is not None and ds.valid_labels.tolist() == [4, 0]
    assert ds.train.shape == (6, 1, 2, 2) and float(ds.train.sum()) == 24.0


def test_npz_single_array_and_bad_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", anything=np.ones((20, 3)))
    assert load_dataset(str(tmp_path / "one.npz")).data_shape == (3,)
    np.savez(tmp_path / "two.npz", x=np.ones((20, 3)), z=np.ones(20))
    with pytest.raises(DataError, match=r"\['x', 'z'\].*'x' to split with its labels 'y'"):
        load_dataset(str(tmp_path / "two.npz"))
    np.savez(tmp_path / "part.npz", train=np.ones((20, 3)), test=np.ones((5, 3)))
    with pytest.raises(DataError, match="missing \\['valid'\\]"):
        load_dataset(str(tmp_path / "part.npz"))
    np.savez(tmp_path / "lab.npz", train=np.ones((2, 3)), valid=np.ones((1, 3)),
             test=np.ones((1, 3)), train_labels=np.array([0.5, 1.0]),
             valid_labels=np.array([0]), test_labels=np.array([1]))  # fmt: skip
    with pytest.raises(DataError, match="non-negative integers"):
        load_dataset(str(tmp_path / "lab.npz"))


@pytest.mark.parametrize("key", ["y", "labels"])
def test_npz_single_array_with_labels(tmp_path: Path, key: str) -> None:
    """``x`` and its labels are split like one array, each label staying with its row."""
    rows = np.arange(30, dtype=np.float64)[:, None, None] * np.ones((30, 2, 3))  # row i: i
    np.savez(tmp_path / "xy.npz", x=rows, **{key: np.arange(30) % 4})
    ds = load_dataset(str(tmp_path / "xy.npz"))
    assert ds.data_shape == (1, 2, 3) and ds.num_classes == 4
    seen = []
    for split in SPLIT_NAMES:
        x, y = ds.split(split), ds.labels(split)
        assert y is not None and y.dtype == torch.int64 and y.shape == (x.shape[0],)
        index = x[:, 0, 0, 0].long()  # which row of the file each item is
        assert torch.equal(y, index % 4), split
        seen += index.tolist()
    assert sorted(seen) == list(range(30))  # a split of every row (24/3/3)
    assert [ds.split(s).shape[0] for s in SPLIT_NAMES] == [24, 3, 3]
    assert torch.equal(ds.train, load_dataset(str(_single(tmp_path, rows))).train)  # same split


def _single(tmp_path: Path, rows: np.ndarray) -> Path:
    np.save(tmp_path / "x.npy", rows)
    return tmp_path / "x.npy"


def test_npz_single_array_with_bad_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "short.npz", x=np.ones((20, 3)), y=np.arange(19))
    with pytest.raises(DataError, match=r"has 20 rows but its labels have 19"):
        load_dataset(str(tmp_path / "short.npz"))
    np.savez(tmp_path / "float.npz", x=np.ones((20, 3)), labels=np.ones(20))
    with pytest.raises(DataError, match=r"float\.npz\['labels'\].*non-negative integers"):
        load_dataset(str(tmp_path / "float.npz"))


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 0.5},{-i}" for i in range(10))
    (tmp_path / "plain.csv").write_text(rows + "\n")
    (tmp_path / "named.csv").write_text("a,b,c\r\n" + rows.replace("\n", "\r\n"))
    plain = load_dataset(str(tmp_path / "plain.csv"))
    named = load_dataset(str(tmp_path / "named.csv"))
    assert plain.data_shape == (3,) and named.data_shape == (3,)
    assert torch.equal(plain.train, named.train)
    assert sum(plain.split(s).shape[0] for s in SPLIT_NAMES) == 10


def test_csv_bad_cell_names_row_column_and_cell(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("x,y\n1,2\n3,4\n5,oops\n7,8\n")
    with pytest.raises(DataError, match=r"line 4, column 2: the cell 'oops'"):
        load_dataset(str(path))
    path.write_text("1,2\n3,4\n5\n7,8\n")
    with pytest.raises(DataError, match="line 3: expected 2"):
        load_dataset(str(path))
    path.write_text("a,b\n")
    with pytest.raises(DataError, match="no data rows"):
        load_dataset(str(path))


def test_nan_and_inf_are_rejected_with_count_and_first_index(tmp_path: Path) -> None:
    array = np.ones((10, 4))
    array[2, 3] = np.nan
    array[7, 0] = np.inf
    np.save(tmp_path / "nan.npy", array)
    with pytest.raises(DataError, match=r"2 NaN or infinite values.*index \(2, 3\)"):
        load_dataset(str(tmp_path / "nan.npy"))
    (tmp_path / "nan.csv").write_text("1,2\n3,nan\n5,6\n")
    with pytest.raises(DataError, match=r"1 NaN or infinite values.*index \(1, 1\)"):
        load_dataset(str(tmp_path / "nan.csv"))


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.zeros((2, 3)), "at least 3"),
        (np.array(["a", "b", "c"]), "dtype <U1"),
        (np.ones(5, dtype=np.complex64), "dtype complex64"),
        (np.float64(3.0), "empty"),
    ],
)
def test_bad_user_arrays_are_rejected(tmp_path: Path, array: np.ndarray, pattern: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=pattern):
        load_dataset(str(tmp_path / "bad.npy"))
