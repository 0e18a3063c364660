"""Tests of pyro_vae.data.builtin: MNIST, Fashion-MNIST and binarized MNIST from the published
files, and the IDX and AMAT parsers.

Tests that read MNIST-family files need $PYRO_VAE_DATA pointing at a folder with ``mnist/``,
``fashion-mnist/`` and ``binarized-mnist/`` (the shared test data); they skip otherwise. No test
contacts any host but 127.0.0.1.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import (
    SHARED,
    SPLIT_NAMES,
    idx_bytes,
    labels_of,
    needs_data,
    serve,
)

from pyro_vae.data.builtin import read_amat, read_idx
from pyro_vae.data.datasets import DataError, Dataset, cache_dir, is_binary, load_dataset


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
    raw_train_labels = read_idx(folder / "train-labels-idx1-ubyte.gz", 2049)
    merged = torch.cat([labels_of(ds, "train"), labels_of(ds, "valid")])
    assert torch.equal(
        torch.bincount(merged), torch.bincount(torch.from_numpy(raw_train_labels.astype(np.int64)))
    )
    raw_test = read_idx(folder / "t10k-images-idx3-ubyte.gz", 2051)
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


def test_truncated_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = idx_bytes(2049, (5000,), bytes(range(10)) * 500)
    path.write_bytes(good)
    assert read_idx(path, 2049).shape == (5000,)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated or corrupted"):
        read_idx(path, 2049)
    amat = tmp_path / "binarized_mnist_test.amat.gz"
    amat.write_bytes(gzip.compress(b"0 1 " * 392)[:-5])
    with pytest.raises(DataError, match="decompress"):
        read_amat(amat)


def test_idx_parser_checks_magic_dims_and_byte_count(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8)
    path.write_bytes(idx_bytes(2051, (2, 3, 4), pixels.tobytes()))
    assert np.array_equal(read_idx(path, 2051), pixels.reshape(2, 3, 4))
    with pytest.raises(DataError, match="magic number 2049"):
        read_idx(path, 2049)
    path.write_bytes(idx_bytes(2049, (24,), pixels.tobytes()))
    with pytest.raises(DataError, match=r"expected magic number 2051 .* got magic 2049"):
        read_idx(path, 2051)
    path.write_bytes(idx_bytes(2051, (2, 3, 5), pixels.tobytes()))
    with pytest.raises(DataError, match=r"dimensions \(2, 3, 5\)"):
        read_idx(path, 2051)


def test_amat_parser_reads_bits_and_rejects_other_bytes(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).integers(0, 2, size=(3, 784))
    text = "".join(" ".join(map(str, row)) + "\n" for row in rows)
    path = tmp_path / "x.amat"
    path.write_text(text)
    assert np.array_equal(read_amat(path), rows)
    path.write_text(text.replace("1", "2", 1))
    with pytest.raises(DataError, match="other bytes"):
        read_amat(path)
