"""pyro_vae.analysis.latent against exact references: KL per dimension, active units and
the mutual information, on the linear-Gaussian model and small VAEs.

Tolerances are Monte Carlo standard errors (Z = 4.5, Bonferroni-corrected where several
coordinates are compared).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import VAE, VAEConfig, elbo_terms
from pyro_vae.analysis import latent
from pyro_vae.infer.importance import PointEstimateError

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


Z = 4.5


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


def test_kl_per_dim_is_analytic_and_sums_to_the_kl() -> None:
    torch.manual_seed(0)
    vae = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,))).double()
    x = torch.bernoulli(torch.full((20, 1, 4, 4), 0.4, dtype=torch.float64))
    result = latent.kl_per_dim(vae.model, vae.guide, x, batch_size=7)
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
    result = latent.kl_per_dim(model, guide, torch.zeros(n, 1), num_particles=particles)
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
    result = latent.kl_per_dim(model, guide, torch.zeros(5, 1, dtype=torch.float64))
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

    result = latent.kl_per_dim(lg.model, guide, x)
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

    result = latent.kl_per_dim(model, lg.diagonal_guide(), lg.sample_x(4))
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
    result = latent.kl_per_dim(vae.model, vae.guide, x, num_particles=200)
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

    result = latent.active_units(guide, x)
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
    result = latent.mutual_information(guide, x, num_samples=8, batch_size=300)
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
    tight = latent.mutual_information(guide, x[:100], scale=1e-4)  # true MI ~ 9.2 nats
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
    result = latent.mutual_information(vae.guide, x, num_samples=draws, batch_size=5)
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
        latent.mutual_information(vae.guide, torch.zeros(4, 1, 4, 4))


def test_latent_inputs_are_validated(lg: LinearGaussian) -> None:
    with pytest.raises(ValueError, match="non-empty tensor"):
        latent.active_units(lg.exact_guide, torch.zeros(0, 5))
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        latent.active_units(lg.exact_guide, lg.sample_x(3), num_samples=True)
