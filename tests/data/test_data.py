"""Tests for pyro_vae.data: built-in datasets, checksums, downloads, user files, binarization.

Tests that read MNIST-family files need $PYRO_VAE_DATA pointing at a folder with ``mnist/``,
``fashion-mnist/`` and ``binarized-mnist/`` (the shared test data); they skip otherwise. No test
contacts any host but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vae.data.datasets import (
    BUILTIN_DATASETS,
    DataError,
    Dataset,
    _read_amat,
    _read_idx,
    cache_dir,
    data_root,
    dynamic_binarize,
    is_binary,
    load_dataset,
    static_binarize,
)

SHARED = os.environ.get("PYRO_VAE_DATA")
needs_data = pytest.mark.skipif(
    not SHARED,
    reason="PYRO_VAE_DATA is not set; point it at the shared data folder (with mnist/, "
    "fashion-mnist/, binarized-mnist/) to run the tests that read the real files",
)
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
SPLIT_NAMES = ("train", "valid", "test")
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


# --------------------------------------------------------------------------- helpers


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yield the base URL and the requested paths."""
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def copy_folder(src: Path, dst: Path) -> Path:
    """Copy the files of ``src`` into ``dst`` as writable files (the shared data is read-only)."""
    dst.mkdir(parents=True, exist_ok=True)
    for file in src.iterdir():
        shutil.copyfile(file, dst / file.name)
    return dst


