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
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import VAE, VAEConfig, elbo_terms, load_dataset
from pyro_vae.analysis import diagnostics
from pyro_vae.analysis import figures as diagnostic_plots
from pyro_vae.cli.main import main, subset
from pyro_vae.infer.importance import PointEstimateError
from pyro_vae.models import PRIORS

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
    """Normal q against a Student-t prior: no closed form registered, so Monte Carlo.

    The exact per-dimension reference is the integral of N(z; m, s^2) (log N - log t_3)
    by the trapezoid rule on m +- 12 s (20,001 nodes; error far below 1e-6). Tolerance:
    Z standard errors of the same number of independent draws.
    """
    m = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    s = torch.tensor([0.5, 1.2, 0.8], dtype=torch.float64)
    prior = dist.StudentT(3.0, 0.0, 1.5)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.StudentT(3.0, torch.zeros(3, dtype=x.dtype), 1.5).to_event(1))

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(m.expand(x.shape[0], 3), s).to_event(1))

    grid = m + s * torch.linspace(-12, 12, 20001, dtype=torch.float64)[:, None]  # (G, 3)
    q = dist.Normal(m, s)
    integrand = q.log_prob(grid).exp() * (q.log_prob(grid) - prior.log_prob(grid))
    exact = torch.trapezoid(integrand, grid, dim=0)  # (3,)
    pyro.set_rng_seed(0)
    n, particles = 100, 200
    result = diagnostics.kl_per_dim(model, guide, torch.zeros(n, 1), num_particles=particles)
    assert result.method == "monte-carlo" and not result.marginal
    z = q.sample((n * particles,))  # the same number of draws, for the SE
    terms = q.log_prob(z) - prior.log_prob(z)  # (draws, 3)
    se = terms.std(0) / math.sqrt(terms.shape[0])
    assert ((torch.tensor(result.values, dtype=torch.float64) - exact).abs() < Z * se).all()


def test_kl_per_dim_is_closed_form_where_torch_registers_it() -> None:
    """Normal q against a Laplace prior (torch registers the KL): the folded-normal formula
    KL(N(m, s^2) || Laplace(0, b)) = -1/2 log(2 pi e s^2) + log(2b) + E|z| / b, with
    E|z| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s)), exactly."""
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
    result = diagnostics.kl_per_dim(model, guide, torch.zeros(5, 1, dtype=torch.float64))
    assert result.method == "analytic"
    assert result.values == pytest.approx(exact.tolist(), rel=1e-9)


@pytest.mark.parametrize("family", ["full", "lowrank"])
def test_kl_per_dim_of_a_correlated_guide_is_the_marginal_kl(
    lg: LinearGaussian, family: str
) -> None:
    """q = p(z|x) = N(m, S), correlated, as a full or a low-rank (rank 1 + diagonal) Normal.

    Each value is the closed-form KL(N(m_j, S_jj) || N(0, 1)) averaged over x, and their sum
    is the KL less KL(q || prod_j q_j) = 1/2 (sum_j log S_jj - log|S|), exactly.
    """
    x = lg.sample_x(6)
    mean, cov = lg.posterior(x)
    guide = lg.exact_guide
    if family == "lowrank":
        v, u = torch.linalg.eigh(cov)  # S = v_max u u^T + v_min I, a rank-1 factor and a diagonal
        factor = (u[:, -1] * (v[-1] - v[0]).sqrt())[:, None]  # (L, 1)
        diag = v[0].expand(2)

        def guide(x: torch.Tensor) -> None:
            loc, _ = lg.posterior(x)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.LowRankMultivariateNormal(loc, factor, diag))

    result = diagnostics.kl_per_dim(lg.model, guide, x)
    assert result.method == "analytic" and result.marginal and result.site_of == ["z", "z"]
    s = cov.diagonal()
    marginal = 0.5 * (s + mean**2 - 1 - s.log())  # (N, L) KL(N(m_j, s_j) || N(0, 1))
    assert result.values == pytest.approx(marginal.mean(0).tolist(), rel=1e-9)
    total = 0.5 * float((s.sum() + (mean**2).sum(-1) - 2 - torch.logdet(cov)).mean())  # KL(q||p)
    dependence = 0.5 * float(s.log().sum() - torch.logdet(cov))
    assert sum(result.values) == pytest.approx(total - dependence, rel=1e-9)


