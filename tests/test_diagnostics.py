"""Diagnostics against exact references: KL per dimension, active units, mutual information,
PSIS k-hat, inference gaps and NUTS on the linear-Gaussian model, and evaluate's report.

Tolerances are Monte Carlo standard errors (Z = 4.5, Bonferroni-corrected where several
coordinates are compared), plus a stated optimization tolerance for the inference gaps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import VAE, VAEConfig, diagnostic_plots, diagnostics, elbo_terms, load_dataset
from pyro_vae.cli import main, subset

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


Z = 4.5


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


def test_kl_per_dim_is_analytic_and_sums_to_the_kl() -> None:
    torch.manual_seed(0)
    vae = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,))).double()
    x = torch.bernoulli(torch.full((20, 1, 4, 4), 0.4, dtype=torch.float64))
    result = diagnostics.kl_per_dim(vae.model, vae.guide, x, batch_size=7)
    assert result.method == "analytic" and result.reason is None and len(result.values) == 3
    kl = elbo_terms(vae.model, vae.guide, x)["kl"].detach().mean()
    assert sum(result.values) == pytest.approx(float(kl), rel=1e-12)
    assert result.sites == {"z": result.values}


def test_kl_per_dim_by_monte_carlo_where_only_factorized() -> None:
    """Normal q against a Laplace prior: no closed form registered, exact per-dim reference.

    KL(N(m, s^2) || Laplace(0, b)) = -1/2 log(2 pi e s^2) + log(2b) + E|z| / b, with the
    folded-normal mean E|z| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s)).
    """
    m = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    s = torch.tensor([0.5, 1.2, 0.8], dtype=torch.float64)
    b = 1.5

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Laplace(torch.zeros(3, dtype=x.dtype), b).to_event(1))

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(m.expand(x.shape[0], 3), s).to_event(1))

    phi = torch.tensor([NormalDist().cdf(float(v)) for v in -m / s], dtype=torch.float64)
    abs_mean = s * math.sqrt(2 / math.pi) * torch.exp(-(m**2) / (2 * s**2)) + m * (1 - 2 * phi)
    exact = -0.5 * torch.log(2 * math.pi * math.e * s**2) + math.log(2 * b) + abs_mean / b
    pyro.set_rng_seed(0)
    n, particles = 100, 200
    result = diagnostics.kl_per_dim(model, guide, torch.zeros(n, 1), num_particles=particles)
    assert result.method == "monte-carlo"
    z = dist.Normal(m, s).sample((n * particles,))  # the same number of draws, for the SE
    terms = dist.Normal(m, s).log_prob(z) - dist.Laplace(0.0, b).log_prob(z)  # (draws, 3)
    se = terms.std(0) / math.sqrt(terms.shape[0])
    assert ((torch.tensor(result.values) - exact).abs() < Z * se).all()


def test_kl_per_dim_is_omitted_with_a_reason_for_a_full_covariance_guide(
    lg: LinearGaussian,
) -> None:
    result = diagnostics.kl_per_dim(lg.model, lg.exact_guide, lg.sample_x(4))
    assert result.values == [] and result.method is None
    assert result.reason is not None and "MultivariateNormal" in result.reason


def test_active_units_are_the_units_whose_mean_varies_with_x() -> None:
    x = torch.linspace(-1.7, 1.7, 50, dtype=torch.float64)  # sample variance var_x
    gains = torch.tensor([0.5, 0.05, 0.0, 2.0], dtype=torch.float64)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc = x.unsqueeze(-1) * gains  # (N, 4)
            pyro.sample("z", dist.Normal(loc, 0.3).to_event(1))

    result = diagnostics.active_units(guide, x)
    expected = gains**2 * x.var()  # Cov_x of E_q[z_j] = gain_j^2 var_x
    assert result.variances == pytest.approx(expected.tolist(), rel=1e-12)
    assert result.count == int((expected > 0.01).sum()) == 2


def test_mutual_information_of_a_gaussian_channel() -> None:
    """z = a x + s e with x ~ N(0, 1): I(x; z) = 1/2 log(1 + a^2 / s^2) (0.80 nats).

    Tolerance 0.05 nats: the Monte Carlo error (about 0.01 with 8 draws per point) plus
    the plug-in bias of the aggregate posterior over N = 1000 points.
    """
    a, s = 1.0, 0.5
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def guide(x: torch.Tensor, scale: float = s) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x, scale))

    pyro.set_rng_seed(1)
    result = diagnostics.mutual_information(guide, x, num_samples=8, batch_size=300)
    assert result.value is not None and result.num_points == 1000
    assert abs(result.value - 0.5 * math.log(1 + a**2 / s**2)) < 0.05
    tight = diagnostics.mutual_information(guide, x[:100], scale=1e-4)  # true MI ~ 9.2 nats
    assert tight.value is not None and math.log(100) - 0.01 < tight.value <= math.log(100) + 1e-9


def test_psis_khat_small_for_a_good_guide_and_large_for_a_poor_one(lg: LinearGaussian) -> None:
    x = lg.sample_x(30)
    pyro.set_rng_seed(2)
    exact = diagnostics.psis_khat(lg.model, lg.exact_guide, x, num_samples=500)
    assert (exact == 0).all()  # equal weights: nothing to fit
    wide = diagnostics.psis_khat(lg.model, lg.diagonal_guide(1.3), x, num_samples=1000)
    assert diagnostics.khat_summary(wide)["max"] < 0.5  # q wider than p(z|x): bounded weights
    poor = diagnostics.khat_summary(
        diagnostics.psis_khat(lg.model, lg.diagonal_guide(0.5, 0.5), x, num_samples=1000)
    )
    assert poor["frac_above_0.7"] > 0.9 and poor["mean"] > 0.7  # q narrow and shifted
    worst = diagnostics.worst_points(wide, 3, elbo=list(range(30)))
    assert [w["khat"] for w in worst] == sorted(wide.tolist(), reverse=True)[:3]
    assert all(w["elbo"] == w["index"] for w in worst)


def test_inference_gaps_match_the_closed_form(lg: LinearGaussian) -> None:
    """Linear-Gaussian model, amortized q = N(mean + 0.4, (1.5 sd)^2) (diagonal).

    The best diagonal Normal for the Gaussian posterior N(m, S) has the exact mean and
    precision diag(S^-1) (Bishop 2006, 10.1.2): approximation gap
    1/2 (sum_j log (S^-1)_jj - log|S^-1|), the same for every point; the amortization gap
    is KL(q || p(z|x)) minus that. Tolerance: Z standard errors (over points; the exact gaps
    are equal across points, so the spread is Monte Carlo error) plus 0.01 nats for the
    300-step optimization.
    """
    x = lg.sample_x(20)
    pyro.set_rng_seed(3)
    gaps = diagnostics.inference_gaps(
        lg.model, lg.diagonal_guide(1.5, 0.4), x, steps=300, num_samples=500
    )
    mean, cov = lg.posterior(x[:1])
    precision = torch.linalg.inv(cov)
    approx = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    q = dist.Normal(mean[0] + 0.4, cov.diagonal().sqrt() * 1.5)
    p = dist.MultivariateNormal(mean[0], cov)
    kl_q = 0.5 * float(  # KL(q || p) between Gaussians
        torch.trace(precision @ torch.diag(q.scale**2))
        + (q.loc - p.loc) @ precision @ (q.loc - p.loc)
        - 2
        + torch.logdet(cov)
        - (q.scale**2).log().sum()
    )
    for key, exact in (("approximation_gap", approx), ("amortization_gap", kl_q - approx)):
        est = gaps[key]
        assert abs(est["mean"] - exact) < Z * est["se"] + 0.01, (key, est, exact)
    log_px = float(lg.log_px(x).mean())
    assert abs(gaps["log_px"]["mean"] - log_px) < 0.01
    assert gaps["num_points"] == 20 and len(gaps["per_point"]["log_px"]) == 20


def test_nuts_recovers_the_exact_posterior(lg: LinearGaussian) -> None:
    """Two points, two chains: r-hat near 1, moments within Bonferroni-corrected MCSEs."""
    x = lg.sample_x(2, seed=5)
    nuts = diagnostics.nuts_posterior(
        lg.model, x, num_samples=300, warmup_steps=150, num_chains=2, seed=4, point_ids=[7, 3]
    )
    assert dict(nuts.posterior.sizes) == {"chain": 2, "draw": 300, "point": 2, "z_dim": 2}
    assert nuts.posterior.coords["point"].values.tolist() == [7, 3]
    report = diagnostics.compare_posteriors(nuts, lg.exact_guide, x)  # q = p(z|x) exactly
    rows = report["moments"]
    assert len(rows) == 4 and report["max_r_hat"] < 1.05
    z = NormalDist().inv_cdf(1 - 1e-5 / (2 * 2 * len(rows)))
    for r in rows:
        assert abs(r["nuts_mean"] - r["q_mean"]) < z * r["mcse_mean"], r
        assert abs(r["nuts_sd"] - r["q_sd"]) < z * r["mcse_sd"], r


def test_posterior_samples_are_inference_data_that_arviz_summarizes(lg: LinearGaussian) -> None:
    x = lg.sample_x(3)
    pyro.set_rng_seed(6)
    idata = diagnostics.posterior_samples(lg.exact_guide, x, num_samples=400, point_ids=[10, 4, 9])
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "point", "z_dim")
    assert z.coords["point"].values.tolist() == [10, 4, 9]
    summary = diagnostics.arviz().summary(idata, kind="stats")
    assert list(summary.index[:2]) == ["z[10, 0]", "z[10, 1]"]
    mean, cov = lg.posterior(x)
    se = cov.diagonal().sqrt() / math.sqrt(400)
    got = torch.tensor(summary["mean"].to_numpy()).reshape(3, 2)
    assert ((got - mean).abs() < Z * se + 1e-3).all()  # 1e-3: summary rounds to 3 decimals


def test_diagnostic_plots_write_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 1, 8, 8))
    paths = [
        diagnostic_plots.psis_khat(
            rng.normal(0.4, 0.3, 50),
            tmp_path / "k.png",
            originals=images,
            recons=images,
            worst=[4, 1, 0],
        ),
        diagnostic_plots.posterior_pairs(
            rng.normal(size=(100, 3)), rng.normal(size=(100, 3)), tmp_path / "p.png"
        ),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="the 2 worst points"):
        diagnostic_plots.psis_khat(np.zeros(5), tmp_path / "x.png", originals=images,
                                   recons=images, worst=[0, 1])  # fmt: skip
    with pytest.raises(ValueError, match="same L"):
        diagnostic_plots.posterior_pairs(np.zeros((5, 2)), np.zeros((5, 3)), tmp_path / "y.png")


def test_evaluate_reports_the_diagnostics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--hidden", "16", "--latent-dim", "2", "--quiet", "--eval-num-samples", "5"]
    flags += ["--eval-num-points", "20"]
    assert main(["train", "--epochs", "1", "--out", str(run), *flags]) == 0
    args = ["--num-samples", "20", "--num-points", "25", "--psis-samples", "100", "--gaps", "2"]
    assert main(["evaluate", str(run), *args, "--mcmc", "1", "--mcmc-samples", "30"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {"elbo", "reconstruction", "kl", "nll", "num_samples", "num_points", "split"} <= set(
        result
    )
    assert isinstance(result["active_units"], int) and 0 <= result["active_units"] <= 2
    assert len(result["kl_per_dim"]) == 2 and result["kl_per_dim_method"] == "analytic"
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], abs=1e-4)
    assert -0.05 < result["mutual_information"] <= math.log(25) + 1e-6  # MC noise around 0
    assert set(result["psis_khat"]) >= {"mean", "max", "frac_above_0.7", "frac_above_0.5"}
    assert len(result["worst_points"]) == 10
    assert result["gaps"]["num_points"] == 2
    ids = subset(len(load_dataset("digits").test), 25, 0).tolist()  # evaluate's --seed 0
    assert {w["index"] for w in result["worst_points"]} <= set(ids)
    assert result["mcmc"]["points"] == ids[:1] and len(result["mcmc"]["moments"]) == 2
    plots = {p.name for p in (run / "plots").iterdir()}
    assert "psis_khat.png" in plots
    assert f"posterior_pairs_{result['mcmc']['points'][0]}.png" in plots


def test_inputs_are_validated(lg: LinearGaussian) -> None:
    x = lg.sample_x(3)
    with pytest.raises(ValueError, match="num_samples must be an int >= 2"):
        diagnostics.psis_khat(lg.model, lg.exact_guide, x, num_samples=1)
    with pytest.raises(ValueError, match="point_ids must name 3 points"):
        diagnostics.posterior_samples(lg.exact_guide, x, point_ids=[1])
    with pytest.raises(ValueError, match="lr must be a positive"):
        diagnostics.inference_gaps(lg.model, lg.diagonal_guide(), x, lr=0.0)
    with pytest.raises(ValueError, match="one latent site"):
        diagnostics.inference_gaps(lg.model, lambda x: None, x)
    with pytest.raises(ValueError, match="non-empty tensor"):
        diagnostics.active_units(lg.exact_guide, torch.zeros(0, 5))
