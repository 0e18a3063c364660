"""``pyro-vae compress`` and ``pyro-vae decompress``: a trained run as a lossless compressor.

::

    pyro-vae compress RUN --data FILE.npy --out FILE.pvz
    pyro-vae decompress RUN FILE.pvz --out FILE.npy

``compress`` prints the bits per dimension and the ratio to the raw size before it writes;
both write their output atomically (a temporary file renamed into place), so an error
never leaves a partial file. The library does the work
(:func:`pyro_vae.compression.compress`, :func:`~pyro_vae.compression.decompress`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pyro_vae.compression import CodecConfig, compress, decompress, inspect
from pyro_vae.compression.bitsback import check_vae
from pyro_vae.compression.container import CompressionError, check_run, unpack
from pyro_vae.training.checkpoint import atomic_write, load

__all__ = ["add_parsers", "cmd_compress", "cmd_decompress"]


def add_parsers(sub: Any) -> list[argparse.ArgumentParser]:
    """Add ``compress`` and ``decompress`` to the ``pyro-vae`` subcommands; return them."""
    co = sub.add_parser(
        "compress", help="losslessly compress data with a trained run (bits-back ANS); FILE.pvz"
    )
    co.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory (pyro-vae train)")
    co.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a .npy array (N, *data_shape) the run's likelihood codes: 0/1 for bernoulli, "
        "uint8 or k/255 floats for categorical256 and discretized-logistic, counts for "
        "poisson and negative-binomial",
    )
    co.add_argument("--out", type=Path, required=True, help="the compressed file, FILE.pvz")
    defaults = CodecConfig()
    co.add_argument(
        "--latent-bits",
        type=int,
        default=defaults.latent_bits,
        help=f"2**N buckets per latent dimension (default: {defaults.latent_bits})",
    )
    co.add_argument(
        "--max-count",
        type=int,
        default=defaults.max_count,
        help=f"the largest count a count likelihood codes (default: {defaults.max_count})",
    )
    co.add_argument("--quiet", action="store_true", help="no progress bar")
    de = sub.add_parser("decompress", help="decompress a FILE.pvz with the run that made it")
    de.add_argument("run_dir", type=Path, metavar="RUN", help="the run that compressed FILE.pvz")
    de.add_argument("file", type=Path, metavar="FILE.pvz")
    de.add_argument("--out", type=Path, required=True, help="the decoded array, FILE.npy")
    de.add_argument("--quiet", action="store_true", help="no progress bar")
    return [co, de]


def _read_array(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CompressionError(f"--data {path}: not a readable .npy array ({e})") from None
    if not isinstance(data, np.ndarray):
        raise CompressionError(f"--data {path}: expected one .npy array, got {type(data).__name__}")
    return data


def cmd_compress(args: argparse.Namespace) -> int:
    """Compress ``--data`` with the run; print the rate; write ``--out`` atomically."""
    vae = load(args.run_dir)
    check_vae(vae)  # a run that cannot code is refused before the progress bar starts
    x = _read_array(args.data)
    config = CodecConfig(latent_bits=args.latent_bits, max_count=args.max_count)
    with tqdm(total=len(x), disable=args.quiet, unit="pt", desc="compress") as bar:
        data = compress(vae, x, config, progress=bar.update)
    info = inspect(data)
    print(
        f"{info.points} points, {info.dims} dimensions: {info.bits_per_dim:.4f} bits/dim "
        f"(bits-back {info.payload_bits_per_dim:.4f}, clean bits {info.clean_bits}, "
        f"container {info.container_bits} bits); {len(data)} bytes, ratio "
        f"{info.ratio:.2f} to the raw {x.dtype} array ({x.nbytes} bytes)"
    )
    atomic_write(args.out, lambda f: f.write(data))
    print(f"wrote {args.out}")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    """Decompress ``FILE.pvz`` with the run; write ``--out`` (.npy) atomically, or nothing."""
    if not args.file.is_file():
        raise CompressionError(f"{args.file}: no such file")
    data = args.file.read_bytes()
    pvz = unpack(data)  # a damaged or foreign file is refused before the run is loaded
    vae = load(args.run_dir)
    check_run(pvz, vae)  # and another run's file before the progress bar starts
    with tqdm(
        total=int(pvz.header["shape"][0]), disable=args.quiet, unit="pt", desc="decompress"
    ) as bar:
        x = decompress(vae, data, progress=bar.update)
    array = x.numpy() if isinstance(x, torch.Tensor) else x
    atomic_write(args.out, lambda f: np.save(f, array, allow_pickle=False))
    print(f"wrote {args.out}: {array.shape[0]} points, {array.dtype}")
    return 0
