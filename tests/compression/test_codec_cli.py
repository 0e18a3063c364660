"""pyro-vae compress / decompress: the rate printed first, files written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from codec_helpers import tiny_vae

from pyro_vae import save
from pyro_vae.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    save(tiny_vae("categorical256", "normal"), tmp_path / "run")
    save(tiny_vae("categorical256", "normal", seed=1), tmp_path / "other")
    x = np.random.default_rng(0).integers(0, 256, (20, 1, 3, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    return tmp_path


def test_compress_then_decompress(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["compress", str(run / "run"), "--data", str(run / "x.npy"),
               "--out", str(run / "x.pvz"), "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "bits/dim" in out and "ratio" in out
    assert out.index("bits/dim") < out.index("wrote")  # the rate is printed before writing
    rc = main(["decompress", str(run / "run"), str(run / "x.pvz"), "--out", str(run / "y.npy"),
               "--quiet"])  # fmt: skip
    assert rc == 0
    x, y = np.load(run / "x.npy"), np.load(run / "y.npy")
    assert y.dtype == np.uint8 and np.array_equal(x, y)


def _decompress_fails(
    run: Path, pvz: Path, capsys: pytest.CaptureFixture[str], *, with_run: str = "run"
) -> str:
    out = run / "y.npy"
    out.write_bytes(b"old")  # an earlier output is left as it was
    rc = main(["decompress", str(run / with_run), str(pvz), "--out", str(out), "--quiet"])
    assert rc == 2 and out.read_bytes() == b"old"
    assert not [p for p in run.iterdir() if p.name.startswith(".y.npy")]  # no temporary left
    return capsys.readouterr().err


def test_decompress_refuses_bad_files_and_writes_nothing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["compress", str(run / "run"), "--data", str(run / "x.npy"), "--out",
          str(run / "x.pvz"), "--quiet"])  # fmt: skip
    data = (run / "x.pvz").read_bytes()
    assert "another run" in _decompress_fails(run, run / "x.pvz", capsys, with_run="other")
    (run / "cut.pvz").write_bytes(data[:-7])
    assert "truncated" in _decompress_fails(run, run / "cut.pvz", capsys)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (run / "flip.pvz").write_bytes(bytes(flipped))
    assert "damaged" in _decompress_fails(run, run / "flip.pvz", capsys)
    assert "not a .pvz file" in _decompress_fails(run, run / "x.npy", capsys)
    assert "no such file" in _decompress_fails(run, run / "missing.pvz", capsys)


def test_compress_refuses_data_it_cannot_code(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(run / "bad.npy", np.full((2, 1, 3, 4), 0.5, dtype=np.float32))
    rc = main(["compress", str(run / "run"), "--data", str(run / "bad.npy"), "--out",
               str(run / "bad.pvz"), "--quiet"])  # fmt: skip
    assert rc == 2 and "cannot code exactly" in capsys.readouterr().err
    assert not (run / "bad.pvz").exists()


def test_compress_refuses_a_continuous_run_before_its_progress_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save(tiny_vae("normal"), tmp_path / "run")
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 3, 4), dtype=np.float32))
    rc = main(["compress", str(tmp_path / "run"), "--data", str(tmp_path / "x.npy"), "--out",
               str(tmp_path / "x.pvz")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "a density is not a code" in err and "--likelihood bernoulli" in err
    assert "compress:" not in err and not (tmp_path / "x.pvz").exists()
