"""pyro_vae.analysis.gaps: the inference gaps of Cremer et al. (2018) against their closed
form on a correlated linear-Gaussian posterior.

Tolerances are Monte Carlo standard errors (Z = 4.5) plus a stated optimization tolerance.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import VAE, VAEConfig
from pyro_vae.analysis.gaps import check_inference_gaps, inference_gaps
from pyro_vae.infer.importance import PointEstimateError

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


Z = 4.5


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


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
    gaps = inference_gaps(lg.model, guide, x, steps=300, lr=0.1, num_particles=256, num_samples=500)
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
        gaps = inference_gaps(model, lg.exact_guide, x, steps=0, num_samples=10)
        assert gaps["per_point"]["log_px"] == pytest.approx(lg.log_px(x).tolist(), abs=1e-9)
        assert store["gaps_W"] is stored

        vae = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), guide="iaf"))
        xs = torch.bernoulli(torch.full((2, 1, 4, 4), 0.4))
        before = store.get_state()["params"]  # name -> tensor; the VAE not yet registered
        gaps = inference_gaps(vae.model, vae.guide, xs, steps=3, num_samples=10)
        assert gaps["settings"]["local_guide"] == "per-point copies of the guide"
        after = store.get_state()["params"]
        assert all(after[k] is before[k] for k in before)
        own = {id(p) for p in vae.parameters()}  # new entries: the VAE's own, never a copy's
        assert all(id(after[k]) in own for k in after.keys() - before.keys())


def test_gaps_inputs_are_validated(lg: LinearGaussian) -> None:
    x = lg.sample_x(3)
    with pytest.raises(ValueError, match="lr must be a positive"):
        inference_gaps(lg.model, lg.diagonal_guide(), x, lr=0.0)
    with pytest.raises(ValueError, match="one latent site"):
        inference_gaps(lg.model, lambda x: None, x)

    def flow_function(x: torch.Tensor) -> None:  # parameters unreadable, nothing to copy
        base = dist.Normal(torch.zeros(x.shape[0], 2, dtype=x.dtype), 1.0).to_event(1)
        identity = dist.transforms.AffineTransform(0.0, 1.0, event_dim=1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(base, [identity]))

    with pytest.raises(ValueError, match="cannot be read, and it is a plain function"):
        check_inference_gaps(flow_function, x)
    delta = VAE(VAEConfig(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,), guide="delta"))
    with pytest.raises(PointEstimateError, match="no inference gaps"):
        inference_gaps(delta.model, delta.guide, torch.zeros(2, 1, 4, 4))
