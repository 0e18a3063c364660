"""The built-in data sets: embedded digits, MNIST, Fashion-MNIST and binarized MNIST.

``digits`` is scikit-learn's 1,797 8x8 handwritten digits (values k/16), embedded in the
package, split 1297/200/300 by a seeded permutation. ``mnist`` and ``fashion-mnist`` are
read from the published IDX files (LeCun et al. 1998; Xiao, Rasul & Vollgraf 2017): the
60,000 training images are split 50,000/10,000 into train and valid by a seeded permutation,
the 10,000 test images are the test split; pixels are k/255. ``binarized-mnist`` is the
fixed binarization of Salakhutdinov & Murray (2008), 50,000/10,000/10,000 ``.amat`` lines of
784 bits. The files are found, downloaded and verified by :mod:`~pyro_vae.data.download`;
this module parses them, and refuses any file that is not what it claims with a
:class:`~pyro_vae.data.base.DataError`.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.base import DataError, Dataset, split_indices
from pyro_vae.data.download import PARTS, data_root, env_path, fetch_files

__all__ = [
    "BUILTIN_DATASETS",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "load_builtin",
    "read_amat",
    "read_idx",
]

#: The names :func:`~pyro_vae.data.datasets.load_dataset` knows besides file paths.
BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "binarized-mnist")
#: The magic number of an IDX file of unsigned-byte images (3 dimensions: N, rows, columns).
IDX_IMAGES_MAGIC = 2051
#: The magic number of an IDX file of unsigned-byte labels (1 dimension: N).
IDX_LABELS_MAGIC = 2049
_AMAT_LINE_BYTES = 2 * 784

_GZIP_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error, OSError)


# --------------------------------------------------------------------------- parsers


def _gunzip(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except _GZIP_ERRORS as exc:
        raise DataError(
            f"Could not decompress {path}: {type(exc).__name__}: {exc}. Expected a complete "
            "gzip file; the file is truncated or corrupted. Delete it and download it again."
        ) from exc


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a gzip-compressed unsigned-byte IDX file with the given magic number.

    An IDX file is a 4-byte big-endian magic number (``0x0000 08 D``: unsigned bytes, ``D``
    dimensions), ``D`` big-endian 4-byte sizes, then the bytes in C order; this returns
    them as a ``uint8`` array of those sizes. A wrong magic number, a short header or a
    byte count that disagrees with the sizes is a :class:`~pyro_vae.data.base.DataError`.
    """
    data = _gunzip(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    got = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if got != magic or len(data) < header:
        raise DataError(
            f"{path} is not an IDX file of the expected kind: expected magic number {magic} "
            f"(unsigned bytes, {ndim} dimensions) and a {header}-byte header, got magic {got} "
            f"in {len(data)} bytes. Check that the file is the right one, or download it again."
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise DataError(
            f"{path} is inconsistent: its header declares dimensions {dims}, which need "
            f"{expected} bytes, but it holds {len(data)} bytes. The file is truncated or "
            "corrupted; delete it and download it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_amat(path: Path) -> np.ndarray:
    """Parse a (gzip) .amat file of lines of 784 space-separated 0/1 into (N, 784) uint8.

    Each line is exactly ``"b b ... b\\n"`` (784 bits, 1,568 bytes); anything else is a
    :class:`~pyro_vae.data.base.DataError`.
    """
    try:
        raw = _gunzip(path) if path.suffix == ".gz" else path.read_bytes()
    except OSError as exc:
        raise DataError(f"Could not read {path}: {exc}. Check the file and try again.") from exc
    bad = f"{path} is not a binarized-MNIST .amat file: expected lines of 784 '0'/'1' values"
    if not raw or len(raw) % _AMAT_LINE_BYTES:
        raise DataError(
            f"{bad} ({_AMAT_LINE_BYTES} bytes each), got {len(raw)} bytes, which is not a whole "
            "number of such lines. Delete the file and download it again."
        )
    lines = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _AMAT_LINE_BYTES)
    seps, bits = lines[:, 1::2], lines[:, 0::2] - np.uint8(ord("0"))
    if (seps[:, :-1] != ord(" ")).any() or (seps[:, -1] != ord("\n")).any() or (bits > 1).any():
        raise DataError(
            f"{bad}, separated by single spaces and ending in a newline, but found other bytes. "
            "Delete the file and download it again."
        )
    return bits


# --------------------------------------------------------------------------- data sets


def _images(pixels: np.ndarray, side: int, scale: float) -> torch.Tensor:
    """(N, side, side) or (N, side*side) pixels -> float32 (N, 1, side, side) / ``scale``."""
    data = pixels.reshape(len(pixels), 1, side, side).astype(np.float32) / np.float32(scale)
    return torch.from_numpy(data)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _images(np.asarray(bunch.data), 8, 16.0)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train, valid, test = split_indices(len(images), (1297, 200, 300))
    return Dataset(
        "digits",
        images[train],
        images[valid],
        images[test],
        labels[train],
        labels[valid],
        labels[test],
        num_classes=10,
    )


def _load_idx_dataset(name: str, paths: list[Path]) -> Dataset:
    train_x, train_y, test_x, test_y = (
        read_idx(p, IDX_LABELS_MAGIC if "labels" in p.name else IDX_IMAGES_MAGIC) for p in paths
    )
    for x, y in ((train_x, train_y), (test_x, test_y)):
        if len(x) != len(y):
            raise DataError(
                f"Dataset {name!r}: {len(x)} images but {len(y)} labels. Expected one label per "
                "image. Delete the files and download them again."
            )
    train, valid = split_indices(len(train_x), (len(train_x) - 10_000, 10_000))
    labels = torch.from_numpy(train_y.astype(np.int64))
    return Dataset(
        name,
        _images(train_x[train], 28, 255.0),
        _images(train_x[valid], 28, 255.0),
        _images(test_x, 28, 255.0),
        labels[train],
        labels[valid],
        torch.from_numpy(test_y.astype(np.int64)),
        num_classes=10,
    )


def _load_binarized(paths: list[Path]) -> Dataset:
    train, valid, test = (_images(read_amat(p), 28, 1.0) for p in paths)
    return Dataset("binarized-mnist", train, valid, test)


def load_builtin(
    key: str,
    root: str | Path | None = None,
    *,
    download: bool | None = None,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> Dataset:
    """The built-in data set ``key`` (one of :data:`BUILTIN_DATASETS`, normalized).

    The files are read from ``root/key`` (``root`` defaults to
    :func:`~pyro_vae.data.download.data_root`); ``download=None`` allows downloading
    missing files only into the cache (no ``root`` and no ``$PYRO_VAE_DATA``).
    """
    if key == "digits":
        return _load_digits()
    if key not in PARTS:
        raise DataError(
            f"Unknown built-in dataset {key!r}. Expected one of {', '.join(BUILTIN_DATASETS)}."
        )
    base = Path(root).expanduser() if root is not None else data_root()
    if download is None:
        download = root is None and env_path("PYRO_VAE_DATA") is None
    paths = fetch_files(key, base, download, mirrors, progress)
    return _load_binarized(paths) if key == "binarized-mnist" else _load_idx_dataset(key, paths)
