"""Every diagnostic gives each data point its own, exact value in every plate style.

The programs are tests/plate_styles.py's: the linear-Gaussian model with its exact
posterior as the guide (or that posterior widened 1.5 times), written with a sized or
unsized data plate, at dim -1 or -2, renamed, subsampled, or under ``poutine.scale``.
The references are closed forms (KL, posterior means and variances, log p(x_n)) or, for
the estimators whose value is a Monte Carlo draw (mutual information, PSIS k-hat), the
same estimate computed by hand from the same random numbers. A diagnostic that found the
data plate by another rule would spread one point's value over the others, or crash.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import plate_styles
import pyro
import pyro.distributions as dist
import pytest
import torch
from plate_styles import LG, STYLES

from pyro_vae import log_weights
from pyro_vae.analysis import gaps, latent, mcmc, psis
from pyro_vae.analysis.common import arviz

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

Z = 4.5


@pytest.fixture
def x() -> torch.Tensor:
    return LG.sample_x(7)  # 7 points: the per-point scale style has 7 weights


@pytest.mark.parametrize("style", list(STYLES))
def test_kl_per_dim_and_active_units_are_exact(style: str, x: torch.Tensor) -> None:
    """q = p(z|x) = N(m_n, S): each coordinate's KL is that of its marginal N(m_nj, S_jj)
    (closed form), and the active-unit variances are those of m_nj over the points."""
    model, guide = STYLES[style]()
    mean, cov = LG.posterior(x)
    s = cov.diagonal()
    kl = latent.kl_per_dim(model, guide, x, batch_size=4)
    assert kl.method == "analytic" and kl.marginal and kl.discrete == []
    expected = 0.5 * (s + mean**2 - 1 - s.log())  # (N, L)
    assert kl.values == pytest.approx(expected.mean(0).tolist(), rel=1e-9)
    units = latent.active_units(guide, x, batch_size=4)
    assert units.variances == pytest.approx(mean.var(0).tolist(), rel=1e-9)
    assert units.count == 2 and units.discrete == []


def _mvn(widen: float, x: torch.Tensor) -> dist.MultivariateNormal:
    mean, cov = LG.posterior(x)
    return dist.MultivariateNormal(mean, covariance_matrix=widen * cov)


@pytest.mark.parametrize("style", list(STYLES))
def test_mutual_information_is_the_estimate_by_hand(style: str, x: torch.Tensor) -> None:
    """The estimator's draws by hand (the guide's own draw first, then S per point): mean of
    log q(z|x_n) - log (1/N) sum_m q(z|x_m), to rounding."""
    _, guide = STYLES[style]()
    pyro.set_rng_seed(0)
    result = latent.mutual_information(guide, x, num_samples=5)
    pyro.set_rng_seed(0)
    q = _mvn(1.0, x)
    q.sample()  # the guide's run
    z = q.sample((5,))  # (S, N, L)
    own = q.log_prob(z)
    agg = q.log_prob(z.unsqueeze(-2)).logsumexp(-1) - math.log(7)  # (S, N), over the rows m
    assert result.value == pytest.approx(float((own - agg).mean()), abs=1e-9)


@pytest.mark.parametrize("style", list(STYLES))
def test_psis_khat_is_each_points_own(style: str, x: torch.Tensor) -> None:
    """q = N(m_n, 1.5 S): bounded weights that are not constant. k-hat of each point's
    weights computed by hand from the same draws (one plain run first, then S draws);
    the points' values differ."""
    model, guide = STYLES[style](1.5)
    pyro.set_rng_seed(1)
    khat = psis.psis_khat(model, guide, x, num_samples=60)
    pyro.set_rng_seed(1)
    q = _mvn(1.5, x)
    q.sample()  # the plain run that finds the plate nesting
    z = q.sample((60,))  # (S, N, L)
    log_p = plate_styles.prior(x).log_prob(z)
    log_p = log_p + dist.Normal(z @ LG.W.T + LG.b, LG.sigma).log_prob(x).sum(-1)
    lw = (log_p - q.log_prob(z)).T.numpy()  # (N, S)
    _, expected = arviz().psislw(lw)
    np.testing.assert_allclose(khat, expected, rtol=0, atol=1e-6)
    assert khat.std() > 0.02, khat


