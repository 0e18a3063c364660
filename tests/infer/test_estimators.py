"""elbo_terms and log_likelihood against exact references, in float64.

Tolerances are Monte Carlo standard errors computed from the draws themselves (the z-score
bound is stated with each test), so a biased estimator fails and an unbiased one passes
with the stated probability.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import VAE, VAEConfig, elbo_terms, log_likelihood

Z = 4.5  # two-sided z-score bound: a correct estimator fails with probability < 1e-5


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


def _mean_se(samples: torch.Tensor) -> tuple[float, float]:
    samples = samples.detach()
    return float(samples.mean()), float(samples.std() / math.sqrt(samples.numel()))


def test_exact_posterior_guide_gives_log_px_at_any_k(lg: LinearGaussian) -> None:
    x = lg.sample_x(20)
    pyro.set_rng_seed(0)
    for k in (1, 7, 300):
        ll = log_likelihood(lg.model, lg.exact_guide, x, num_samples=k)
        torch.testing.assert_close(ll, lg.log_px(x), rtol=0, atol=1e-9)


def test_chunked_log_sum_exp_is_exact(lg: LinearGaussian) -> None:
    """Tiny chunks of draws and of points combine to the exact answer (zero-variance weights)."""
    x = lg.sample_x(13)
    ll = log_likelihood(
        lg.model, lg.exact_guide, x, num_samples=1000, batch_size=4, max_elements=60
    )
    torch.testing.assert_close(ll, lg.log_px(x), rtol=0, atol=1e-9)


def test_exact_posterior_guide_gives_elbo_equal_log_px(lg: LinearGaussian) -> None:
    """With q = p(z|x), log p(x,z) - log q(z|x) = log p(x) for every draw: zero variance."""
    x = lg.sample_x(10)
    pyro.set_rng_seed(1)
    # log q - log p per draw (Monte Carlo): the analytic KL of MVN q vs diagonal p (see
    # pyro_vae.guides.kl) would be exact in expectation only, not draw by draw
    assert elbo_terms(lg.model, lg.exact_guide, x).kl_method == {"z": "analytic"}
    terms = elbo_terms(lg.model, lg.exact_guide, x, analytic_kl=False)
    assert terms.kl_method == {"z": "monte-carlo"}
    torch.testing.assert_close(terms["elbo"], lg.log_px(x), rtol=0, atol=1e-9)


def test_iwae_at_k1_is_the_elbo_and_grows_with_k(lg: LinearGaussian) -> None:
    x = lg.sample_x(40)
    guide = lg.diagonal_guide(scale_factor=1.8, shift=0.3)
    pyro.set_rng_seed(2)
    elbo = torch.stack([elbo_terms(lg.model, guide, x)["elbo"] for _ in range(200)])
    iw = {
        k: torch.stack([log_likelihood(lg.model, guide, x, num_samples=k) for _ in range(200)])
        for k in (1, 10, 100)
    }
    # k = 1: the same expectation as the ELBO
    m1, s1 = _mean_se(iw[1])
    me, se = _mean_se(elbo)
    assert abs(m1 - me) < Z * math.hypot(s1, se)
    # strictly growing with k, and still below log p(x)
    exact = float(lg.log_px(x).mean())
    means = [_mean_se(iw[k]) for k in (1, 10, 100)]
    for (a, sa), (b, sb) in itertools.pairwise(means):
        assert b - a > Z * math.hypot(sa, sb)
    assert means[-1][0] < exact + Z * means[-1][1]


def test_iwae_converges_to_log_px(lg: LinearGaussian) -> None:
    """L_k -> log p(x): at k = 100, 1000, 5000 the gap matches the delta-method bias
    Var(w)/(2k E[w]^2), and it shrinks with k, resolved from k = 10 to k = 100.

    Replicates: x tiled R times (rows are independent estimates), R k = 50,000 draws per
    point for every k, so each gap's standard error is about sqrt(Var(w) / 50,000 N)
    = 1e-3, against biases of 2.2e-2 (k = 10), 2.2e-3, 2.2e-4 and 4.5e-5. The delta
    method's O(1/k^2) remainder is ~1e-5 at k = 100, far below the SE (not so at k = 10,
    which is only ordered against k = 100: 0.02 apart, over 20 standard errors).
    """
    x = lg.sample_x(10)
    n = x.shape[0]
    guide = lg.diagonal_guide(scale_factor=1.5)
    pyro.set_rng_seed(3)
    from pyro_vae import log_weights

    lw = log_weights(lg.model, guide, x, 20000)  # (K, N)
    gaps = {}
    for k in (10, 100, 1000, 5000):
        reps = 50_000 // k
        ll = log_likelihood(lg.model, guide, x.repeat(reps, 1), num_samples=k).reshape(reps, n)
        gaps[k] = _mean_se(lg.log_px(x) - ll)  # (R, N) replicates of log p(x) - L_k
        if k < 100:
            continue
        # delta-method bias of L_k, averaged over points, from 20 batches of 1000 draws:
        # its mean and standard error
        bias, bias_se = _mean_se(torch.stack([_bias(batch, k) for batch in lw.split(1000)]))
        mean, se = gaps[k]
        assert abs(mean - bias) < Z * math.hypot(se, bias_se), (k, mean, bias, se)
    (g10, s10), (g100, s100) = gaps[10], gaps[100]
    assert g10 - g100 > Z * math.hypot(s10, s100)


def _bias(lw: torch.Tensor, k: int) -> torch.Tensor:
    """Var(w) / (2k E[w]^2) from log weights ``(K, N)``, averaged over the N points."""
    w = (lw - lw.logsumexp(0)).exp() * lw.shape[0]  # normalized weights, mean 1 per point
    return (w.var(0) / (2 * k)).mean()


def test_elbo_terms_agree_with_trace_elbo() -> None:
    torch.manual_seed(0)
    vae = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(16,))).double()
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.3, dtype=torch.float64))
    pyro.set_rng_seed(4)
    elbo = pyro.infer.Trace_ELBO()
    reps = 2000
    ours = torch.stack([elbo_terms(vae.model, vae.guide, x)["elbo"].mean() for _ in range(reps)])
    pyros = torch.tensor([-elbo.loss(vae.model, vae.guide, x) / 8 for _ in range(reps)])
    (a, sa), (b, sb) = _mean_se(ours), _mean_se(pyros)
    assert abs(a - b) < Z * math.hypot(sa, sb)
    assert sa < sb  # the analytic KL removes variance


def test_analytic_kl_matches_closed_form() -> None:
    torch.manual_seed(1)
    vae = VAE(VAEConfig(data_shape=(6,), latent_dim=4, hidden=(8,), likelihood="normal"))
    vae = vae.double()
    x = torch.randn(5, 6, dtype=torch.float64)
    terms = elbo_terms(vae.model, vae.guide, x)
    q = vae.guide.posterior(vae.guide.encoder(x)).base_dist
    mu, sigma = q.loc, q.scale
    closed = 0.5 * (sigma**2 + mu**2 - 1 - 2 * sigma.log()).sum(-1)  # KL(N(mu,s^2) || N(0,1))
    assert terms.kl_method == {"z": "analytic"}
    torch.testing.assert_close(terms["kl"], closed, rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["kl:z"], closed, rtol=0, atol=1e-12)
    torch.testing.assert_close(terms["elbo"], terms["reconstruction"] - terms["kl"])


def test_monte_carlo_kl_where_none_is_registered() -> None:
    """Student-t q against Normal p has no registered KL; the MC estimate is unbiased."""
    df, loc, scale = 5.0, 0.7, 0.4
    q = dist.StudentT(df, torch.tensor(loc, dtype=torch.float64), scale)
    # KL = -H(q) - E_q[log N(z; 0, 1)], with E_q[z^2] = loc^2 + scale^2 df / (df - 2)
    exact = (
        float(-q.entropy())
        + 0.5 * math.log(2 * math.pi)
        + 0.5 * (loc**2 + scale**2 * df / (df - 2))
    )

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.StudentT(df, torch.full_like(x, loc), scale))

    pyro.set_rng_seed(5)
    terms = elbo_terms(model, guide, torch.zeros(20000, dtype=torch.float64))
    assert terms.kl_method == {"z": "monte-carlo"}
    mean, se = _mean_se(terms["kl"])
    assert abs(mean - exact) < Z * se


def test_hierarchy_uses_analytic_kl_only_where_valid() -> None:
    """Model z2 -> z1 -> x, guide x -> z1 -> z2: KL(z1) must be Monte Carlo, KL(z2) analytic."""

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros_like(x), 1.0))
            z1 = pyro.sample("z1", dist.Normal(0.8 * z2, 0.6))
            pyro.sample("x", dist.Normal(z1, 0.5), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(0.5 * x, 0.7))
            pyro.sample("z2", dist.Normal(0.4 * z1, 0.9))

    x = torch.linspace(-2, 2, 50, dtype=torch.float64)
    pyro.set_rng_seed(6)
    terms = elbo_terms(model, guide, x)
    assert terms.kl_method == {"z1": "monte-carlo", "z2": "analytic"}
    ours = torch.stack([elbo_terms(model, guide, x)["elbo"].sum() for _ in range(3000)])
    pyros = torch.tensor([-pyro.infer.Trace_ELBO().loss(model, guide, x) for _ in range(3000)])
    (a, sa), (b, sb) = _mean_se(ours), _mean_se(pyros)
    assert abs(a - b) < Z * math.hypot(sa, sb)


def test_inputs_are_validated(lg: LinearGaussian) -> None:
    with pytest.raises(ValueError, match="num_particles"):
        elbo_terms(lg.model, lg.exact_guide, lg.sample_x(3), num_particles=0)
    with pytest.raises(ValueError, match="num_samples"):
        log_likelihood(lg.model, lg.exact_guide, lg.sample_x(3), num_samples=0)
    with pytest.raises(ValueError, match="non-empty"):
        elbo_terms(lg.model, lg.exact_guide, torch.zeros(0, 5, dtype=torch.float64))