def test_kl_per_dim_is_omitted_with_a_reason_for_a_mixture_prior(lg: LinearGaussian) -> None:
    def model(x: torch.Tensor) -> None:
        components = dist.Normal(torch.zeros(2, 2, dtype=x.dtype), 1.0).to_event(1)
        prior = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(2)), components)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", prior)

    result = diagnostics.kl_per_dim(model, lg.diagonal_guide(), lg.sample_x(4))
    assert result.values == [] and result.method is None
    assert result.reason is not None and "MixtureSameFamily" in result.reason


def test_kl_per_dim_of_a_two_layer_model_is_per_site() -> None:
    """z2 -> z1 -> x: entries for z1 (3) then z2 (2), each named. z1's KL is Monte Carlo
    (p(z1|z2) depends on the z2 drawn from this z1), so the sum agrees with elbo_terms' KL
    within Z standard errors of the two Monte Carlo averages (200 draws each)."""
    torch.manual_seed(0)
    config = VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,), upper_latent_dims=(2,))
    vae = VAE(config).double()
    x = torch.bernoulli(torch.full((10, 1, 4, 4), 0.4, dtype=torch.float64))
    pyro.set_rng_seed(4)
    result = diagnostics.kl_per_dim(vae.model, vae.guide, x, num_particles=200)
    assert result.method == "monte-carlo" and not result.marginal
    assert result.site_of == ["z1"] * 3 + ["z2"] * 2 and list(result.sites) == ["z1", "z2"]
    with torch.no_grad():
        draws = torch.stack([elbo_terms(vae.model, vae.guide, x)["kl"].mean() for _ in range(200)])
    se = float(draws.std()) * math.sqrt(2 / 200)  # the same spread for both averages
    assert abs(sum(result.values) - float(draws.mean())) < Z * se


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

    Tolerances, derived. Given the N = 1000 points, the estimate averages
    t = log q(z|x_n) - log q_N(z) over 8 draws per point, q_N the plug-in aggregate
    posterior. With the exact marginal q(z) = N(0, a^2 + s^2) in its place, its
    expectation is the mean over points of KL(q(z|x_n) || q(z)) (closed form) and its
    Monte Carlo standard error is sqrt(sum_n Var(t | x_n) / (8 N^2)), computed from
    independent draws. The plug-in q_N adds a bias of order E[q(z|x)/q(z)] / N (its own
    point's share of the mixture; Jensen's gap is of the same order), added as is. The
    mean KL over the points is itself a sample mean, within Z of its standard error of
    the population value.
    """
    a, s = 1.0, 0.5
    n, v = 1000, a**2 + s**2
    x = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def guide(x: torch.Tensor, scale: float = s) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x, scale))

    pyro.set_rng_seed(1)
    result = diagnostics.mutual_information(guide, x, num_samples=8, batch_size=300)
    assert result.value is not None and result.num_points == n
    kl = 0.5 * (s**2 / v + (a * x) ** 2 / v - 1 - math.log(s**2 / v))  # (N,) closed form
    e = torch.randn(n, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z = a * x[:, None] + s * e  # (N, 8) independent draws from q(z|x_n)
    t = dist.Normal(a * x[:, None], s).log_prob(z) - dist.Normal(0.0, math.sqrt(v)).log_prob(z)
    se = math.sqrt(float(t.var(1).sum()) / (8 * n**2))
    plug_in = float(t.exp().mean()) / n
    target = float(kl.mean())
    assert abs(result.value - target) < Z * se + plug_in, (result.value, target, se, plug_in)
    exact = 0.5 * math.log(1 + a**2 / s**2)
    assert abs(target - exact) < Z * float(kl.std()) / math.sqrt(n)
    tight = diagnostics.mutual_information(guide, x[:100], scale=1e-4)  # true MI ~ 9.2 nats
    assert tight.value is not None and math.log(100) - 0.01 < tight.value <= math.log(100) + 1e-9


@pytest.mark.parametrize("family", ["normal", "lowrank", "full", "iaf"])
def test_mutual_information_for_every_guide_family(family: str) -> None:
    """The estimate over chunks of rows agrees with a reference that scores every draw
    under each row's own q(z|x_m) (the guide run on that row alone, so nothing relies on
    a distribution broadcasting over rows: an IAF's flow is conditioned per row).

    Both are unbiased for the same empirical MI; their difference has variance twice
    sum_n Var_n(t) / (S N^2), from the per-point spread of the reference's terms.
    """
    torch.manual_seed(0)
    vae = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,), guide=family))
    vae = vae.double()
    with torch.no_grad():  # spread the codes, so that I(x; z) is far from 0 and from log N
        vae.guide.encoder.net[0].weight.mul_(6.0)  # type: ignore[index]
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((12, 1, 4, 4), 0.4, dtype=torch.float64), generator=g)
    n, draws = 12, 300
    pyro.set_rng_seed(2)
    result = diagnostics.mutual_information(vae.guide, x, num_samples=draws, batch_size=5)
    with torch.no_grad():
        rows = [pyro.poutine.trace(vae.guide).get_trace(x[m : m + 1]).nodes["z"]["fn"]
                for m in range(n)]  # fmt: skip
        terms = []
        for q in rows:
            z = q.sample((draws,))  # (S, 1, L)
            others = torch.stack([r.log_prob(z)[:, 0] for r in rows])  # (N, S)
            terms.append(q.log_prob(z)[:, 0] - (others.logsumexp(0) - math.log(n)))
        t = torch.stack(terms)  # (N, S)
    se = math.sqrt(2 * float(t.var(1).sum()) / (draws * n**2))
    assert result.value is not None and 0.3 < float(t.mean()) < math.log(n) - 0.3
    assert abs(result.value - float(t.mean())) < Z * se, (result.value, float(t.mean()), se)


def test_mutual_information_refuses_a_point_mass_guide() -> None:
    vae = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,), guide="delta"))
    with pytest.raises(PointEstimateError, match="point mass"):
        diagnostics.mutual_information(vae.guide, torch.zeros(4, 1, 4, 4))


def test_psis_khat_small_for_a_good_guide_and_large_for_a_poor_one(lg: LinearGaussian) -> None:
    x = lg.sample_x(30)
    pyro.set_rng_seed(2)
    exact = diagnostics.psis_khat(lg.model, lg.exact_guide, x, num_samples=500)
    assert (exact == 0).all()  # equal weights: nothing to fit

    def near_exact(x: torch.Tensor) -> None:  # p(z|x) with its covariance 1% wider
        mean, cov = lg.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, 1.01 * cov))

    # real weights, bounded above (q wider than p), through arviz.psislw: k-hat well below 0.5
    near = diagnostics.psis_khat(lg.model, near_exact, x, num_samples=500)
    assert (near != 0).all() and diagnostics.khat_summary(near)["max"] < 0.5, near
    wide = diagnostics.psis_khat(lg.model, lg.diagonal_guide(1.3), x, num_samples=1000)
    assert diagnostics.khat_summary(wide)["max"] < 0.5  # q wider than p(z|x): bounded weights
    poor = diagnostics.khat_summary(
        diagnostics.psis_khat(lg.model, lg.diagonal_guide(0.5, 0.5), x, num_samples=1000)
    )
    assert poor["frac_above_0.7"] > 0.9 and poor["mean"] > 0.7  # q narrow and shifted
    worst = diagnostics.worst_points(wide, 3, elbo=list(range(30)))
    assert [w["khat"] for w in worst] == sorted(wide.tolist(), reverse=True)[:3]
    assert all(w["elbo"] == w["index"] for w in worst)


@pytest.fixture
def correlated() -> LinearGaussian:
    """A linear-Gaussian model whose posterior is correlated (coefficient -0.86), so the best
    diagonal Normal misses it by 0.68 nats: an approximation gap worth measuring."""
    W = torch.tensor(
        [[1.0, 0.8], [0.9, 1.1], [0.5, 0.7], [-0.4, -0.2], [0.2, 0.5]], dtype=torch.float64
    )
    return LinearGaussian(W, torch.zeros(5, dtype=torch.float64), 0.5)


class _FlowWrappedNormal(torch.nn.Module):
    """q(z|x) = N(Ax + c, diag exp(2(Bx + d))) seen through an identity flow, so that its
    parameters cannot be read off the distribution: inference_gaps copies the module per
    point. Initialized at the linear-Gaussian posterior's marginals, sd times ``factor``,
    mean plus ``shift``."""

    def __init__(self, lg: LinearGaussian, factor: float, shift: float) -> None:
        super().__init__()
        latent = lg.W.shape[1]
        _, cov = lg.posterior(lg.b[None])
        gain = lg.W @ cov.T / lg.sigma**2  # mean = (x - b) @ gain
        self.A = torch.nn.Parameter(gain.clone())
        self.c = torch.nn.Parameter(shift - lg.b @ gain)
        self.B = torch.nn.Parameter(torch.zeros(lg.W.shape[0], latent, dtype=torch.float64))
        self.d = torch.nn.Parameter((cov.diagonal().sqrt() * factor).log())

    def forward(self, x: torch.Tensor) -> None:
        base = dist.Normal(x @ self.A + self.c, (x @ self.B + self.d).exp()).to_event(1)
        identity = dist.transforms.AffineTransform(0.0, 1.0, event_dim=1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(base, [identity]))


def _lowrank_guide(lg: LinearGaussian, shift: float):  # type: ignore[no-untyped-def]
    """q = N(mean + shift, ff^T + diag(2.25 sd^2)), f = (0.3, 0.3): wrong in mean and covariance."""

    def guide(x: torch.Tensor) -> None:
        mean, cov = lg.posterior(x)
        factor = torch.full((x.shape[0], 2, 1), 0.3, dtype=x.dtype)
        diag = (2.25 * cov.diagonal()).expand(x.shape[0], 2)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.LowRankMultivariateNormal(mean + shift, factor, diag))

    return guide


@pytest.mark.parametrize("family", ["diagonal", "lowrank", "module"])
def test_inference_gaps_match_the_closed_form(correlated: LinearGaussian, family: str) -> None:
    """Correlated linear-Gaussian posterior N(m, S); amortized q wrong in mean and scale.

    The best diagonal Normal has the exact mean and precision diag(S^-1) (Bishop 2006,
    10.1.2): approximation gap 1/2 (sum_j log (S^-1)_jj - log|S^-1|) for every point. A
    rank-1-plus-diagonal Normal holds any 2x2 covariance: gap 0. The amortization gap is
    KL(q || p(z|x)) minus the approximation gap. ``diagonal`` and ``lowrank`` free the
    distribution's parameters per point; ``module`` (a diagonal Normal behind an identity
    flow) is optimized as a copy of the guide module per point.

    Tolerance: Z standard errors over points (the exact gaps are equal across points, so
    their spread is Monte Carlo error), nothing more: with 256 particles per step and
    lr = 0.1, the 300 cosine-decayed Adam steps end within 3e-4 nats of the optimal ELBO
    on average for each family (measured once against the closed-form ELBO of the fitted
    parameters; with lr = 0.05 the low-rank factor is still 0.018 short), under a
    twentieth of the standard error (0.006 to 0.03). log p(x), the mixture IW bound, is
    compared point by
    point with the exact log p(x): the differences are Monte Carlo error (the IW bias,
    Var(w)/2K with K = 500 from a near-exact mixture, is far below their SE).
    """
    lg = correlated
    x = lg.sample_x(12)
    mean, cov = lg.posterior(x[:1])
    guides = {
        "diagonal": (lg.diagonal_guide(1.5, 0.4), "per-point parameters"),
        "lowrank": (_lowrank_guide(lg, 0.4), "per-point parameters"),
        "module": (_FlowWrappedNormal(lg, 1.5, 0.4), "per-point copies of the guide"),
    }
    guide, how = guides[family]
    pyro.set_rng_seed(3)
    gaps = diagnostics.inference_gaps(
        lg.model, guide, x, steps=300, lr=0.1, num_particles=256, num_samples=500
    )
    assert gaps["settings"]["local_guide"] == how
    precision = torch.linalg.inv(cov)
    approx = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    approx = 0.0 if family == "lowrank" else approx
    cov_q = torch.diag(2.25 * cov.diagonal())  # the amortized q's covariance
    cov_q = cov_q + (0.09 if family == "lowrank" else 0.0)  # + ff^T, f = (0.3, 0.3)
    q = dist.MultivariateNormal(mean[0] + 0.4, cov_q)
    kl_q = float(torch.distributions.kl_divergence(q, dist.MultivariateNormal(mean[0], cov)))
    for key, exact in (("approximation_gap", approx), ("amortization_gap", kl_q - approx)):
        est = gaps[key]
        assert abs(est["mean"] - exact) < Z * est["se"], (key, est, exact)
    diff = torch.tensor(gaps["per_point"]["log_px"], dtype=torch.float64) - lg.log_px(x)
    assert abs(float(diff.mean())) < Z * float(diff.std()) / math.sqrt(12), diff
    assert gaps["num_points"] == 12 and len(gaps["per_point"]["log_px"]) == 12


def test_inference_gaps_read_and_keep_the_param_store(correlated: LinearGaussian) -> None:
    """A model whose weights live in Pyro's param store is scored with the stored weights:
    with the exact posterior as both proposals (no optimization steps) every importance
    weight is p(x), so log p(x) is exact to rounding (zero weights would be tens of nats
    off). A VAE whose guide is copied per point (IAF) leaves the store as it found it:
    the same entries, the same tensors."""
    lg = correlated
    store = pyro.get_param_store()
    with store.scope():  # this test's own store
        stored = pyro.param("gaps_W", lg.W.clone())

        def model(x: torch.Tensor) -> None:
            w = pyro.param("gaps_W", torch.zeros_like(lg.W))
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z @ w.T + lg.b, lg.sigma).to_event(1), obs=x)

        x = lg.sample_x(4)
        gaps = diagnostics.inference_gaps(model, lg.exact_guide, x, steps=0, num_samples=10)
        assert gaps["per_point"]["log_px"] == pytest.approx(lg.log_px(x).tolist(), abs=1e-9)
        assert store["gaps_W"] is stored

        vae = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), guide="iaf"))
        xs = torch.bernoulli(torch.full((2, 1, 4, 4), 0.4))
        before = store.get_state()["params"]  # name -> tensor; the VAE not yet registered
        gaps = diagnostics.inference_gaps(vae.model, vae.guide, xs, steps=3, num_samples=10)
        assert gaps["settings"]["local_guide"] == "per-point copies of the guide"
        after = store.get_state()["params"]
        assert all(after[k] is before[k] for k in before)
        own = {id(p) for p in vae.parameters()}  # new entries: the VAE's own, never a copy's
        assert all(id(after[k]) in own for k in after.keys() - before.keys())


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
    assert isinstance(diagnostics.nuts_transforms(model, x)["z"], torch.distributions.Transform)
    nuts = diagnostics.nuts_posterior(model, x, num_samples=300, warmup_steps=150, seed=1)
    summary = diagnostics.arviz().summary(nuts)
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
    nuts = diagnostics.nuts_posterior(
        vae.model, x, num_samples=8, warmup_steps=8, max_tree_depth=3, point_ids=[5, 9]
    )
    sites = list(vae.model.site_names)
    assert sorted(nuts.posterior.data_vars) == sorted(sites)
    assert all(np.isfinite(nuts.posterior[s].values).all() for s in sites)
    report = diagnostics.compare_posteriors(nuts, vae.guide, x)
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
    draws = diagnostics.posterior_samples(lg.exact_guide, x, num_samples=200, num_chains=2)
    assert dict(draws.posterior.sizes) == {"chain": 2, "draw": 200, "point": 2, "z_dim": 2}
    report = diagnostics.compare_posteriors(draws, flow_guide, x, q_samples=4000)
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


def test_psis_plot_places_points_at_their_split_indices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scatter's x are the points' indices in the split (what the tiles and eval.json
    name), the worst point is circled there, and the legend sits outside the axes."""
    seen = {}

    def keep(fig: Any, path: Any) -> Path:  # inspect the figure instead of writing it
        fig.canvas.draw()
        ax = fig.axes[0]
        seen["points"] = ax.collections[0].get_offsets()[:, 0].tolist()
        seen["worst"] = ax.collections[1].get_offsets()[:, 0].tolist()
        seen["legend_x0"] = ax.get_legend().get_window_extent().x0
        seen["axes_x1"] = ax.get_window_extent().x1
        return Path(path)

    monkeypatch.setattr(diagnostic_plots, "_save", keep)
    khat = np.array([0.1, 0.9, 0.3, 0.2])
    ids = [250, 7, 120, 31]  # a seeded subset of a split: not 0..3
    images = np.zeros((1, 1, 8, 8))
    diagnostic_plots.psis_khat(
        khat, tmp_path / "k.png", originals=images, recons=images, worst=[1], point_ids=ids
    )
    assert seen["points"] == ids and seen["worst"] == [7]
    assert seen["legend_x0"] >= seen["axes_x1"]
    with pytest.raises(ValueError, match="point_ids must name the 4 points"):
        diagnostic_plots.psis_khat(khat, tmp_path / "x.png", point_ids=[1, 2])


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


