r"""``compress`` and ``decompress``: a trained VAE as a lossless compressor of its data.

A VAE's negative ELBO, :math:`-\mathbb{E}_q[\log p(x|z)] + \mathrm{KL}(q(z|x)\|p(z))`, is a
code length: bits-back coding (:mod:`pyro_vae.compression.bitsback`) achieves it, to within
the discretization of the latent and a one-off start-up cost. ::

    data = pyro_vae.compress(vae, x)          # bytes: a .pvz file
    y = pyro_vae.decompress(vae, data)        # every element equal to x
    info = pyro_vae.compression.inspect(data) # bits per dimension, overheads

``x`` is a batch ``(N, *data_shape)`` as a torch tensor or a numpy array; ``decompress``
returns the same kind, dtype and shape. The likelihood must be discrete (``bernoulli``,
``categorical256``, ``discretized-logistic``, ``poisson``, ``negative-binomial``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyro_vae.vae import VAE

from .bitsback import (
    CodecConfig,
    Progress,
    check_vae,
    clean_words,
    decode_points,
    encode_points,
    make_plan,
)
from .container import CompressionError, DamagedPvzError, check_run, pack, run_identity, unpack
from .observed import is_counts, observed_code

__all__ = ["PvzInfo", "compress", "decompress", "inspect"]


def _as_array(x: Any) -> tuple[np.ndarray, str]:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").contiguous().numpy(), "torch"
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x), "numpy"
    raise TypeError(f"x must be a torch.Tensor or a numpy array, got {type(x).__name__}")


def _digest(values: np.ndarray) -> str:
    h = hashlib.sha256(f"{values.dtype.str}:{values.shape}".encode())
    h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def compress(
    vae: VAE, x: Any, config: CodecConfig | None = None, *, progress: Progress | None = None
) -> bytes:
    """Code the batch ``x`` ``(N, *data_shape)`` with ``vae`` by bits-back; a ``.pvz`` file.

    Deterministic: the same VAE, data and ``config`` give the same bytes. ``progress`` is
    called with 1 after each point. Raises :class:`CompressionError` for a VAE the coder
    has no route for (a continuous likelihood, a Delta guide, ...) or data it cannot code
    exactly, saying which and what works.
    """
    config = config or CodecConfig()
    check_vae(vae)
    arr, kind = _as_array(x)
    shape = tuple(vae.config.data_shape)
    if arr.ndim < 1 or tuple(arr.shape[1:]) != shape:
        raise ValueError(
            f"x must have shape (N, {', '.join(map(str, shape))}) for this model, "
            f"got {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"x must hold numbers (float, int or bool), got dtype {arr.dtype}")
    code = observed_code(vae.model.likelihood)
    assert code is not None  # check_vae
    max_symbol = code.max_symbol
    if is_counts(code):
        max_symbol = _largest_count(arr, config)
        code = observed_code(vae.model.likelihood, max_symbol)
        assert code is not None
    symbols = code.to_symbols(arr).reshape(arr.shape[0], int(np.prod(shape)))
    plan = make_plan(vae, config, code)
    start = clean_words(config, plan.latent_dim)
    words = encode_points(plan, symbols, start, progress)
    header = {
        "run": run_identity(vae),
        "likelihood": vae.config.likelihood,
        "shape": list(arr.shape),
        "dtype": arr.dtype.str,
        "kind": kind,
        "codec": dataclasses.asdict(config),
        "clean_words": len(start),
        "max_symbol": max_symbol,
        "sha256": _digest(arr),
        "coder": _coder_version(),
    }
    return pack(header, words)


def _coder_version() -> str:
    """The entropy coder and its version: a file decodes with the same quantization."""
    try:
        return f"constriction {importlib.metadata.version('constriction')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source build
        return "constriction"


def _largest_count(arr: np.ndarray, config: CodecConfig) -> int:
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    largest = int(np.rint(finite.max())) if finite.size else 1
    if largest > config.max_count:
        raise CompressionError(
            f"x holds counts up to {largest}, above CodecConfig.max_count ({config.max_count}); "
            "raise it (the tables grow with it) to code these data."
        )
    return max(1, largest)


def decompress(vae: VAE, data: bytes, *, progress: Progress | None = None) -> Any:
    """The data coded in ``data`` (a ``.pvz`` file's bytes), decoded with ``vae``.

    Returns a torch tensor (on the CPU) or a numpy array as was compressed, of the same
    dtype and shape, every element equal. Refuses a file that is not a ``.pvz``, truncated
    or damaged, or made with another run (each its own :class:`CompressionError`), before
    decoding.
    """
    pvz = unpack(data)
    check_vae(vae)
    check_run(pvz, vae)
    try:
        head = pvz.header
        config = CodecConfig(**head["codec"])
        shape, dtype, kind = tuple(head["shape"]), np.dtype(head["dtype"]), head["kind"]
        code = observed_code(vae.model.likelihood, int(head["max_symbol"]))
        if (
            len(head["sha256"]) != 64
            or kind not in ("torch", "numpy")
            or code is None
            or dtype.kind not in "fiub"
            or len(shape) < 1
            or int(shape[0]) < 0
            or tuple(shape[1:]) != tuple(vae.config.data_shape)
        ):
            raise ValueError("unknown field values")
    except (KeyError, TypeError, ValueError) as e:
        raise DamagedPvzError(f"the .pvz header lacks or garbles a field ({e})") from None
    plan = make_plan(vae, config, code)
    start = clean_words(config, plan.latent_dim)
    if int(head["clean_words"]) != len(start):
        raise DamagedPvzError("the .pvz header's clean-word count does not match its settings")
    num, dims = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    symbols = decode_points(plan, pvz.words, num, dims, start, progress)
    values = code.to_values(symbols.reshape(shape), dtype)
    if _digest(values) != head["sha256"]:
        raise DamagedPvzError(
            "the decoded data fail the SHA-256 recorded when compressing: the model computed "
            "different numbers than the compressor (another machine or library build; the "
            f"file was coded with {head.get('coder', 'an unknown coder')}, this is "
            f"{_coder_version()}). No data was returned."
        )
    return torch.from_numpy(values) if kind == "torch" else values


@dataclass(frozen=True)
class PvzInfo:
    """Sizes of a ``.pvz`` file, in bits (``dims`` is the number of data dimensions coded).

    ``file_bits`` is everything; ``payload_bits`` the ANS stack less the clean bits it
    started with, the bits-back rate; ``clean_bits`` that start-up cost; ``container_bits``
    the prefix, header and checksum. ``raw_bits`` is the size of the array as given.
    """

    points: int
    dims: int
    file_bits: int
    payload_bits: int
    clean_bits: int
    container_bits: int
    raw_bits: int

    @property
    def bits_per_dim(self) -> float:
        """The whole file's bits per data dimension."""
        return self.file_bits / self.dims if self.dims else float("nan")

    @property
    def payload_bits_per_dim(self) -> float:
        """The bits-back rate per dimension, without the clean bits and the container."""
        return self.payload_bits / self.dims if self.dims else float("nan")

    @property
    def ratio(self) -> float:
        """Raw size over file size."""
        return self.raw_bits / self.file_bits


def inspect(data: bytes) -> PvzInfo:
    """What a ``.pvz`` file holds and how its bits divide (checks it, needs no VAE)."""
    pvz = unpack(data)
    shape = tuple(pvz.header.get("shape", [0]))
    clean = 32 * int(pvz.header.get("clean_words", 0))
    words = 32 * len(pvz.words)
    itemsize = np.dtype(pvz.header.get("dtype", "<f4")).itemsize
    dims = int(np.prod(shape, dtype=np.int64))
    return PvzInfo(
        points=int(shape[0]),
        dims=dims,
        file_bits=8 * len(data),
        payload_bits=words - clean,
        clean_bits=clean,
        container_bits=8 * len(data) - words,
        raw_bits=8 * itemsize * dims,
    )