def labels_of(ds: Dataset, split: str) -> torch.Tensor:
    labels = ds.labels(split)
    assert labels is not None, f"{ds.name} has no {split} labels"
    return labels


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(header + payload)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test: cache in tmp, no $PYRO_VAE_DATA, no proxies, default mirror a dead port."""
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYRO_VAE_MIRROR", closed_port_url())
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --------------------------------------------------------------------------- locations


def test_cache_dir_and_data_root_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PYRO_VAE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pyro-vae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "pyro-vae"
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert data_root() == tmp_path / "c"
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "d"))
    assert data_root() == tmp_path / "d"


# --------------------------------------------------------------------------- digits


def test_digits_shapes_range_labels_and_split_sizes() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10 and ds.data_shape == (1, 8, 8)
    sizes = [ds.split(s).shape[0] for s in SPLIT_NAMES]
    assert sizes == [1297, 200, 300]
    for split in SPLIT_NAMES:
        x, y = ds.split(split), ds.labels(split)
        assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() <= 1.0
        assert y is not None and y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert set(y.tolist()) <= set(range(10))
        assert torch.equal(x * 16, (x * 16).round())  # values k/16
    counts = torch.stack([torch.bincount(labels_of(ds, s), minlength=10) for s in SPLIT_NAMES])
    assert int(counts.sum()) == 1797 and bool((counts.sum(0) > 150).all())


def test_digits_split_is_deterministic() -> None:
    first, second = load_dataset("digits"), load_dataset("digits")
    for split in SPLIT_NAMES:
        assert torch.equal(first.split(split), second.split(split))
        assert torch.equal(labels_of(first, split), labels_of(second, split))


def test_dataset_rejects_unknown_split_names() -> None:
    ds = load_dataset("digits")
    with pytest.raises(ValueError, match="Unknown split"):
        ds.split("validation")
    with pytest.raises(DataError, match="train, valid, test"):
        ds.labels("dev")


def test_dataset_rejects_inconsistent_splits() -> None:
    with pytest.raises(DataError, match="valid"):
        Dataset("bad", torch.zeros(4, 3), torch.zeros(2, 5), torch.zeros(2, 3))
    with pytest.raises(DataError, match="train_labels"):
        Dataset("bad", torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    assert SHARED
    return load_dataset("mnist", SHARED, download=False, progress=False)


@needs_data
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_datasets_shapes_sizes_values_and_labels(name: str) -> None:
    assert SHARED
    ds = load_dataset(name, SHARED, download=False, progress=False)
    assert ds.name == name and ds.num_classes == 10 and ds.data_shape == (1, 28, 28)
    assert [ds.split(s).shape[0] for s in SPLIT_NAMES] == [50_000, 10_000, 10_000]
    for split in SPLIT_NAMES:
        x, y = ds.split(split), ds.labels(split)
        assert x.dtype == torch.float32
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert torch.equal((x * 255).round() / 255, x)  # values k/255
        assert y is not None and y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 9
    folder = Path(SHARED) / name
    raw_train_labels = _read_idx(folder / "train-labels-idx1-ubyte.gz", 2049)
    merged = torch.cat([labels_of(ds, "train"), labels_of(ds, "valid")])
    assert torch.equal(
        torch.bincount(merged), torch.bincount(torch.from_numpy(raw_train_labels.astype(np.int64)))
    )
    raw_test = _read_idx(folder / "t10k-images-idx3-ubyte.gz", 2051)
    assert torch.equal(ds.test[:, 0] * 255, torch.from_numpy(raw_test.astype(np.float32)))


@needs_data
def test_mnist_split_is_deterministic_and_uses_the_environment(
    mnist: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SHARED
    monkeypatch.setenv("PYRO_VAE_DATA", SHARED)
    again = load_dataset("MNIST", progress=False)
    assert torch.equal(again.valid, mnist.valid)
    assert torch.equal(labels_of(again, "train"), labels_of(mnist, "train"))


@needs_data
def test_binarized_mnist_is_binary_with_standard_splits() -> None:
    assert SHARED
    ds = load_dataset("binarized-mnist", SHARED, download=False)
    assert ds.num_classes is None and ds.train_labels is None and ds.labels("test") is None
    assert ds.data_shape == (1, 28, 28)
    assert [ds.split(s).shape[0] for s in SPLIT_NAMES] == [50_000, 10_000, 10_000]
    for split in SPLIT_NAMES:
        x = ds.split(split)
        assert x.dtype == torch.float32 and is_binary(x)
        assert 0.1 < float(x.mean()) < 0.2  # about 13% of MNIST pixels are on


@needs_data
def test_binarized_mnist_accepts_uncompressed_amat_locally_and_by_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SHARED
    reference = load_dataset("binarized-mnist", SHARED, download=False)
    amat = tmp_path / "root" / "binarized-mnist"
    amat.mkdir(parents=True)
    for gz in (Path(SHARED) / "binarized-mnist").glob("*.amat.gz"):
        (amat / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    local = load_dataset("binarized-mnist", tmp_path / "root", download=False)
    assert torch.equal(local.test, reference.test)
    with serve(amat) as (url, hits):
        monkeypatch.setenv("PYRO_VAE_MIRROR", url)
        downloaded = load_dataset("binarized-mnist", progress=False)
    assert torch.equal(downloaded.valid, reference.valid)
    assert sorted(p.name for p in (cache_dir() / "binarized-mnist").iterdir()) == sorted(
        p.name for p in amat.iterdir()
    )
    assert any(h.endswith(".amat") for h in hits)


# --------------------------------------------------------------------------- checksums, parsing


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared mnist/ with one byte of the test labels flipped."""
    assert SHARED
    root = tmp_path_factory.mktemp("corrupt")
    copy_folder(Path(SHARED) / "mnist", root / "mnist")
    flip_byte(root / "mnist" / "t10k-labels-idx1-ubyte.gz", 100)
    return root


