"""The ``.pvz`` container: what a compressed file holds, and every check made on reading it.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89PVZ\\r\\n\\x1a\\n"  (PNG's trick: binary, line-ending and
                  text-mode damage all break it)
    8       2     format version (1)
    10      4     header length H
    14      8     number of ANS words W
    22      4     CRC-32 of bytes 0..21 (a damaged length is told from a short file)
    26      H     header: UTF-8 JSON, sorted keys: the run identity, the likelihood, the
                  data's shape, dtype and kind, the codec settings, the clean-bit count,
                  the largest symbol, a SHA-256 of the data
    26+H    4W    the ANS stack, uint32 words
    end-32  32    SHA-256 of everything before it

Reading checks, in this order, each with its own error: the magic (:class:`NotPvzError`),
the prefix CRC and the version (:class:`DamagedPvzError`), the length
(:class:`TruncatedPvzError`), the checksum (:class:`DamagedPvzError`), and, against the
VAE, the run identity (:class:`RunMismatchError`). The run identity is a SHA-256 of the
VAE's config and of every tensor in its ``state_dict`` (name, dtype, shape and bytes).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyro_vae.config import to_dict
from pyro_vae.vae import VAE

__all__ = [
    "MAGIC",
    "VERSION",
    "CompressionError",
    "DamagedPvzError",
    "NotPvzError",
    "Pvz",
    "RunMismatchError",
    "TruncatedPvzError",
    "check_run",
    "pack",
    "run_identity",
    "unpack",
]

MAGIC = b"\x89PVZ\r\n\x1a\n"
VERSION = 1
_PREFIX = struct.Struct("<8sHIQ")  # magic, version, header length, words
_CRC = struct.Struct("<I")
_DIGEST = 32


class CompressionError(ValueError):
    """Data or a model that cannot be compressed, or a file that cannot be decompressed."""


class NotPvzError(CompressionError):
    """The bytes are not a ``.pvz`` file (no PVZ signature)."""


class TruncatedPvzError(CompressionError):
    """A ``.pvz`` file shorter than its own prefix says."""


class DamagedPvzError(CompressionError):
    """A ``.pvz`` file whose bytes changed (checksum, CRC or contents do not agree)."""


class RunMismatchError(CompressionError):
    """A ``.pvz`` file made with another run's weights or config than the VAE given."""


@dataclass(frozen=True)
class Pvz:
    """A parsed ``.pvz`` file: its header (a dict) and the ANS words (uint32)."""

    header: dict[str, Any]
    words: np.ndarray


def run_identity(vae: VAE) -> str:
    """SHA-256 (hex) of the VAE's config and weights: the run a file was made with."""
    h = hashlib.sha256()
    h.update(json.dumps(to_dict(vae.config), sort_keys=True).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def pack(header: dict[str, Any], words: np.ndarray) -> bytes:
    """The bytes of a ``.pvz`` file holding ``header`` and ``words``."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = np.ascontiguousarray(words, dtype="<u4").tobytes()
    prefix = _PREFIX.pack(MAGIC, VERSION, len(text), len(words))
    data = prefix + _CRC.pack(zlib.crc32(prefix)) + text + body
    return data + hashlib.sha256(data).digest()


def unpack(data: bytes) -> Pvz:
    """Parse and check a ``.pvz`` file's bytes (not yet against a VAE)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NotPvzError(
            "these bytes are not a .pvz file: they do not start with the PVZ signature "
            f"(first bytes {data[:8]!r}). Pass a file written by pyro_vae.compress."
        )
    start = _PREFIX.size + _CRC.size
    if len(data) < start:
        raise TruncatedPvzError(
            f"the .pvz file is truncated: {len(data)} bytes, shorter than its {start}-byte "
            "prefix. Copy the whole file again."
        )
    _, version, header_len, num_words = _PREFIX.unpack_from(data)
    if _CRC.unpack_from(data, _PREFIX.size)[0] != zlib.crc32(data[: _PREFIX.size]):
        raise DamagedPvzError(
            "the .pvz file is damaged: its prefix (version and lengths) fails its CRC-32. "
            "Copy the file again from a good source."
        )
    if version != VERSION:
        raise DamagedPvzError(
            f"the .pvz file has format version {version}; this pyro-vae reads version "
            f"{VERSION}. Use the pyro-vae version that wrote it."
        )
    size = start + header_len + 4 * num_words + _DIGEST
    if len(data) < size:
        raise TruncatedPvzError(
            f"the .pvz file is truncated: {len(data)} of its {size} bytes are there. Copy "
            "the whole file again."
        )
    if len(data) > size or hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise DamagedPvzError(
            "the .pvz file is damaged: its SHA-256 checksum does not match its contents"
            + (f" ({len(data) - size} bytes too many)" if len(data) > size else "")
            + ". Copy the file again from a good source."
        )
    try:
        header = json.loads(data[start : start + header_len].decode())
    except (UnicodeDecodeError, ValueError) as e:  # checksum good: written so, not damaged
        raise DamagedPvzError(f"the .pvz header is not valid JSON ({e})") from None
    body = data[start + header_len : size - _DIGEST]
    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    return Pvz(header=header, words=words)


def check_run(pvz: Pvz, vae: VAE) -> None:
    """Refuse a file made with another run than ``vae`` (config or weights differ)."""
    own, theirs = run_identity(vae), str(pvz.header.get("run", ""))
    if own != theirs:
        raise RunMismatchError(
            f"this .pvz file was made with another run (identity {theirs[:12]}...) than the "
            f"VAE given (identity {own[:12]}...): its config or weights differ, and "
            "decoding with them would give wrong data. Use the run that compressed it."
        )
