"""Where the built-in data sets' files live, how they are downloaded, and how they are verified.

MNIST, Fashion-MNIST and binarized MNIST are read from their published files, each checked
against its published size and SHA-256
(:data:`~pyro_vae.data.published.PUBLISHED_FILES`) before it is parsed. Three
environment variables say where the files are:

``PYRO_VAE_DATA``
    A folder holding ``mnist/``, ``fashion-mnist/`` and ``binarized-mnist/`` with the
    published files (the shared test data has this layout). Nothing is downloaded into it
    unless asked (``load_dataset(..., download=True)``); it works offline.
``PYRO_VAE_CACHE``
    The download cache, used when ``PYRO_VAE_DATA`` is unset (default
    ``$XDG_CACHE_HOME/pyro-vae``, else ``~/.cache/pyro-vae``). Missing files are downloaded
    into it.
``PYRO_VAE_MIRROR``
    The base URL of a server that holds the published files under their published names
    (``$PYRO_VAE_MIRROR/train-images-idx3-ubyte.gz``), tried instead of the default mirrors
    (:data:`~pyro_vae.data.published.MIRRORS`): a local copy, a proxy, or a mirror reachable
    where the defaults are not.
    ``load_dataset(..., mirrors=[...])`` does the same for one call.

A download goes to ``<name>.part`` and gets its final name only once its SHA-256 matches, so
an interrupted or corrupted download never passes for a good file. Each file is asked of each
mirror once; a mirror that does not answer at all (no network, refused, timed out) is not
asked again for the other files. A progress bar is drawn only for a file a server is sending.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from pyro_vae.data.base import DataError
from pyro_vae.data.published import MIRRORS, PARTS, PUBLISHED_FILES, PublishedFile

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "cache_dir",
    "data_root",
    "env_path",
    "fetch_files",
]

#: Seconds a download waits for a server to connect or to send the next bytes.
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_NET_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException, ValueError)


# --------------------------------------------------------------------------- locations


def env_path(var: str) -> Path | None:
    """The path in environment variable ``var`` (``~`` expanded), or None if unset or blank."""
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Download cache: $PYRO_VAE_CACHE, else $XDG_CACHE_HOME/pyro-vae, else ~/.cache/pyro-vae."""
    explicit = env_path("PYRO_VAE_CACHE")
    if explicit is not None:
        return explicit
    xdg = env_path("XDG_CACHE_HOME")
    base = xdg if xdg is not None else Path.home() / ".cache"
    return base / "pyro-vae"


def data_root() -> Path:
    """Folder holding ``mnist/``, ``fashion-mnist/``, ``binarized-mnist/``: $PYRO_VAE_DATA or
    the cache."""
    user = env_path("PYRO_VAE_DATA")
    return user if user is not None else cache_dir()


# --------------------------------------------------------------------------- verification


@functools.lru_cache(maxsize=128)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, info: PublishedFile) -> None:
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
        bases = list(MIRRORS[dataset])
    return [base if base.endswith("/") else base + "/" for base in bases]


def _why(exc: BaseException) -> str:
    """``ConnectionRefusedError: [Errno 111] Connection refused`` (a URLError unwrapped)."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return f"{type(exc).__name__}: {exc}"


def _copy(response: BinaryIO, part: Path, name: str, info: PublishedFile, progress: bool) -> str:
    """Write what a server sends to ``part`` under a progress bar; return its sha256."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    bar = tqdm(total=info.size, unit="B", unit_scale=True, desc=name, disable=not progress)
    with open(part, "wb") as out, bar:
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            bar.update(len(chunk))
            if out.tell() > info.size:
                raise ValueError(f"the server sent more than the expected {info.size} bytes")
    return digest.hexdigest()


