"""Lossless compression with a trained VAE: bits-back coding with ANS (BB-ANS).

A use of a trained VAE, layered above the model, the guide and the VAE (it never imports
training, analysis or the command line):

- :mod:`~pyro_vae.compression.codec`: ``compress``, ``decompress`` and ``inspect``;
- :mod:`~pyro_vae.compression.bitsback`: the coder's loop and :class:`CodecConfig`;
- :mod:`~pyro_vae.compression.latent`: z in buckets of equal prior mass (Normal priors);
- :mod:`~pyro_vae.compression.mixture`: the same under a mixture prior (``mixture``, and
  ``vamp`` with a ``normal`` guide), by conditional quantiles;
- :mod:`~pyro_vae.compression.observed`: x as symbols under a discrete p(x|z);
- :mod:`~pyro_vae.compression.container`: the ``.pvz`` file format and its checks.

The entropy coder is constriction's ANS stack coder (Bamler 2022).
"""

from .bitsback import CodecConfig
from .codec import PvzInfo, compress, decompress, inspect
from .container import (
    CompressionError,
    DamagedPvzError,
    NotPvzError,
    RunMismatchError,
    TruncatedPvzError,
    run_identity,
)

__all__ = [
    "CodecConfig",
    "CompressionError",
    "DamagedPvzError",
    "NotPvzError",
    "PvzInfo",
    "RunMismatchError",
    "TruncatedPvzError",
    "compress",
    "decompress",
    "inspect",
    "run_identity",
]
