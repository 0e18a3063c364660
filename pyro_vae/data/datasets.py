"""Datasets for pyro-vae: built-in image benchmarks and user-provided arrays.

Every loader returns a :class:`Dataset` whose splits are float32 tensors. Images have shape
``(N, 1, H, W)`` with values in ``[0, 1]``. Built-in datasets other than ``digits`` are read from
the published files, verified by SHA-256, and downloaded into the cache when allowed. Every
problem with the input is reported as a :class:`DataError`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import itertools
import math
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

__all__ = [
    "BUILTIN_DATASETS",
    "DataError",
    "Dataset",
    "cache_dir",
    "data_root",
    "dynamic_binarize",
    "is_binary",
    "load_dataset",
    "static_binarize",
]

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "binarized-mnist")
USER_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".csv")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_SEED = 0
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_AMAT_LINE_BYTES = 2 * 784

_GZIP_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error, OSError)
_NET_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException, ValueError)


class DataError(ValueError):
    """A dataset could not be found, downloaded, verified or parsed."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Three splits of a dataset as float32 tensors, with optional int64 labels."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        for split in SPLITS:
            data, labels = self.split(split), self.labels(split)
            if data.dim() < 2 or data.shape[1:] != self.train.shape[1:]:
                raise DataError(
                    f"Dataset {self.name!r}: split {split!r} has shape {tuple(data.shape)}, but "
                    f"every split must have shape (N, *{tuple(self.train.shape[1:])}) like the "
                    "train split. Build the splits from arrays with the same per-item shape."
                )
            if labels is not None and labels.shape != (data.shape[0],):
                raise DataError(
                    f"Dataset {self.name!r}: {split}_labels has shape {tuple(labels.shape)}, but "
                    f"expected ({data.shape[0]},), one label per row of the {split} split. "
                    "Pass one integer label per item, or no labels."
                )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.split(s).shape[0]}" for s in SPLITS)
        return (
            f"Dataset(name={self.name!r}, {sizes}, data_shape={self.data_shape}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one item, ``train.shape[1:]``."""
        return tuple(self.train.shape[1:])

    def split(self, name: str) -> torch.Tensor:
        """The data tensor of split ``name`` ("train", "valid" or "test")."""
        return {"train": self.train, "valid": self.valid, "test": self.test}[_check_split(name)]

    def labels(self, name: str) -> torch.Tensor | None:
        """The int64 labels of split ``name``, or None if the dataset has no labels."""
        labels = {"train": self.train_labels, "valid": self.valid_labels, "test": self.test_labels}
        return labels[_check_split(name)]


def _check_split(name: str) -> str:
    if name not in SPLITS:
        raise DataError(
            f"Unknown split {name!r}. Expected one of {', '.join(SPLITS)}. Pass one of those names."
        )
    return name


# --------------------------------------------------------------------------- locations


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Download cache: $PYRO_VAE_CACHE, else $XDG_CACHE_HOME/pyro-vae, else ~/.cache/pyro-vae."""
    explicit = _env_path("PYRO_VAE_CACHE")
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_CACHE_HOME")
    base = xdg if xdg is not None else Path.home() / ".cache"
    return base / "pyro-vae"


def data_root() -> Path:
    """Folder holding ``mnist/``, ``fashion-mnist/``, ``binarized-mnist/``: $PYRO_VAE_DATA or
    the cache."""
    user = _env_path("PYRO_VAE_DATA")
    return user if user is not None else cache_dir()


# --------------------------------------------------------------------------- published files


@dataclass(frozen=True)
class _FileInfo:
    size: int
    md5: str
    sha256: str


# Published checksums (see the data README shipped with the test data).
_FILES: dict[str, dict[str, _FileInfo]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": _FileInfo(
            9912422,
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        "train-labels-idx1-ubyte.gz": _FileInfo(
            28881,
            "d53e105ee54ea40749a09fcbcd1e9432",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "t10k-images-idx3-ubyte.gz": _FileInfo(
            1648877,
            "9fb629c4189551a2d022fa330f9573f3",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "t10k-labels-idx1-ubyte.gz": _FileInfo(
            4542,
            "ec29112dd5afa0611ce80d1b7f02629c",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": _FileInfo(
            26421880,
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": _FileInfo(
            29515,
            "25c81989df183df01b3e8a0aad5dffbe",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": _FileInfo(
            4422102,
            "bef4ecab320f06d8554ea6380940ec79",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": _FileInfo(
            5148,
            "bb300cfdad3c16e7a12a480ee83cd310",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    },
    "binarized-mnist": {
        "binarized_mnist_train.amat.gz": _FileInfo(
            2196952,
            "55c6be0db63f47a228822edc21049d6f",
            "af247bd6075cf9adc4715459dcd5f13eaa99a2c92d8d81379a05da94770b6c0e",
        ),
        "binarized_mnist_valid.amat.gz": _FileInfo(
            439620,
            "bf325c5893052cb8b540dfeb3c0c6fbe",
            "533b71bc0198f4d73c54ae5fe6c96fc08dc3cf1b3fae24c5521dbc0452507e38",
        ),
        "binarized_mnist_test.amat.gz": _FileInfo(
            416802,
            "f7f18e7c5d551792f6aab10d62a7ea74",
            "32a3c54d03504632bf9f131b4a148c7567aa6fc87da017049b044bdc14c2a0f2",
        ),
        "binarized_mnist_train.amat": _FileInfo(
            78400000,
            "db28b1a6ae0fe70cbd3da91acf46e477",
            "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
        ),
        "binarized_mnist_valid.amat": _FileInfo(
            15680000,
            "bf37822a04e94123630de6a7dfd9c9ef",
            "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
        ),
        "binarized_mnist_test.amat": _FileInfo(
            15680000,
            "14e41ae11040adba6ab8cb291eda0dd8",
            "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
        ),
    },
}

_IDX_PARTS: tuple[tuple[str, ...], ...] = (
    ("train-images-idx3-ubyte.gz",),
    ("train-labels-idx1-ubyte.gz",),
    ("t10k-images-idx3-ubyte.gz",),
    ("t10k-labels-idx1-ubyte.gz",),
)

# For each dataset, the files it needs; each entry lists acceptable names, preferred first.
_PARTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "mnist": _IDX_PARTS,
    "fashion-mnist": _IDX_PARTS,
    "binarized-mnist": tuple(
        (f"binarized_mnist_{s}.amat.gz", f"binarized_mnist_{s}.amat") for s in SPLITS
    ),
}

_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "binarized-mnist": ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",),
}


# --------------------------------------------------------------------------- verification


@functools.lru_cache(maxsize=128)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, info: _FileInfo) -> None:
    """Check size and SHA-256 of a published file (hash cached per path, size and mtime)."""
    advice = (
        f"The file is corrupted or incomplete. Delete {path} and download it again "
        "(load_dataset(..., download=True)), or copy a good copy of the published file there."
    )
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"Could not read {path} to verify it: {exc}. {advice}") from exc
    if stat.st_size != info.size:
        raise DataError(
            f"File {path} has the wrong size: expected {info.size} bytes (the published file), "
            f"got {stat.st_size} bytes. {advice}"
        )
    try:
        got = _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError as exc:
        raise DataError(f"Could not read {path} to verify it: {exc}. {advice}") from exc
    if got != info.sha256:
        raise DataError(
            f"File {path} failed its checksum: expected sha256 {info.sha256}, got {got}. {advice}"
        )


# --------------------------------------------------------------------------- download


def _mirror_list(dataset: str, mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is not None:
        bases = list(mirrors)
    elif os.environ.get("PYRO_VAE_MIRROR", "").strip():
        bases = [os.environ["PYRO_VAE_MIRROR"].strip()]
    else:
        bases = list(_MIRRORS[dataset])
    return [base if base.endswith("/") else base + "/" for base in bases]


def _stream(url: str, part: Path, info: _FileInfo, progress: bool) -> str:
    """Download ``url`` into ``part``; return its sha256. Raises the network errors."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "pyro-vae"})
    digest = hashlib.sha256()
    bar = tqdm(total=info.size, unit="B", unit_scale=True, desc=part.stem, disable=not progress)
    with (
        urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
        open(part, "wb") as out,
        bar,
    ):
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            bar.update(len(chunk))
            if out.tell() > info.size:
                raise ValueError(f"the server sent more than the expected {info.size} bytes")
    return digest.hexdigest()


def _try_download(url: str, target: Path, info: _FileInfo, progress: bool) -> str | None:
    """Fetch one URL to ``target`` via ``<target>.part``; return None or why it failed."""
    part = target.with_name(target.name + ".part")
    try:
        got = _stream(url, part, info, progress)
        if got != info.sha256:
            return f"sha256 mismatch (expected {info.sha256}, got {got})"
        os.replace(part, target)  # only a verified file ever gets the final name
        return None
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except _NET_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def _download_part(
    dataset: str, folder: Path, names: tuple[str, ...], bases: list[str], progress: bool
) -> list[str]:
    """Download the first name of ``names`` any mirror serves; return failures (empty if ok)."""
    failures: list[str] = []
    for base in bases:
        for name in names:
            url = base + name
            reason = _try_download(url, folder / name, _FILES[dataset][name], progress)
            if reason is None:
                return []
            failures.append(f"{url} ({reason})")
    return failures or ["no mirrors given"]


def _download_missing(
    dataset: str,
    folder: Path,
    missing: list[tuple[str, ...]],
    mirrors: Sequence[str] | None,
    progress: bool,
) -> None:
    bases = _mirror_list(dataset, mirrors)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"Could not create the data folder {folder} to download {dataset!r} into: {exc}. "
            "Expected a writable folder. Set PYRO_VAE_CACHE to a writable location."
        ) from exc
    failed: list[tuple[str, ...]] = []
    tried: list[str] = []
    for names in missing:
        failures = _download_part(dataset, folder, names, bases, progress)
        if failures:
            failed.append(names)
            tried.extend(failures)
    if failed:
        raise DataError(
            # The advice comes before the list of tried URLs: a long list must never push it
            # out of a message that the CLI cuts to one paragraph.
            f"Could not download dataset {dataset!r}: {_describe(failed)} not found in {folder} "
            f"and every mirror failed. Expected the published files to be cached or "
            f"downloadable. Put the files in {folder} yourself, set PYRO_VAE_MIRROR to a "
            "reachable base URL, or set PYRO_VAE_DATA to a folder with the layout mnist/, "
            "fashion-mnist/, binarized-mnist/ holding the published files, which works "
            f"offline. Tried: {'; '.join(tried)}."
        )


