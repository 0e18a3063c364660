"""pyro_vae.analysis.mcmc: NUTS against exact posteriors, and the guide's draws and moments
beside it as ArviZ InferenceData.

Tolerances are Monte Carlo standard errors, Bonferroni-corrected over the compared moments.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import VAE, VAEConfig
from pyro_vae.analysis import mcmc
from pyro_vae.analysis.common import arviz
from pyro_vae.models import PRIORS

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


Z = 4.5


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


def test_nuts_recovers_the_exact_posterior(lg: LinearGaussian) -> None:
    """Two points, two chains: r-hat near 1, moments within Bonferroni-corrected MCSEs."""
    x = lg.sample_x(2, seed=5)
    nuts = mcmc.nuts_posterior(
        lg.model, x, num_samples=300, warmup_steps=150, num_chains=2, seed=4, point_ids=[7, 3]
    )
    assert dict(nuts.posterior.sizes) == {"chain": 2, "draw": 300, "point": 2, "z_dim": 2}
    assert nuts.posterior.coords["point"].values.tolist() == [7, 3]
    report = mcmc.compare_posteriors(nuts, lg.exact_guide, x)  # q = p(z|x) exactly
    rows = report["moments"]
    assert len(rows) == 4 and report["max_r_hat"] < 1.05
    z = NormalDist().inv_cdf(1 - 1e-5 / (2 * 2 * len(rows)))
    for r in rows:
        assert abs(r["nuts_mean"] - r["q_mean"]) < z * r["mcse_mean"], r
        assert abs(r["nuts_sd"] - r["q_sd"]) < z * r["mcse_sd"], r


def test_nuts_samples_a_mixture_prior_exactly() -> None:
    """p(z) = 0.3 N(-1, 1) + 0.7 N(1.5, 0.8^2), x|z ~ N(z, 1): PyTorch registers no
    bijection for a mixture's support, so NUTS samples z through the components' (the
    identity). The posterior is a mixture of the conjugate updates, with weights
    pi_k N(x; mu_k, s_k^2 + 1): NUTS's mean and sd within Bonferroni-corrected MCSEs."""
    pi = torch.tensor([0.3, 0.7], dtype=torch.float64)
    mu = torch.tensor([-1.0, 1.5], dtype=torch.float64)
    sd = torch.tensor([1.0, 0.8], dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        prior = dist.MixtureSameFamily(dist.Categorical(probs=pi), dist.Normal(mu, sd))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.tensor([0.5, -2.0], dtype=torch.float64)
    assert isinstance(mcmc.nuts_transforms(model, x)["z"], torch.distributions.Transform)
    nuts = mcmc.nuts_posterior(model, x, num_samples=300, warmup_steps=150, seed=1)
    summary = arviz().summary(nuts)
    post_var = 1 / (1 / sd**2 + 1)  # (K,) per component
    post_mean = post_var * (mu / sd**2 + x[:, None])  # (N, K)
    logw = pi.log() + dist.Normal(mu, (sd**2 + 1).sqrt()).log_prob(x[:, None])
    w = (logw - logw.logsumexp(-1, keepdim=True)).exp()  # (N, K)
    mean = (w * post_mean).sum(-1)
    std = ((w * (post_var + post_mean**2)).sum(-1) - mean**2).sqrt()
    z = NormalDist().inv_cdf(1 - 1e-5 / (2 * 4))
    for i in range(2):
        row = summary.iloc[i]
        assert abs(row["mean"] - float(mean[i])) < z * row["mcse_mean"], (row, mean[i])
        assert abs(row["sd"] - float(std[i])) < z * row["mcse_sd"], (row, std[i])


PRIOR_SPECS = [
    p + {"mixture": ":components=2", "vamp": ":components=2", "flow": ":layers=1"}.get(p, "")
    for p in PRIORS.names()
]


@pytest.mark.parametrize(
    ("prior", "upper"),
    [(p, ()) for p in PRIOR_SPECS] + [("mixture:components=2", (2,)), ("vamp:components=2", (2,))],
)
def test_nuts_and_its_report_on_every_prior_and_a_two_layer_model(
    prior: str, upper: tuple[int, ...]
) -> None:
    """Every latent site is sampled (z; z1 and z2 for two layers) and set beside q's moments."""
    torch.manual_seed(0)
    vae = VAE(
        VAEConfig(
            data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), prior=prior, upper_latent_dims=upper
        )
    ).double()
    x = torch.bernoulli(torch.full((2, 1, 4, 4), 0.4, dtype=torch.float64))
    nuts = mcmc.nuts_posterior(
        vae.model, x, num_samples=8, warmup_steps=8, max_tree_depth=3, point_ids=[5, 9]
    )
    sites = list(vae.model.site_names)
    assert sorted(nuts.posterior.data_vars) == sorted(sites)
    assert all(np.isfinite(nuts.posterior[s].values).all() for s in sites)
    report = mcmc.compare_posteriors(nuts, vae.guide, x)
    assert {r["site"] for r in report["moments"]} == set(sites)
    assert len(report["moments"]) == 2 * (2 + sum(upper))  # points x coordinates


