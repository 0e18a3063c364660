"""Helpers of the data tests (tests/data/): the shared data, local HTTP servers, small files.

No helper contacts any host but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from pyro_vae.data import Dataset

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
