"""The scores of a trained VAE (pyro_vae.training.summary): mean terms and the test summary."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.data import Dataset, load_dataset
from pyro_vae.training.summary import mean_terms, summarize

CPU = torch.device("cpu")


def test_the_summary_does_not_depend_on_the_global_rng_it_finds(tmp_path: Path) -> None:
    """A resumed run ends with the summary of an unbroken one, whatever RNG state led there."""
    tc = TrainConfig(epochs=1, out=str(tmp_path / "run"), eval_num_samples=4, eval_num_points=9)
    result = fit(RunConfig(VAEConfig(latent_dim=2, hidden=(8,)), tc), progress=False)
    dataset = load_dataset("digits")
    summaries = []
    for seed in (1, 2):
        expected = torch.manual_seed(seed) and torch.rand(1)  # the caller's next draw
        torch.manual_seed(seed)
        summaries.append(summarize(result.vae, dataset, result.config.train, CPU))
        assert torch.rand(1) == expected  # and summarize leaves the caller's stream alone
    assert summaries[0] == summaries[1] == result.summary


def test_mean_terms_are_per_data_point_whatever_the_chunk_size(tmp_path: Path) -> None:
    """Chunks of 7 or of 1000 rows: the same means, and the ELBO is reconstruction - KL."""
    tc = TrainConfig(epochs=1, out=str(tmp_path / "run"), eval_num_samples=2, eval_num_points=5)
    vae = fit(RunConfig(VAEConfig(latent_dim=2, hidden=(8,)), tc), progress=False).vae
    x = (load_dataset("digits").split("valid")[:50] > 0.5).float()
    torch.manual_seed(0)
    small = mean_terms(vae, x, batch_size=7)
    torch.manual_seed(0)
    large = mean_terms(vae, x, batch_size=1000)
    assert small.keys() == {"elbo", "reconstruction", "kl"}
    assert math.isclose(small["elbo"], small["reconstruction"] - small["kl"], rel_tol=1e-9)
    assert all(math.isfinite(v) for v in small.values())
    assert math.isclose(small["elbo"], large["elbo"], rel_tol=0.05)


def test_no_points_means_no_nll(tmp_path: Path) -> None:
    """TrainConfig.eval_num_points=0: the summary holds the test ELBO terms only."""
    tc = TrainConfig(epochs=1, out=str(tmp_path / "run"), eval_num_samples=2, eval_num_points=5)
    result = fit(RunConfig(VAEConfig(latent_dim=2, hidden=(8,)), tc), progress=False)
    digits = load_dataset("digits")
    small = Dataset("small", digits.train[:20], digits.valid[:20], digits.test[:20])
    tc0 = dataclasses.replace(result.config.train, eval_num_points=0)
    summary = summarize(result.vae, small, tc0, CPU)
    assert set(summary) == {"test_elbo", "test_reconstruction", "test_kl"}