@pytest.mark.parametrize("style", list(STYLES))
def test_inference_gaps_are_exact_per_point(style: str, x: torch.Tensor) -> None:
    """With the exact posterior as q, every weight is p(x_n): the amortized ELBO is log
    p(x_n) to rounding; a few small steps (lr 1e-4) leave q* within 1e-3 of it."""
    model, guide = STYLES[style]()
    exact = LG.log_px(x)
    assert exact.std() > 1.0  # the points differ: a shared value would fail
    pyro.set_rng_seed(2)
    result = gaps.inference_gaps(
        model, guide, x, steps=5, lr=1e-4, num_particles=4, eval_particles=10, num_samples=10
    )
    assert result["settings"]["local_guide"] == "per-point parameters"
    per_point = {k: torch.tensor(v, dtype=torch.float64) for k, v in result["per_point"].items()}
    torch.testing.assert_close(per_point["elbo_amortized"], exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(per_point["elbo_optimized"], exact, rtol=0, atol=1e-3)
    torch.testing.assert_close(per_point["log_px"], exact, rtol=0, atol=1e-3)
    assert result["log_px"]["se"] > 0.3  # the spread of the points, not of one value


@pytest.mark.parametrize("style", ["unsized", "dim-2-unsized", "scale"])  # NUTS is slow
def test_nuts_samples_each_points_posterior(style: str, x: torch.Tensor) -> None:
    """NUTS on the unscaled model: each point's posterior mean and sd within
    Bonferroni-corrected MCSEs of the exact p(z|x_n) (a scale 0.01 left in would widen it
    tenfold), laid out (chain, draw, point, z_dim) in every style; the guide's moments
    beside them are the exact ones."""
    model, guide = STYLES[style]()
    x = x[:3]
    nuts = mcmc.nuts_posterior(model, x, num_samples=120, warmup_steps=80, max_tree_depth=4)
    assert dict(nuts.posterior.sizes) == {"chain": 2, "draw": 120, "point": 3, "z_dim": 2}
    report = mcmc.compare_posteriors(nuts, guide, x)
    mean, cov = LG.posterior(x)
    rows = report["moments"]
    assert len(rows) == 6
    z = NormalDist().inv_cdf(1 - 1e-5 / (2 * 2 * len(rows)))
    for r in rows:
        i, j = r["point"], r["dim"]
        assert r["q_mean"] == pytest.approx(float(mean[i, j]), abs=1e-12)
        assert r["q_sd"] == pytest.approx(float(cov[j, j].sqrt()), abs=1e-12)
        assert abs(r["nuts_mean"] - r["q_mean"]) < z * r["mcse_mean"], r
        assert abs(r["nuts_sd"] - r["q_sd"]) < z * r["mcse_sd"], r


@pytest.mark.parametrize("style", ["sized", "dim-2-unsized"])
def test_posterior_samples_are_laid_out_by_point(style: str, x: torch.Tensor) -> None:
    _, guide = STYLES[style]()
    pyro.set_rng_seed(3)
    draws = mcmc.posterior_samples(guide, x, num_samples=400)
    assert draws.posterior["z"].dims == ("chain", "draw", "point", "z_dim")
    got = torch.tensor(draws.posterior["z"].values).mean((0, 1))  # (N, L)
    mean, cov = LG.posterior(x)
    assert ((got - mean).abs() < Z * cov.diagonal().sqrt() / math.sqrt(400)).all()


def test_obs_mask_every_diagnostic_per_point(x: torch.Tensor) -> None:
    """x observed where a mask says (``obs_mask``; the model draws the rest, the guide does
    not): q is each point's own posterior N(m_n, C_n) given its observed entries. KL per
    coordinate and the active-unit variances in closed form; the mutual information as the
    same draws by hand; PSIS k-hat (q widened 1.5 times) that of the same draws' weights
    (the model's own draws of x_unobserved come between them); the inference gaps exact
    per point, with no Pyro warning about the model's extra site."""
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[:, 0] = True
    model, guide = plate_styles.masked_programs(mask)
    pairs = [plate_styles.observed_posterior(row, m) for row, m in zip(x, mask, strict=True)]
    mean = torch.stack([m for m, _ in pairs])  # (N, L)
    cov = torch.stack([c for _, c in pairs])  # (N, L, L)
    c = cov.diagonal(dim1=-2, dim2=-1)  # (N, L)
    kl = latent.kl_per_dim(model, guide, x)
    assert kl.values == pytest.approx(
        (0.5 * (c + mean**2 - 1 - c.log())).mean(0).tolist(), rel=1e-9
    )
    units = latent.active_units(guide, x)
    assert units.variances == pytest.approx(mean.var(0).tolist(), rel=1e-9)
    q = dist.MultivariateNormal(mean, covariance_matrix=cov)
    pyro.set_rng_seed(0)
    mi = latent.mutual_information(guide, x, num_samples=5)
    pyro.set_rng_seed(0)
    q.sample()
    z = q.sample((5,))
    agg = q.log_prob(z.unsqueeze(-2)).logsumexp(-1) - math.log(7)
    assert mi.value == pytest.approx(float((q.log_prob(z) - agg).mean()), abs=1e-9)
    wide_model, wide = plate_styles.masked_programs(mask, widen=1.5)
    pyro.set_rng_seed(1)
    khat = psis.psis_khat(wide_model, wide, x, num_samples=60)
    pyro.set_rng_seed(1)  # the same draws, their weights by the estimators' own log_weights
    lw = log_weights(wide_model, wide, x, 60)  # (exact per point: tests/infer/test_plate_styles)
    _, expected = arviz().psislw(lw.T.numpy())
    np.testing.assert_allclose(khat, expected, rtol=0, atol=1e-6)
    assert khat.std() > 0.02, khat
    exact = plate_styles.observed_log_px(x, mask)
    pyro.set_rng_seed(2)
    result = gaps.inference_gaps(
        model, guide, x, steps=5, lr=1e-4, num_particles=4, eval_particles=10, num_samples=10
    )
    per_point = {k: torch.tensor(v, dtype=torch.float64) for k, v in result["per_point"].items()}
    torch.testing.assert_close(per_point["elbo_amortized"], exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(per_point["log_px"], exact, rtol=0, atol=1e-3)