def _describe(parts: Sequence[tuple[str, ...]]) -> str:
    return ", ".join(" (or ".join(names) + ")" * (len(names) - 1) for names in parts)


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _fetch_files(
    dataset: str,
    root: Path,
    allow_download: bool,
    mirrors: Sequence[str] | None,
    progress: bool,
) -> list[Path]:
    """Locate (downloading if allowed) and verify the files of a built-in dataset."""
    folder = root / dataset
    parts = _PARTS[dataset]
    missing = [names for names in parts if _find(folder, names) is None]
    if missing and not allow_download:
        urls = " or ".join(_MIRRORS[dataset])
        call = f"load_dataset({dataset!r}, root={str(root)!r}, download=True)"
        raise DataError(
            f"Dataset {dataset!r} is incomplete: {_describe(missing)} not found in {folder}. "
            f"Expected the published files in that folder. Put them there (they are published "
            f"under {urls}), or download them into it: from the command line, python -c "
            f'"from pyro_vae import load_dataset; {call}" (in Python, the same '
            f"load_dataset(..., download=True) call); or use the download cache: leave "
            f"PYRO_VAE_DATA unset (and pass no root), e.g. env -u PYRO_VAE_DATA pyro-vae train "
            f"--dataset {dataset}."
        )
    if missing:
        _download_missing(dataset, folder, missing, mirrors, progress)
    paths = [_find(folder, names) for names in parts]
    found = [p for p in paths if p is not None]
    for path in found:
        _verify(path, _FILES[dataset][path.name])
    return found


