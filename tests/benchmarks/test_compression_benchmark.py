"""The compression benchmark runs end to end in smoke mode (digits; no figures claimed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import compression

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compression_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "compression.json"
    argv = ["--smoke", "--train-seconds", "0", "--points", "30", "--iw-k", "3",
            "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]  # fmt: skip
    assert compression.main(argv) == 0
    record = json.loads(out.read_text())
    assert set(record["results"]) == {"binarized MNIST", "8-bit MNIST", "8-bit Fashion-MNIST"}
    for r in record["results"].values():
        assert r["pyro_vae"]["exact"] and r["training"]["epochs"] == 1
        assert set(r["baselines"]) == {"gzip", "bz2", "lzma", "PNG", "WebP"}
    table = out.with_suffix(".md").read_text()
    assert "(0.19)" in table and "(1.41)" in table  # BB-ANS Table 2 beside the figures


def test_baselines_pack_binary_pixels() -> None:
    images = (np.random.default_rng(0).random((20, 8, 8)) < 0.1).astype(np.uint8)
    result = compression.baselines(images, binary=True)
    assert result["bz2"]["bits_per_dim"] < 8
    assert result["PNG"]["bytes"] > 0 and result["WebP"]["array"] == "one file per image"
