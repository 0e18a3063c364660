"""Fixtures of the data tests: an isolated environment for every test, and copies of the
shared MNIST files (see tests/data_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import PROXY_VARS, SHARED, closed_port_url, copy_folder, flip_byte

from pyro_vae.data import Dataset, load_dataset


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test: cache in tmp, no $PYRO_VAE_DATA, no proxies, default mirror a dead port."""
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYRO_VAE_MIRROR", closed_port_url())
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    assert SHARED
    return load_dataset("mnist", SHARED, download=False, progress=False)


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared mnist/ with one byte of the test labels flipped."""
    assert SHARED
    root = tmp_path_factory.mktemp("corrupt")
    copy_folder(Path(SHARED) / "mnist", root / "mnist")
    flip_byte(root / "mnist" / "t10k-labels-idx1-ubyte.gz", 100)
    return root


@pytest.fixture(scope="module")
def mnist_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert SHARED
    return copy_folder(Path(SHARED) / "mnist", tmp_path_factory.mktemp("mirror") / "mnist")