@needs_data
def test_checksum_mismatch_is_a_data_error(corrupt_root: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", corrupt_root, download=False)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and "sha256" in message
    assert "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" in message
    assert "Delete" in message


@needs_data
def test_truncated_published_file_is_a_data_error(tmp_path: Path) -> None:
    assert SHARED
    folder = copy_folder(Path(SHARED) / "mnist", tmp_path / "mnist")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(DataError, match="wrong size"):
        load_dataset("mnist", tmp_path, download=False)


def test_truncated_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = idx_bytes(2049, (5000,), bytes(range(10)) * 500)
    path.write_bytes(good)
    assert _read_idx(path, 2049).shape == (5000,)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated or corrupted"):
        _read_idx(path, 2049)
    amat = tmp_path / "binarized_mnist_test.amat.gz"
    amat.write_bytes(gzip.compress(b"0 1 " * 392)[:-5])
    with pytest.raises(DataError, match="decompress"):
        _read_amat(amat)


def test_idx_parser_checks_magic_dims_and_byte_count(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8)
    path.write_bytes(idx_bytes(2051, (2, 3, 4), pixels.tobytes()))
    assert np.array_equal(_read_idx(path, 2051), pixels.reshape(2, 3, 4))
    with pytest.raises(DataError, match="magic number 2049"):
        _read_idx(path, 2049)
    path.write_bytes(idx_bytes(2049, (24,), pixels.tobytes()))
    with pytest.raises(DataError, match=r"expected magic number 2051 .* got magic 2049"):
        _read_idx(path, 2051)
    path.write_bytes(idx_bytes(2051, (2, 3, 5), pixels.tobytes()))
    with pytest.raises(DataError, match=r"dimensions \(2, 3, 5\)"):
        _read_idx(path, 2051)


def test_amat_parser_reads_bits_and_rejects_other_bytes(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).integers(0, 2, size=(3, 784))
    text = "".join(" ".join(map(str, row)) + "\n" for row in rows)
    path = tmp_path / "x.amat"
    path.write_text(text)
    assert np.array_equal(_read_amat(path), rows)
    path.write_text(text.replace("1", "2", 1))
    with pytest.raises(DataError, match="other bytes"):
        _read_amat(path)


# --------------------------------------------------------------------------- download


@pytest.fixture(scope="module")
def mnist_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert SHARED
    return copy_folder(Path(SHARED) / "mnist", tmp_path_factory.mktemp("mirror") / "mnist")


@needs_data
def test_download_from_local_mirror_verifies_and_loads(mnist_mirror: Path, mnist: Dataset) -> None:
    with serve(mnist_mirror) as (url, hits):
        ds = load_dataset("mnist", mirrors=[closed_port_url(), url], progress=True)
        assert sorted(hits) == sorted("/" + f for f in MNIST_FILES)
        load_dataset("mnist", mirrors=[url], progress=False)
        assert len(hits) == len(MNIST_FILES)  # cached: no second download
    folder = cache_dir() / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MNIST_FILES)
    for name in MNIST_FILES:
        assert (folder / name).read_bytes() == (mnist_mirror / name).read_bytes()
    assert torch.equal(ds.train, mnist.train)
    assert torch.equal(labels_of(ds, "test"), labels_of(mnist, "test"))