def test_compare_posteriors_uses_sample_moments_where_q_has_no_mean(lg: LinearGaussian) -> None:
    """q = the exact posterior behind an identity flow, which has no closed-form mean or sd:
    the guide's moments come from 4000 draws, within Z Monte Carlo errors (sd/sqrt(n) for
    the mean, sd/sqrt(2n) for the sd) of the exact ones. The InferenceData beside them is
    the exact guide's own draws, in two chains so that r-hat is defined."""
    x = lg.sample_x(2)

    def flow_guide(x: torch.Tensor) -> None:
        mean, cov = lg.posterior(x)
        identity = dist.transforms.AffineTransform(0.0, 1.0, event_dim=1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z", dist.TransformedDistribution(dist.MultivariateNormal(mean, cov), [identity])
            )

    pyro.set_rng_seed(7)
    draws = mcmc.posterior_samples(lg.exact_guide, x, num_samples=200, num_chains=2)
    assert dict(draws.posterior.sizes) == {"chain": 2, "draw": 200, "point": 2, "z_dim": 2}
    report = mcmc.compare_posteriors(draws, flow_guide, x, q_samples=4000)
    mean, cov = lg.posterior(x)
    sd = cov.diagonal().sqrt()
    assert len(report["moments"]) == 4 and report["max_r_hat"] < 1.05
    for r in report["moments"]:
        assert r["q_moments"] == "sampled"
        i, j = r["point"], r["dim"]
        assert abs(r["q_mean"] - float(mean[i, j])) < Z * float(sd[j]) / math.sqrt(4000), r
        assert abs(r["q_sd"] - float(sd[j])) < Z * float(sd[j]) / math.sqrt(2 * 4000), r


def test_posterior_samples_are_inference_data_that_arviz_summarizes(lg: LinearGaussian) -> None:
    x = lg.sample_x(3)
    pyro.set_rng_seed(6)
    idata = mcmc.posterior_samples(lg.exact_guide, x, num_samples=400, point_ids=[10, 4, 9])
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "point", "z_dim")
    assert z.coords["point"].values.tolist() == [10, 4, 9]
    summary = arviz().summary(idata, kind="stats")
    assert list(summary.index[:2]) == ["z[10, 0]", "z[10, 1]"]
    mean, cov = lg.posterior(x)
    se = cov.diagonal().sqrt() / math.sqrt(400)
    got = torch.tensor(summary["mean"].to_numpy()).reshape(3, 2)
    assert ((got - mean).abs() < Z * se + 1e-3).all()  # 1e-3: summary rounds to 3 decimals


def test_mcmc_inputs_are_validated(lg: LinearGaussian) -> None:
    x = lg.sample_x(3)
    with pytest.raises(ValueError, match="point_ids must name 3 points"):
        mcmc.posterior_samples(lg.exact_guide, x, point_ids=[1])
