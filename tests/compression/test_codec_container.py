"""The .pvz container: each kind of bad file fails with its own message, before decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from codec_helpers import random_data, tiny_vae

from pyro_vae import compress, decompress
from pyro_vae.compression import (
    DamagedPvzError,
    NotPvzError,
    RunMismatchError,
    TruncatedPvzError,
    inspect,
    run_identity,
)
from pyro_vae.compression import codec as codec_module

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coded() -> tuple[object, torch.Tensor, bytes]:
    vae = tiny_vae("bernoulli", "lowrank")
    x = random_data("bernoulli", 6)
    return vae, x, compress(vae, x)


def test_a_flipped_byte_fails_the_checksum(coded) -> None:
    vae, _, data = coded
    for where in (len(data) // 2, len(data) - 40, 30, len(data) - 1):
        bad = bytearray(data)
        bad[where] ^= 0x10
        with pytest.raises(DamagedPvzError, match=r"SHA-256 checksum"):
            decompress(vae, bytes(bad))


def test_a_flipped_length_fails_the_prefix_crc(coded) -> None:
    vae, _, data = coded
    bad = bytearray(data)
    bad[15] ^= 0x01  # the word count
    with pytest.raises(DamagedPvzError, match=r"CRC-32"):
        decompress(vae, bytes(bad))


def test_a_truncated_file_says_so(coded) -> None:
    vae, _, data = coded
    for size in (len(data) - 1, len(data) // 2, 20):
        with pytest.raises(TruncatedPvzError, match=rf"truncated: .*{size}"):
            decompress(vae, data[:size])
    with pytest.raises(DamagedPvzError, match=r"bytes too many"):
        decompress(vae, data + b"\0")


def test_another_runs_weights_are_refused(coded) -> None:
    vae, _, data = coded
    other = tiny_vae("bernoulli", "lowrank", seed=1)  # same config, other weights
    assert run_identity(other) != run_identity(vae)
    with pytest.raises(RunMismatchError, match=r"another run"):
        decompress(other, data)
    other = tiny_vae("bernoulli", "lowrank", hidden=(17,))  # other config
    with pytest.raises(RunMismatchError, match=r"another run"):
        decompress(other, data)


def test_bytes_that_are_not_a_pvz_are_refused(coded) -> None:
    vae, x, _ = coded
    buffer = io.BytesIO()
    np.save(buffer, x.numpy())
    for data in (buffer.getvalue(), b"", b"PVZ", b"\x89PNG\r\n\x1a\n" + bytes(100)):
        with pytest.raises(NotPvzError, match=r"not a \.pvz file"):
            decompress(vae, data)
    with pytest.raises(TypeError, match=r"bytes"):
        decompress(vae, "a string")  # type: ignore[arg-type]


def test_a_model_that_computes_differently_returns_nothing(coded, monkeypatch) -> None:
    """The safety net behind the run check: other numbers never come back as data."""
    _, _, data = coded
    other = tiny_vae("bernoulli", "lowrank")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    monkeypatch.setattr(codec_module, "check_run", lambda pvz, vae: None)
    with pytest.raises(DamagedPvzError, match=r"No data was returned"):
        decompress(other, data)


def test_inspect_divides_the_bits(coded) -> None:
    _, x, data = coded
    info = inspect(data)
    assert info.points == 6 and info.dims == x.numel()
    assert info.file_bits == 8 * len(data)
    assert info.file_bits == info.payload_bits + info.clean_bits + info.container_bits
    assert info.raw_bits == 32 * x.numel()