# --------------------------------------------------------------------------- parsers


def _gunzip(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except _GZIP_ERRORS as exc:
        raise DataError(
            f"Could not decompress {path}: {type(exc).__name__}: {exc}. Expected a complete "
            "gzip file; the file is truncated or corrupted. Delete it and download it again."
        ) from exc


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a gzip-compressed unsigned-byte IDX file with the given magic number."""
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


def _read_amat(path: Path) -> np.ndarray:
    """Parse a (gzip) .amat file of lines of 784 space-separated 0/1 into (N, 784) uint8."""
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


# --------------------------------------------------------------------------- built-in datasets


def _split_indices(n: int, sizes: Sequence[int], seed: int = SPLIT_SEED) -> list[np.ndarray]:
    """Split range(n) by a seeded permutation into sorted index arrays of the given sizes."""
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator).numpy()
    bounds = np.cumsum([0, *sizes])
    return [np.sort(perm[a:b]) for a, b in itertools.pairwise(bounds)]


def _images(pixels: np.ndarray, side: int, scale: float) -> torch.Tensor:
    """(N, side, side) or (N, side*side) pixels -> float32 (N, 1, side, side) / ``scale``."""
    data = pixels.reshape(len(pixels), 1, side, side).astype(np.float32) / np.float32(scale)
    return torch.from_numpy(data)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _images(np.asarray(bunch.data), 8, 16.0)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train, valid, test = _split_indices(len(images), (1297, 200, 300))
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
        _read_idx(p, _IDX_LABELS_MAGIC if "labels" in p.name else _IDX_IMAGES_MAGIC) for p in paths
    )
    for x, y in ((train_x, train_y), (test_x, test_y)):
        if len(x) != len(y):
            raise DataError(
                f"Dataset {name!r}: {len(x)} images but {len(y)} labels. Expected one label per "
                "image. Delete the files and download them again."
            )
    train, valid = _split_indices(len(train_x), (len(train_x) - 10_000, 10_000))
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
    train, valid, test = (_images(_read_amat(p), 28, 1.0) for p in paths)
    return Dataset("binarized-mnist", train, valid, test)


# --------------------------------------------------------------------------- user files


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
    train, valid, test = _split_indices(n, (n - 2 * n_held, n_held, n_held))
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


def _load_user_file(path: Path) -> Dataset:
    loader = _USER_LOADERS.get(path.suffix.lower())
    if loader is None or not path.is_file():
        raise DataError(
            f"Cannot load {path}: expected a file with one of the extensions "
            f"{', '.join(USER_EXTENSIONS)}, got {'a folder' if path.is_dir() else path.suffix!r}. "
            "Save the data with np.save, np.savez or as a numeric CSV file."
        )
    return loader(path)


# --------------------------------------------------------------------------- public entry


def load_dataset(
    name: str | os.PathLike[str],
    root: str | Path | None = None,
    *,
    download: bool | None = None,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> Dataset:
    """Load a built-in dataset by name, or a user's .npy/.npz/.csv file by path.

    A user's single array is split 80/10/10 by a seeded permutation. An ``.npz`` holds
    either ``train``, ``valid``, ``test`` (and optionally ``train_labels``, ``valid_labels``,
    ``test_labels``), one array, or ``x`` with its integer labels ``y`` (or ``labels``),
    split like one array with each label kept with its row.

    Built-in files are read from ``root`` (default :func:`data_root`), under a folder named like
    the dataset, and verified against their published SHA-256. ``download=None`` downloads
    missing files only into the cache (no ``root`` and no ``$PYRO_VAE_DATA``); ``True`` always
    allows it, ``False`` never. ``mirrors`` (or ``$PYRO_VAE_MIRROR``) replaces the base URLs.
    """
    name = os.fspath(name)
    key = name.strip().lower().replace("_", "-")
    if key == "digits":
        return _load_digits()
    if key in _PARTS:
        base = Path(root).expanduser() if root is not None else data_root()
        if download is None:
            download = root is None and _env_path("PYRO_VAE_DATA") is None
        paths = _fetch_files(key, base, download, mirrors, progress)
        return _load_binarized(paths) if key == "binarized-mnist" else _load_idx_dataset(key, paths)
    path = Path(name).expanduser()
    if path.exists():
        return _load_user_file(path)
    raise DataError(
        f"Unknown dataset {name!r}: it is not a built-in dataset and no such file exists. "
        f"Expected one of {', '.join(BUILTIN_DATASETS)}, or the path of a file with extension "
        f"{', '.join(USER_EXTENSIONS)}. Check the spelling or the path."
    )


# --------------------------------------------------------------------------- binarization


def _check_probabilities(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x):
        raise DataError(
            f"Binarization needs a floating-point tensor of probabilities, got dtype {x.dtype}. "
            "Convert it with x.float() (and scale it to [0, 1]) first."
        )
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise DataError(
            "Binarization needs probabilities in [0, 1], but the tensor has values outside that "
            f"range or NaN (min {x.min().item()}, max {x.max().item()}). Scale the data to [0, 1]."
        )


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a fresh Bernoulli(x) sample, keeping dtype and device (new noise every call)."""
    _check_probabilities(x)
    try:
        return torch.bernoulli(x, generator=generator)
    except RuntimeError as exc:
        raise DataError(
            f"Could not binarize a tensor on {x.device} with the given generator: {exc}. "
            "Expected a generator on the same device as the tensor. Pass a matching generator."
        ) from exc


def static_binarize(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Bernoulli(x) drawn once from a CPU generator seeded with ``seed``: same result each call."""
    _check_probabilities(x)
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x.detach().cpu(), generator=generator).to(x.device)


def is_binary(x: torch.Tensor) -> bool:
    """True if every value of ``x`` is 0 or 1."""
    return bool(((x == 0) | (x == 1)).all())
