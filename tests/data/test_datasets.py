"""Tests of pyro_vae.data.datasets and .base: load_dataset by name, the Dataset container, the
digits set, binarization, and arbitrary bytes (which load or raise a DataError, never crash).
"""

from __future__ import annotations

import contextlib
import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import (
    SPLIT_NAMES,
    labels_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vae.data.builtin import read_amat, read_idx
from pyro_vae.data.datasets import (
    BUILTIN_DATASETS,
    DataError,
    Dataset,
    dynamic_binarize,
    is_binary,
    load_dataset,
    static_binarize,
)

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
    for parse in (lambda p: read_idx(p, 2051), lambda p: read_idx(p, 2049), read_amat):
        with contextlib.suppress(DataError):
            assert isinstance(parse(gz), np.ndarray)
    with pytest.raises(DataError, match="extensions"):
        load_dataset(str(gz))
