"""The quality benchmark (benchmarks/quality.py) runs end to end: its smoke mode, no timings.

The figures of the real run live in benchmarks/README.md; this only keeps the benchmark from
rotting. It runs on the embedded digits (grey, so binarized dynamically) and on a binary
array file (``--binarize none``, the path binarized-mnist takes), so no download is needed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.quality import initial_reference, markdown
from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit, load_dataset
from pyro_vae.data import static_binarize

ROOT = Path(__file__).resolve().parents[2]


def _binary_digits(tmp_path: Path) -> str:
    x = static_binarize(load_dataset("digits").train, seed=0)  # (N, 1, 8, 8) in {0, 1}
    path = tmp_path / "binary-digits.npy"
    np.save(path, x.numpy())
    return str(path)


@pytest.mark.parametrize("binarize", ["dynamic", "none"])
def test_smoke_run_writes_results_for_both_models(tmp_path: Path, binarize: str) -> None:
    dataset = "digits" if binarize == "dynamic" else _binary_digits(tmp_path)
    out = tmp_path / "results" / "quality.json"
    command = [sys.executable, "-m", "benchmarks.quality", "--smoke", "--dataset", dataset]
    command += ["--binarize", binarize, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert results["setup"]["num_samples"] == 10 and results["setup"]["num_points"] == 50
    assert results["setup"]["checkpoints"] == [1] and results["setup"]["binarize"] == binarize
    assert "python -m benchmarks.quality --smoke" in results["command"]
    for name in ("pyro-vae", "reference"):
        model = results["models"][name]
        assert [e["epoch"] for e in model["epochs"]] == [1]
        assert model["epochs"][0]["seconds"] > 0 and math.isfinite(model["epochs"][0]["train_loss"])
        scores = model["evaluations"]["1"]
        assert all(math.isfinite(scores[k]) for k in ("test_nll", "test_elbo", "test_kl"))
        assert scores["test_nll"] > 0
    assert set(results["check"]["nll_difference"]) == {"1"}
    table = out.with_suffix(".md").read_text()
    assert "| pyro-vae | 1 |" in table and "| reference | 1 |" in table
    assert markdown(results) == table  # what --render rewrites from the JSON


def test_fit_starts_from_the_weights_the_benchmark_copies() -> None:
    """An lr too small to move float32 weights: after one epoch fit's VAE is still its init."""
    config = VAEConfig(data_shape=(1, 8, 8), latent_dim=3, hidden=(16, 12))
    ref = initial_reference(config, seed=4)
    train = TrainConfig(epochs=1, lr=1e-30, seed=4, device="cpu", eval_num_points=0)
    seen: list[bool] = []

    def compare(record: dict[str, float], vae: torch.nn.Module) -> None:
        q = vae.guide.posterior(vae.guide.encoder(x))
        loc, scale = ref.encode(x)
        seen.append(bool(torch.equal(loc, q.mean) and torch.equal(scale, q.stddev)))

    x = load_dataset("digits").test[:20]
    fit(RunConfig(vae=config, train=train), progress=False, write=False, on_epoch=compare)
    assert seen == [True]