def _small_run(run: Path, *flags: str) -> Path:
    train = ["--hidden", "8", "--latent-dim", "2", "--quiet", "--eval-num-samples", "2"]
    train += ["--eval-num-points", "10", "--epochs", "1", "--out", str(run), *flags]
    assert main(["train", *train]) == 0
    return run


QUICK = ["--num-samples", "5", "--num-points", "12", "--psis-samples", "100"]
QUICK += ["--gaps", "1", "--mcmc", "1", "--mcmc-samples", "10"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--guide", "iaf"],
        ["--guide", "lowrank"],
        ["--upper-latent-dims", "2"],
        ["--conditional", "true"],
    ],
    ids=["iaf", "lowrank", "two-layer", "conditional"],
)
def test_evaluate_gives_every_kind_of_run_its_diagnostics(tmp_path: Path, flags: list[str]) -> None:
    """IAF and low-rank guides, two stochastic layers and a conditional VAE (labels passed
    through): every diagnostic is computed, NUTS samples every latent site, and its
    InferenceData is saved as RUN_DIR/mcmc.nc."""
    run = _small_run(tmp_path / "run", *flags)
    assert main(["evaluate", str(run), *QUICK]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert "diagnostics_skipped" not in result and "diagnostic_errors" not in result
    sites = ["z1", "z2"] if "--upper-latent-dims" in flags else ["z"]
    assert isinstance(result["active_units"], int) and result["psis_khat"]["num_samples"] == 100
    if len(sites) == 1:
        assert result["mutual_information"] is not None
    kl_sites = {"iaf": [], "lowrank": ["z", "z"], "2": ["z1", "z1", "z2", "z2"], "true": ["z", "z"]}
    assert result["kl_per_dim_sites"] == kl_sites[flags[1]]  # an IAF's KL does not split
    assert result["kl_per_dim_marginal"] == ("lowrank" in flags)
    assert result["gaps"]["num_points"] == 1 and math.isfinite(result["gaps"]["log_px"]["mean"])
    assert {r["site"] for r in result["mcmc"]["moments"]} == set(sites)
    idata = diagnostics.arviz().from_netcdf(run / "mcmc.nc")
    assert sorted(idata.posterior.data_vars) == sites
    assert idata.posterior.coords["point"].values.tolist() == result["mcmc"]["points"]
    point = result["mcmc"]["points"][0]
    assert (run / "plots" / f"posterior_pairs_{point}.png").is_file()


def test_a_failing_diagnostic_loses_no_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One diagnostic raising: the others still run, eval.json keeps every figure with the
    error under ``diagnostic_errors``, and the exit code says so; with --debug the error
    propagates, and eval.json holds everything computed before it."""
    run = _small_run(tmp_path / "run")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(diagnostics, "inference_gaps", broken)
    assert main(["evaluate", str(run), *QUICK]) == 1
    result = json.loads((run / "eval.json").read_text())
    assert result["diagnostic_errors"] == {"gaps": "RuntimeError: broken on purpose"}
    assert {"nll", "psis_khat", "mutual_information", "mcmc"} <= set(result)
    assert "the gaps diagnostic failed" in capsys.readouterr().err
    (run / "eval.json").unlink()
    with pytest.raises(RuntimeError, match="broken on purpose"):
        main(["--debug", "evaluate", str(run), *QUICK])
    partial = json.loads((run / "eval.json").read_text())
    assert {"nll", "psis_khat", "kl_per_dim"} <= set(partial) and "mcmc" not in partial


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

    def flow_function(x: torch.Tensor) -> None:  # parameters unreadable, nothing to copy
        base = dist.Normal(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(1)
        identity = dist.transforms.AffineTransform(0.0, 1.0, event_dim=1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(base, [identity]))

    with pytest.raises(ValueError, match="cannot be read, and it is a plain function"):
        diagnostics.check_inference_gaps(flow_function, x)
    delta = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), guide="delta"))
    with pytest.raises(PointEstimateError, match="no inference gaps"):
        diagnostics.inference_gaps(delta.model, delta.guide, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="non-empty tensor"):
        diagnostics.active_units(lg.exact_guide, torch.zeros(0, 5))