def _try_download(
    url: str, target: Path, info: PublishedFile, progress: bool
) -> tuple[str | None, bool]:
    """Fetch ``url`` to ``target`` via ``<target>.part``.

    Returns why it failed (None if the file is in place, verified) and whether a server
    answered at all: no bar is drawn before one does.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "pyro-vae"})
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}", True
    except _NET_ERRORS as exc:
        return _why(exc), False
    part = target.with_name(target.name + ".part")
    try:
        with response:
            got = _copy(response, part, target.name, info, progress)
        if got != info.sha256:
            return f"sha256 mismatch (expected {info.sha256}, got {got})", True
        os.replace(part, target)  # only a verified file ever gets the final name
        return None, True
    except _NET_ERRORS as exc:
        return _why(exc), True
    finally:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def _download_part(
    files: dict[str, PublishedFile],
    folder: Path,
    names: tuple[str, ...],
    bases: list[str],
    silent: set[str],
    tried: list[str],
    progress: bool,
) -> bool:
    """Download the first of ``names`` a mirror serves; record each failed URL in ``tried``.

    A mirror that did not answer is put in ``silent`` and not asked again.
    """
    for base in bases:
        for name in names:
            if base in silent:
                break
            url = base + name
            reason, answered = _try_download(url, folder / name, files[name], progress)
            if reason is None:
                return True
            tried.append(f"{url} ({reason})")
            if not answered:
                silent.add(base)
    return False


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
            "Expected a writable folder. Set PYRO_VAE_CACHE to a writable location, or set "
            "PYRO_VAE_DATA to a folder that holds the published files."
        ) from exc
    silent: set[str] = set()
    tried: list[str] = []
    failed = [
        names
        for names in missing
        if not _download_part(
            PUBLISHED_FILES[dataset], folder, names, bases, silent, tried, progress
        )
    ]
    if failed:
        raise DataError(_download_failure(dataset, folder, failed, tried))


def _download_failure(
    dataset: str, folder: Path, failed: list[tuple[str, ...]], tried: list[str]
) -> str:
    """One paragraph: what is missing, the ways to provide it, then the URLs tried.

    The advice comes before the list of tried URLs: a long list must never push it out of
    a message that the command line cuts to one paragraph.
    """
    return (
        f"Could not download dataset {dataset!r}: {_describe(failed)} not found in {folder}, "
        "and no mirror served a verified copy. Put the published files in that folder "
        "yourself; or set PYRO_VAE_DATA to a folder with the layout mnist/, fashion-mnist/, "
        "binarized-mnist/ holding them (read offline, nothing is downloaded into it); or set "
        "PYRO_VAE_CACHE to move the download cache; or set PYRO_VAE_MIRROR to the base URL "
        "of a reachable server holding the files under their published names, tried instead "
        f"of the default mirrors. Tried: {'; '.join(tried) or 'nothing (no mirrors given)'}."
    )


def _describe(parts: Sequence[tuple[str, ...]]) -> str:
    return ", ".join(" (or ".join(names) + ")" * (len(names) - 1) for names in parts)


def _find(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def fetch_files(
    dataset: str,
    root: Path,
    allow_download: bool,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """The verified files of built-in ``dataset`` under ``root/dataset``, in the order of
    :data:`~pyro_vae.data.published.PARTS`.

    Missing files are downloaded when ``allow_download`` (from ``mirrors``, else
    ``$PYRO_VAE_MIRROR``, else :data:`~pyro_vae.data.published.MIRRORS`); otherwise, or
    when no mirror serves them, a :class:`~pyro_vae.data.base.DataError` says where to put
    them. Every file is checked
    against its published size and SHA-256 before it is returned.
    """
    folder = root / dataset
    parts = PARTS[dataset]
    missing = [names for names in parts if _find(folder, names) is None]
    if missing and not allow_download:
        raise DataError(_incomplete(dataset, root, folder, missing))
    if missing:
        _download_missing(dataset, folder, missing, mirrors, progress)
    found = [p for p in (_find(folder, names) for names in parts) if p is not None]
    for path in found:
        _verify(path, PUBLISHED_FILES[dataset][path.name])
    return found


def _incomplete(dataset: str, root: Path, folder: Path, missing: list[tuple[str, ...]]) -> str:
    urls = " or ".join(MIRRORS[dataset])
    call = f"load_dataset({dataset!r}, root={str(root)!r}, download=True)"
    return (
        f"Dataset {dataset!r} is incomplete: {_describe(missing)} not found in {folder}. "
        f"Expected the published files in that folder. Put them there (they are published "
        f"under {urls}), or download them into it: from the command line, python -c "
        f'"from pyro_vae import load_dataset; {call}" (in Python, the same '
        f"load_dataset(..., download=True) call); or use the download cache "
        f"(PYRO_VAE_CACHE), into which missing files are downloaded: leave PYRO_VAE_DATA "
        f"unset and pass no root, e.g. env -u PYRO_VAE_DATA fit() with "
        f"TrainConfig(dataset={dataset!r})."
    )
