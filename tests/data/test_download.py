"""Tests of pyro_vae.data.download: where the files live, their SHA-256 verification, and the
download from mirrors (local HTTP servers on 127.0.0.1 only; a closed port stands for offline).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest
import torch
from data_helpers import (
    MNIST_FILES,
    SHARED,
    closed_port_url,
    copy_folder,
    labels_of,
    needs_data,
    serve,
)

from pyro_vae.data.datasets import DataError, Dataset, cache_dir, data_root, load_dataset
from pyro_vae.data.published import PUBLISHED_FILES, PublishedFile

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


def test_offline_draws_no_progress_bar_and_asks_each_mirror_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Offline, a download draws nothing (no bar stuck at 0%), asks each mirror once, not
    once per file, and says in one paragraph where the files go and what each variable is."""
    dead = [closed_port_url() + "first/", closed_port_url() + "second/"]
    with pytest.raises(DataError) as info:
        load_dataset("mnist", mirrors=dead, progress=True)
    err = capsys.readouterr().err
    assert "0%" not in err and err == ""
    message = str(info.value)
    assert [message.count(base) for base in dead] == [1, 1]
    assert "\n" not in message and message.index("PYRO_VAE_MIRROR") < message.index("Tried: ")
    for what in ("PYRO_VAE_DATA", "PYRO_VAE_CACHE", "base URL", str(cache_dir() / "mnist")):
        assert what in message
    assert all(name in message for name in MNIST_FILES)


def test_a_bar_for_each_file_a_server_sends_and_one_request_per_file_and_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Small stand-ins for the MNIST files, published; the mirror lacks one of them."""
    absent = MNIST_FILES[-1]
    served = tmp_path / "mirror"
    served.mkdir()
    files = {name: gzip.compress(name.encode() * 50) for name in MNIST_FILES}
    for name, raw in files.items():
        if name != absent:
            (served / name).write_bytes(raw)
    published = {
        name: PublishedFile(len(raw), "", hashlib.sha256(raw).hexdigest())
        for name, raw in files.items()
    }
    monkeypatch.setitem(PUBLISHED_FILES, "mnist", published)
    dead = closed_port_url()
    with serve(served) as (url, hits), pytest.raises(DataError) as info:
        load_dataset("mnist", mirrors=[url, dead], progress=True)
    assert sorted(hits) == sorted("/" + name for name in MNIST_FILES)
    err = capsys.readouterr().err
    assert [name in err for name in MNIST_FILES] == [True, True, True, False]
    message = str(info.value)
    assert f"{url}{absent} (HTTP 404)" in message and message.count(dead) == 1
    cached = sorted(p.name for p in (cache_dir() / "mnist").iterdir())
    assert cached == sorted(MNIST_FILES[:-1])  # the verified ones, no .part left behind
