"""The rate–distortion view of a β sweep: points, their order, the figure, compare's output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import pytest

from pyro_vae import RunConfig, TrainConfig, VAEConfig
from pyro_vae.analysis.compare import compare
from pyro_vae.analysis.rate_distortion import (
    beta_of,
    plot_rate_distortion,
    rate_distortion_points,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_beta_of_reads_beta_elbos_only() -> None:
    assert beta_of("beta:beta=0.25") == 0.25
    assert beta_of("beta") == 1.0  # the spec's default
    assert beta_of("elbo") == 1.0
    assert beta_of("iwae:k=5") is None
    assert beta_of("not a spec:") is None


def test_points_are_means_over_seeds_in_beta_order() -> None:
    runs = [
        {
            "objective": "beta:beta=4",
            "test_kl": 1.0,
            "test_reconstruction": -90.0,
            "test_nll": 89.0,
        },
        {"objective": "elbo", "test_kl": 6.0, "test_reconstruction": -70.0, "test_nll": 74.0},
        {"objective": "beta:beta=0.5", "test_kl": 12.0, "test_reconstruction": -60.0},
        {"objective": "beta:beta=0.5", "test_kl": 14.0, "test_reconstruction": -62.0},
        {"objective": "iwae:k=5", "test_kl": 9.0, "test_reconstruction": -65.0, "test_nll": 70.0},
    ]
    points = rate_distortion_points(runs)
    assert [p["beta"] for p in points] == [0.5, 1.0, 4.0]
    assert points[0]["rate"] == 13.0 and points[0]["distortion"] == 61.0
    assert points[0]["seeds"] == 2 and math.isnan(points[0]["nll"])
    assert points[1] == {"beta": 1.0, "rate": 6.0, "distortion": 70.0, "nll": 74.0, "seeds": 1}


def test_the_figure_is_written(tmp_path: Path) -> None:
    points = [
        {"beta": 0.5, "rate": 13.0, "distortion": 61.0, "nll": 73.0},
        {"beta": 1.0, "rate": 6.0, "distortion": 70.0, "nll": 74.0},
    ]
    image = matplotlib.image.imread(plot_rate_distortion(points, tmp_path / "rd.png"))
    assert image.shape[0] > 300 and image.shape[1] > 400
    with pytest.raises(ValueError, match="at least two"):
        plot_rate_distortion(points[:1], tmp_path / "one.png")


def test_compare_over_beta_draws_the_curve(tmp_path: Path) -> None:
    out = tmp_path / "rd"
    config = RunConfig(
        VAEConfig(latent_dim=2, hidden=(16,)),
        TrainConfig(epochs=1, device="cpu", eval_num_samples=5, eval_num_points=20, out=str(out)),
    )
    result = compare(["beta:beta=4", "beta:beta=0.5", "elbo"], [0], config, out)
    curve = result["rate_distortion"]
    assert [p["beta"] for p in curve] == [0.5, 1.0, 4.0]
    by_objective = {r["objective"]: r for r in result["runs"]}
    assert curve[2]["rate"] == by_objective["beta:beta=4"]["test_kl"]
    assert curve[2]["distortion"] == -by_objective["beta:beta=4"]["test_reconstruction"]
    assert (out / "rate_distortion.png").is_file()
    assert json.loads((out / "compare.json").read_text())["rate_distortion"] == curve


def test_compare_without_a_beta_sweep_draws_no_curve(tmp_path: Path) -> None:
    out = tmp_path / "no"
    config = RunConfig(
        VAEConfig(latent_dim=2, hidden=(16,)),
        TrainConfig(epochs=1, device="cpu", eval_num_samples=5, eval_num_points=20, out=str(out)),
    )
    result = compare(["elbo", "iwae:k=3"], [0], config, out)
    assert "rate_distortion" not in result and not (out / "rate_distortion.png").exists()