@needs_data
def test_download_of_corrupted_file_leaves_nothing_under_final_name(
    corrupt_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(corrupt_root / "mnist") as (url, _):
        monkeypatch.setenv("PYRO_VAE_MIRROR", url)
        with pytest.raises(DataError, match="sha256 mismatch") as info:
            load_dataset("mnist", progress=False)
    assert url + "t10k-labels-idx1-ubyte.gz" in str(info.value)
    folder = cache_dir() / "mnist"
    assert not (folder / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(folder.glob("*.part"))


def test_offline_with_nothing_cached_names_the_directory() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", progress=False)
    message = str(info.value)
    folder = cache_dir() / "fashion-mnist"
    assert str(folder) in message and "train-images-idx3-ubyte.gz" in message
    assert os.environ["PYRO_VAE_MIRROR"] in message
    assert "PYRO_VAE_DATA" in message and "binarized-mnist/" in message
    assert not folder.exists() or not any(folder.iterdir())


@needs_data
def test_user_data_root_with_missing_files_does_not_download(
    tmp_path: Path, mnist_mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "mine"
    monkeypatch.setenv("PYRO_VAE_DATA", str(root))
    with serve(mnist_mirror) as (url, hits):
        monkeypatch.setenv("PYRO_VAE_MIRROR", url)
        with pytest.raises(DataError, match="download=True") as info:
            load_dataset("mnist", progress=False)
        assert hits == []
        assert str(root / "mnist") in str(info.value)
        ds = load_dataset("mnist", download=True, progress=False)
    assert ds.train.shape == (50_000, 1, 28, 28)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(MNIST_FILES)


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


def test_unknown_names_and_extensions(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert all(name in message for name in BUILTIN_DATASETS)
    assert all(ext in message for ext in (".npy", ".npz", ".csv"))
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(DataError, match=r"'\.txt'"):
        load_dataset(str(tmp_path / "data.txt"))
    with pytest.raises(DataError, match="a folder"):
        load_dataset(str(tmp_path))
    np.save(tmp_path / "obj.npy", np.array([{}, {}, {}], dtype=object))
    with pytest.raises(DataError, match="pickled"):
        load_dataset(str(tmp_path / "obj.npy"))


# --------------------------------------------------------------------------- binarization


def test_dynamic_binarize_mean_matches_probabilities() -> None:
    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(16, generator=gen, dtype=torch.float64)
    draws = 4000
    samples = dynamic_binarize(probs.expand(draws, 16).contiguous(), generator=gen)
    assert samples.dtype == torch.float64 and is_binary(samples)
    # Each pixel mean is an average of `draws` Bernoulli(p): standard error sqrt(p(1-p)/draws).
    standard_error = torch.sqrt(probs * (1 - probs) / draws)
    assert bool(((samples.mean(0) - probs).abs() <= 5 * standard_error).all())
    edges = dynamic_binarize(torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert edges.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_dynamic_binarize_draws_fresh_noise() -> None:
    x = torch.full((64, 64), 0.5)
    gen = torch.Generator().manual_seed(0)
    assert not torch.equal(dynamic_binarize(x, gen), dynamic_binarize(x, gen))


def test_static_binarize_is_deterministic_and_ignores_global_rng() -> None:
    x = torch.linspace(0, 1, 1000).reshape(10, 1, 10, 10)
    first = static_binarize(x, seed=3)
    torch.rand(5)  # advance the global generator; the result must not change
    assert torch.equal(first, static_binarize(x, seed=3))
    assert not torch.equal(first, static_binarize(x, seed=4))
    assert first.dtype == x.dtype and first.shape == x.shape and is_binary(first)
    n = x.numel()
    p_bar = float(x.mean())
    assert abs(float(first.mean()) - p_bar) <= 5 * math.sqrt(float((x * (1 - x)).sum())) / n


def test_binarize_rejects_bad_inputs() -> None:
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        static_binarize(torch.tensor([0.5, 1.5]), seed=0)
    with pytest.raises(DataError, match="floating-point"):
        dynamic_binarize(torch.tensor([0, 1]))
    with pytest.raises(DataError, match="NaN"):
        dynamic_binarize(torch.tensor([0.5, float("nan")]))


def test_is_binary() -> None:
    assert is_binary(torch.tensor([0.0, 1.0, 1.0]))
    assert not is_binary(torch.tensor([0.0, 0.5]))
    assert is_binary(torch.zeros(0))


# --------------------------------------------------------------------------- property test

PREFIXES = [b"", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"1,2,3\n", b"a,b\n0,1\n"]


@settings(max_examples=50, deadline=None, database=None)
@given(
    prefix=st.sampled_from(PREFIXES),
    body=st.binary(max_size=600) | st.text("0123456789.,-e\n nainf", max_size=300).map(str.encode),
    compress=st.booleans(),
)
def test_arbitrary_bytes_load_or_raise_data_error(
    tmp_path_factory: pytest.TempPathFactory, prefix: bytes, body: bytes, compress: bool
) -> None:
    folder = tmp_path_factory.mktemp("fuzz", numbered=True)
    payload = gzip.compress(prefix + body) if compress else prefix + body
    for name in ("x.npy", "x.csv", "x.npz"):
        (folder / name).write_bytes(payload)
        with contextlib.suppress(DataError):
            assert isinstance(load_dataset(str(folder / name)), Dataset)
    gz = folder / "x.gz"
    gz.write_bytes(payload)
    for parse in (lambda p: _read_idx(p, 2051), lambda p: _read_idx(p, 2049), _read_amat):
        with contextlib.suppress(DataError):
            assert isinstance(parse(gz), np.ndarray)
    with pytest.raises(DataError, match="extensions"):
        load_dataset(str(gz))
