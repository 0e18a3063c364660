"""The training objectives against exact references and against Pyro's own classes.

Exact references come from the linear-Gaussian model (tests/linear_gaussian.py). Statistical
tolerances are Monte Carlo standard errors of the draws themselves; where many coordinates
are compared at once the z-bound is Bonferroni-corrected, so a correct estimator fails with
probability < 1e-5 per test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import VAE, RunConfig, TrainConfig, VAEConfig, fit, log_weights
from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.infer.objectives import (
    OBJECTIVES,
    BetaELBO,
    DReGIWAE,
    FreeBitsELBO,
    StickingTheLandingELBO,
    TraceELBO,
    batch_terms,
    build_objective,
    objective_names,
)
from pyro_vae.registry import SpecError

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


Z = 4.5  # two-sided z-bound for one comparison: a correct estimator fails w.p. < 1e-5


def _z_bonferroni(m: int, alpha: float = 1e-5) -> float:
    return NormalDist().inv_cdf(1 - alpha / (2 * m))


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


def _value(
    spec: str, model: Callable[..., Any], guide: Callable[..., Any], x: torch.Tensor
) -> float:
    """The objective's own estimate for the batch (a bound: minus the loss)."""
    return -build_objective(spec).loss(model, guide, x)


# --------------------------------------------------------------------------- registry


def test_registry_names_every_objective() -> None:
    expected = {
        "elbo",
        "elbo-analytic",
        "iwae",
        "renyi",
        "tracegraph",
        "beta",
        "warmup",
        "free-bits",
        "dreg",
        "stl",
        "elbo-enum",
    }
    assert set(objective_names()) == expected
    assert set(OBJECTIVES.entry("free-bits").params) == {"lambda"}  # a Python keyword as key
    assert isinstance(build_objective("free-bits:lambda=0.25"), FreeBitsELBO)
    assert build_objective("free-bits:lambda=0.25").free_bits == 0.25  # type: ignore[attr-defined]
    assert set(OBJECTIVES.entry("elbo").params) == set()  # num_particles is context, not a key


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("iwae:k=0", "k must be a positive int"),
        ("renyi:alpha=1", "alpha=1 is the ELBO"),
        ("beta:beta=0", "beta must be a positive"),
        ("free-bits:lambda=-1", "lambda must be a non-negative"),
        ("warmup:epochs=0", "epochs must be a positive"),
        ("iwae:alpha=0", "has no parameter 'alpha'"),
        ("elbow", "valid objective names are"),
    ],
)
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build_objective(spec)


# ------------------------------------------------------------------- exact references

EXACT_SPECS = [
    "elbo",
    "elbo-analytic",
    "iwae:k=7",
    "renyi:alpha=0.5,k=3",
    "renyi:alpha=-1,k=3",
    "tracegraph",
    "beta:beta=1",
    "warmup:epochs=1",
    "dreg:k=4",
    "dreg:k=1",
    "stl",
    "elbo-enum",
]


def test_exact_posterior_guide_gives_log_px_with_analytic_kl(lg: LinearGaussian) -> None:
    """``elbo-analytic`` with q = p(z|x): E_q[log p(x|z)] - KL(q||p) = log p(x), but the
    reconstruction term is a draw (the KL of the full-covariance guide is closed form), so
    the estimate equals log p(x) only in expectation: within Z standard errors of R draws."""
    x = lg.sample_x(9)
    exact = float(lg.log_px(x).sum())
    pyro.set_rng_seed(0)
    objective = build_objective("elbo-analytic")
    reps = 400
    values = torch.tensor(
        [-float(objective.differentiable_loss(lg.model, lg.exact_guide, x)) for _ in range(reps)]
    )
    se = float(values.std()) / math.sqrt(reps)
    assert se > 1e-3  # a draw, not the zero-variance Monte Carlo KL
    assert abs(float(values.mean()) - exact) < Z * se


@pytest.mark.parametrize("spec", [s for s in EXACT_SPECS if s != "elbo-analytic"])
def test_exact_posterior_guide_gives_log_px(lg: LinearGaussian, spec: str) -> None:
    """With q = p(z|x) every weight p(x,z)/q(z|x) is p(x): every bound equals log p(x)."""
    x = lg.sample_x(9)
    pyro.set_rng_seed(0)
    objective = build_objective(spec, num_particles=2)
    value = -float(objective.differentiable_loss(lg.model, lg.exact_guide, x))
    exact = float(lg.log_px(x).sum())
    assert value == pytest.approx(exact, abs=1e-8)
    terms = objective.last_terms  # type: ignore[attr-defined]
    assert float(terms["reconstruction"] - terms["kl"]) == pytest.approx(exact, abs=1e-8)


def test_bounds_are_ordered_elbo_iwae_k_log_px(lg: LinearGaussian) -> None:
    """ELBO <= IWAE_5 <= IWAE_50 <= log p(x), each step by more than Z standard errors."""
    x = lg.sample_x(40)
    guide = lg.diagonal_guide(scale_factor=1.8, shift=0.3)
    pyro.set_rng_seed(1)
    reps = 40
    means = []
    for spec in ("elbo", "iwae:k=5", "iwae:k=50"):
        values = torch.tensor([_value(spec, lg.model, guide, x) for _ in range(reps)])
        means.append((float(values.mean()), float(values.std()) / math.sqrt(reps)))
    for (a, sa), (b, sb) in itertools.pairwise(means):
        print(f"step {b - a:.3f} nats, {(b - a) / math.hypot(sa, sb):.1f} standard errors")
        assert b - a > Z * math.hypot(sa, sb)
    exact = float(lg.log_px(x).sum())
    assert means[-1][0] < exact + Z * means[-1][1]
    assert exact - means[-1][0] < exact - means[0][0]


# ---------------------------------------------------- Rényi/IWAE: per data point or not


def test_renyi_elbo_is_the_per_point_iwae_bound(lg: LinearGaussian) -> None:
    """Pyro's RenyiELBO(alpha=0) keeps the shared data plate: a per-point bound.

    Same draws (same seed) as ``log_weights`` (K, N): the loss is
    -sum_n log mean_k w_kn, not the whole-batch -log mean_k prod_n w_kn.
    """
    guide = lg.diagonal_guide(scale_factor=1.5, shift=0.3)
    k = 5
    for n in (1, 7):
        x = lg.sample_x(n)
        renyi = pyro.infer.RenyiELBO(
            alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1
        )
        pyro.set_rng_seed(2)
        pyro_loss = renyi.loss(lg.model, guide, x)
        pyro.set_rng_seed(2)
        lw = log_weights(lg.model, guide, x, k, max_plate_nesting=1)  # (K, N)
        per_point = -float((lw.logsumexp(0) - math.log(k)).sum())
        whole_batch = -float(lw.sum(1).logsumexp(0) - math.log(k))
        assert pyro_loss == pytest.approx(per_point, rel=1e-12)
        if n == 1:
            assert per_point == pytest.approx(whole_batch, rel=1e-12)
        else:
            assert abs(per_point - whole_batch) > 1.0
        pyro.set_rng_seed(2)
        ours = build_objective(f"iwae:k={k}")
        ours.max_plate_nesting = 2  # as RenyiELBO above: 1 plate + the particle plate
        assert ours.loss(lg.model, guide, x) == pytest.approx(per_point, rel=1e-12)


def test_renyi_elbo_with_a_global_latent_is_a_whole_batch_bound() -> None:
    """A site outside the data plate couples the points: then the batch is one weight."""

    def model(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("mu", dist.Normal(torch.tensor(0.3, dtype=x.dtype), 0.8))

    x = torch.linspace(-1, 1, 6, dtype=torch.float64)
    k = 4
    pyro.set_rng_seed(3)
    loss = pyro.infer.RenyiELBO(
        alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1
    ).loss(model, guide, x)
    pyro.set_rng_seed(3)
    with pyro.plate("particles", k, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x)
    mu = guide_trace.nodes["mu"]["value"].reshape(k)  # (K,)
    q = dist.Normal(torch.tensor(0.3, dtype=x.dtype), 0.8)
    lw = dist.Normal(0.0, 1.0).log_prob(mu) - q.log_prob(mu)  # (K,)
    lw = lw + dist.Normal(mu[:, None], 1.0).log_prob(x).sum(-1)  # (K,)
    assert model_trace.nodes["x"]["value"].shape == (6,)
    assert loss == pytest.approx(-float(lw.logsumexp(0) - math.log(k)), rel=1e-12)


# --------------------------------------------- same draws, same numbers as Pyro's classes

CONFIG = VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,))


def _grads(
    loss_of: Callable[[VAE, torch.Tensor], float], seed: int
) -> tuple[float, list[torch.Tensor]]:
    torch.manual_seed(0)
    vae = VAE(CONFIG).double()
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4, dtype=torch.float64))
    pyro.set_rng_seed(seed)
    loss = loss_of(vae, x)
    return loss, [p.grad.clone() for p in vae.parameters() if p.grad is not None]


def _by_backward(elbo: Any) -> Callable[[VAE, torch.Tensor], float]:
    def run(vae: VAE, x: torch.Tensor) -> float:
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        loss.backward()
        return float(loss.detach())

    return run


def _by_loss_and_grads(elbo: Any) -> Callable[[VAE, torch.Tensor], float]:
    def run(vae: VAE, x: torch.Tensor) -> float:
        return float(elbo.loss_and_grads(vae.model, vae.guide, x))

    return run


@pytest.mark.parametrize(
    ("spec", "reference"),
    [
        ("iwae:k=5", lambda: pyro.infer.RenyiELBO(0, 5, vectorize_particles=True)),
        ("renyi:alpha=0.5,k=4", lambda: pyro.infer.RenyiELBO(0.5, 4, vectorize_particles=True)),
        ("tracegraph", lambda: pyro.infer.TraceGraph_ELBO(num_particles=2)),
        ("elbo-analytic", lambda: pyro.infer.TraceMeanField_ELBO(num_particles=2)),
    ],
)
def test_same_value_and_gradient_as_pyro(spec: str, reference: Callable[[], Any]) -> None:
    particles = 2 if spec in ("tracegraph", "elbo-analytic") else 1
    ours = _grads(_by_backward(build_objective(spec, num_particles=particles)), seed=4)
    theirs = _grads(_by_loss_and_grads(reference()), seed=4)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-10)
    assert len(ours[1]) == len(theirs[1]) > 0
    for a, b in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_dreg_value_and_model_gradient_are_iwae_on_the_same_draws() -> None:
    """DReG changes only the guide's gradient: value and decoder gradients are IWAE's."""
    results = []
    for spec in ("iwae:k=6", "dreg:k=6"):
        torch.manual_seed(0)
        vae = VAE(CONFIG).double()
        x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4, dtype=torch.float64))
        pyro.set_rng_seed(5)
        loss = build_objective(spec).differentiable_loss(vae.model, vae.guide, x)
        loss.backward()
        loss = loss.detach()
        decoder = [p.grad.clone() for p in vae.model.parameters()]  # type: ignore[union-attr]
        encoder = [p.grad.clone() for p in vae.guide.parameters()]  # type: ignore[union-attr]
        results.append((float(loss), decoder, encoder))
    (la, da, ea), (lb, db, eb) = results
    assert la == pytest.approx(lb, rel=1e-12)
    for a, b in zip(da, db, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert any(not torch.allclose(a, b) for a, b in zip(ea, eb, strict=True))


# --------------------------------------------------------------- β, warm-up, free bits


def test_beta_one_is_the_plain_elbo_on_the_same_draws() -> None:
    a = _grads(_by_backward(build_objective("beta:beta=1")), seed=6)
    b = _grads(_by_backward(TraceELBO()), seed=6)
    assert a[0] == b[0]
    for ga, gb in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_beta_is_poutine_scale_on_the_latent_sites(lg: LinearGaussian) -> None:
    """BetaELBO(beta=B) = Trace_ELBO on programs whose z statements are scaled by B."""
    beta = 3.5
    x = lg.sample_x(8)
    guide = lg.diagonal_guide(scale_factor=1.3, shift=0.2)

    def scaled_model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=beta):
                z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.sigma).to_event(1), obs=x)

    def scaled_guide(x: torch.Tensor) -> None:
        with poutine.scale(scale=beta):
            guide(x)

    pyro.set_rng_seed(7)
    reference = pyro.infer.Trace_ELBO().loss(scaled_model, scaled_guide, x)
    pyro.set_rng_seed(7)
    objective = BetaELBO(beta=beta)
    value = objective.loss(lg.model, guide, x)
    assert value == pytest.approx(reference, rel=1e-12)
    recon, kl = objective.last_terms["reconstruction"], objective.last_terms["kl"]
    assert value == pytest.approx(float(beta * kl - recon), rel=1e-12)  # unweighted terms kept


def test_warmup_weight_is_linear_in_the_epoch() -> None:
    objective = build_objective("warmup:epochs=4")
    weights = []
    for epoch in range(1, 7):
        objective.set_epoch(epoch)  # type: ignore[attr-defined]
        weights.append(objective.kl_weight)  # type: ignore[attr-defined]
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    beta = build_objective("beta:beta=2,warmup=2")
    assert beta.kl_weight == 1.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="epoch must be a positive int"):
        objective.set_epoch(0)  # type: ignore[attr-defined]


def test_free_bits_floor_per_dimension() -> None:
    """Value = recon - N sum_j max(lambda, mean_n KL_nj), KL_nj in closed form."""
    torch.manual_seed(1)
    vae = VAE(VAEConfig(data_shape=(6,), latent_dim=4, hidden=(8,), likelihood="normal"))
    vae = vae.double()
    x = torch.randn(10, 6, dtype=torch.float64)
    lam = 0.15
    pyro.set_rng_seed(8)
    objective = build_objective(f"free-bits:lambda={lam}")
    value = -float(objective.differentiable_loss(vae.model, vae.guide, x).detach())
    with torch.no_grad():
        q = vae.guide.posterior(vae.guide.encoder(x)).base_dist  # type: ignore[operator]
    kl = 0.5 * (q.scale**2 + q.loc**2 - 1 - 2 * q.scale.log())  # (N, L)
    per_dim = kl.mean(0)  # (L,)
    assert (per_dim < lam).any() and (per_dim > lam).any()  # the floor binds on some dims
    recon = float(objective.last_terms["reconstruction"])  # type: ignore[attr-defined]
    expected = recon - 10 * float(per_dim.clamp(min=lam).sum())
    assert value == pytest.approx(expected, rel=1e-12)
    assert float(objective.last_terms["kl"]) == pytest.approx(float(kl.sum()), rel=1e-12)  # type: ignore[attr-defined]


def test_free_bits_refuses_a_guide_without_per_dimension_kl(lg: LinearGaussian) -> None:
    with pytest.raises(ValueError, match=r"factorized Normal.*MultivariateNormal"):
        build_objective("free-bits:lambda=0.1").loss(lg.model, lg.exact_guide, lg.sample_x(3))


def test_path_derivative_objectives_refuse_two_latent_sites() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(torch.zeros_like(x), 1.0))
            b = pyro.sample("b", dist.Normal(a, 1.0))
            pyro.sample("x", dist.Normal(b, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(0.5 * x, 1.0))
            pyro.sample("b", dist.Normal(a, 1.0))

    for spec in ("dreg:k=3", "stl"):
        with pytest.raises(ValueError, match="exactly one reparameterized latent site"):
            build_objective(spec).loss(model, guide, torch.zeros(4))


def test_batch_terms_falls_back_to_elbo_terms(lg: LinearGaussian) -> None:
    """A user's ELBO class without last_terms: the terms come from elbo_terms."""
    x = lg.sample_x(6)
    pyro.set_rng_seed(3)
    recon, kl = batch_terms(pyro.infer.Trace_ELBO(), lg.model, lg.exact_guide, x)
    pyro.set_rng_seed(3)
    terms = elbo_terms(lg.model, lg.exact_guide, x)  # the same draws
    assert float(recon) == float(terms["reconstruction"].sum())
    assert float(kl) == float(terms["kl"].sum())


# ------------------------------------------------------ gradient unbiasedness: DReG, STL


class Replicates:
    """A tiny linear-Gaussian model and guide with R independent copies of every parameter.

    Row r of the data plate holds replicate r: the same x, the same parameter values, its
    own draws. The gradient with respect to row r of each parameter is then one
    independent draw of the estimator's gradient, so one call gives R replicates.
    """

    def __init__(self, reps: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        d, latent = 3, 2
        self.x = torch.randn(d, generator=g, dtype=torch.float64).expand(reps, d)  # (R, D)
        self.sigma = 0.7
        init = {
            "W": torch.randn(d, latent, generator=g, dtype=torch.float64),
            "b": torch.randn(d, generator=g, dtype=torch.float64),
            "loc": torch.randn(latent, generator=g, dtype=torch.float64),
            "log_scale": torch.full((latent,), 0.3, dtype=torch.float64),
        }
        self.params = {
            k: v.expand(reps, *v.shape).clone().requires_grad_() for k, v in init.items()
        }

    def model(self, x: torch.Tensor) -> None:
        p = self.params
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            mean = (p["W"] @ z.unsqueeze(-1)).squeeze(-1) + p["b"]  # (..., R, D)
            pyro.sample("x", dist.Normal(mean, self.sigma).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        p = self.params
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(p["loc"], p["log_scale"].exp()).to_event(1))

    def gradients(self, loss: torch.Tensor) -> torch.Tensor:
        """``(R, C)``: each replicate's gradient of the objective (minus the loss)."""
        grads = torch.autograd.grad(-loss, list(self.params.values()))
        return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)

    def exact_elbo(self) -> torch.Tensor:
        """The closed-form ELBO of each replicate, summed (for autograd references)."""
        p, x, s2 = self.params, self.x, self.sigma**2
        scale2 = (2 * p["log_scale"]).exp()  # (R, L)
        mean = (p["W"] @ p["loc"].unsqueeze(-1)).squeeze(-1) + p["b"]  # (R, D)
        d = x.shape[-1]
        recon = -0.5 * (d * math.log(2 * math.pi * s2) + ((x - mean) ** 2).sum(-1) / s2)
        recon = recon - 0.5 * (p["W"] ** 2 * scale2.unsqueeze(-2)).sum((-1, -2)) / s2
        kl = 0.5 * (scale2 + p["loc"] ** 2 - 1 - scale2.log()).sum(-1)
        return (recon - kl).sum()


def _mean_se(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return g.mean(0), g.std(0) / math.sqrt(g.shape[0])


def _estimator_gradients(spec: str, reps: int, seed: int) -> tuple[Replicates, torch.Tensor]:
    r = Replicates(reps)
    pyro.set_rng_seed(seed)
    loss = build_objective(spec).differentiable_loss(r.model, r.guide, r.x)
    return r, r.gradients(loss)


def test_dreg_gradient_is_unbiased_for_the_iwae_gradient() -> None:
    reps = 40_000
    _, dreg = _estimator_gradients("dreg:k=5", reps, seed=10)
    _, iwae = _estimator_gradients("iwae:k=5", reps, seed=11)
    (m1, s1), (m2, s2) = _mean_se(dreg), _mean_se(iwae)
    z = _z_bonferroni(dreg.shape[1])
    assert ((m1 - m2).abs() < z * (s1**2 + s2**2).sqrt()).all(), (m1 - m2) / (s1**2 + s2**2).sqrt()
    guide_coords = slice(-4, None)  # loc (2) and log_scale (2)
    assert (dreg[:, guide_coords].var(0) < iwae[:, guide_coords].var(0)).all()


def test_stl_gradient_is_unbiased_for_the_exact_elbo_gradient() -> None:
    reps = 40_000
    r, stl = _estimator_gradients("stl", reps, seed=12)
    exact = torch.autograd.grad(r.exact_elbo(), list(r.params.values()))
    reference = torch.cat([g.reshape(reps, -1) for g in exact], dim=1)[0]  # (C,), rows equal
    mean, se = _mean_se(stl)
    z = _z_bonferroni(stl.shape[1])
    assert ((mean - reference).abs() < z * se).all(), (mean - reference) / se
    _, plain = _estimator_gradients("elbo", reps, seed=13)
    plain_mean, plain_se = _mean_se(plain)
    assert ((plain_mean - reference).abs() < z * plain_se).all()


def _near_exact(reps: int, offset: float) -> Replicates:
    """Replicates whose diagonal guide is the exact posterior, its log-scales + ``offset``.

    W gets orthogonal columns (norms 1.5 and 0.8), so the posterior covariance
    (I + W^T W / s^2)^-1 is diagonal and the mean-field guide can match it.
    """
    r = Replicates(reps)
    with torch.no_grad():
        q, _ = torch.linalg.qr(r.params["W"][0])  # (D, L), orthonormal columns
        w = q * torch.tensor([1.5, 0.8], dtype=torch.float64)
        precision = 1 + (w**2).sum(0) / r.sigma**2  # (L,): the diagonal posterior precision
        mean = w.T @ (r.x[0] - r.params["b"][0]) / r.sigma**2 / precision
        r.params["W"].copy_(w.expand_as(r.params["W"]))
        r.params["loc"].copy_(mean.expand_as(r.params["loc"]))
        r.params["log_scale"].copy_((-0.5 * precision.log() + offset).expand_as(r.params["loc"]))
    return r


def test_stl_gradient_has_lower_variance_than_the_elbo_gradient_near_the_exact_posterior() -> None:
    """The point of STL (Roeder et al. 2017): dropping the score term leaves the path
    derivative, which vanishes at the exact posterior (grad_z log p(x, z)/q(z|x) = 0), so
    the guide's gradient has zero variance there and a small one near it, where the plain
    reparameterized ELBO gradient keeps the score term's variance.

    Guide coordinates (loc, log_scale) over 4000 replicates: at the exact posterior STL's
    variance is zero to rounding; with the scales 10% off, each variance is estimated to
    about sqrt(2 / 4000) = 2% relative error, and STL's is 3% of the ELBO's (asserted: < 10%).
    """
    guide = slice(-4, None)  # loc (2), log_scale (2)
    variances = {}
    for offset in (0.0, 0.1):
        for spec, seed in (("stl", 15), ("elbo", 16)):
            r = _near_exact(4000, offset)
            pyro.set_rng_seed(seed)
            loss = build_objective(spec).differentiable_loss(r.model, r.guide, r.x)
            variances[spec, offset] = r.gradients(loss)[:, guide].var(0)
    assert (variances["stl", 0.0] < 1e-20).all(), variances["stl", 0.0]
    assert (variances["elbo", 0.0] > 0.1).all(), variances["elbo", 0.0]
    assert (variances["stl", 0.1] < 0.1 * variances["elbo", 0.1]).all(), variances


def test_stl_and_dreg_follow_pyros_elbo_interface() -> None:
    """``objective(model, guide)`` is an nn.Module loss, and ``SVI`` accepts them."""
    pyro.set_rng_seed(14)
    vae = VAE(CONFIG)
    x = torch.bernoulli(torch.full((32, 1, 4, 4), 0.3))
    for objective in (StickingTheLandingELBO(), DReGIWAE(k=3)):
        module = objective(vae.model, vae.guide)
        assert isinstance(module, torch.nn.Module)
        assert {id(p) for p in module.parameters()} == {id(p) for p in vae.parameters()}
        svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), objective)
        losses = [svi.step(x) for _ in range(20)]
        assert sum(losses[-5:]) < sum(losses[:5])


# ------------------------------------------------------------------------ in the trainer


def _train_config(out: Path, epochs: int, objective: str) -> RunConfig:
    return RunConfig(
        VAEConfig(latent_dim=2, hidden=(16,)),
        TrainConfig(
            epochs=epochs,
            objective=objective,
            out=str(out),
            device="cpu",
            seed=3,
            eval_num_samples=2,
            eval_num_points=10,
        ),
    )


def test_trainer_reports_the_true_elbo_beside_the_objective(tmp_path: Path) -> None:
    """train_elbo = reconstruction - KL; train_objective is the objective's own value."""
    history = fit(_train_config(tmp_path / "b", 1, "beta:beta=3"), progress=False).history
    (record,) = history
    assert record["train_elbo"] == pytest.approx(
        record["train_reconstruction"] - record["train_kl"], rel=1e-12
    )
    objective = record["train_reconstruction"] - 3 * record["train_kl"]  # same draws
    assert record["train_objective"] == pytest.approx(objective, rel=1e-9)
    (record,) = fit(_train_config(tmp_path / "i", 1, "iwae:k=4"), progress=False).history
    assert record["train_objective"] > record["train_elbo"]  # IWAE_4 >= ELBO, here by far


def test_kl_warmup_resumes_exactly(tmp_path: Path) -> None:
    """Two epochs, then two more with resume=True: the same run as four in one go."""
    full = fit(_train_config(tmp_path / "full", 4, "warmup:epochs=3"), progress=False)
    fit(_train_config(tmp_path / "part", 2, "warmup:epochs=3"), progress=False)
    part = fit(_train_config(tmp_path / "part", 4, "warmup:epochs=3"), resume=True, progress=False)
    assert [r["kl_weight"] for r in full.history] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (
        tmp_path / "part" / "metrics.jsonl"
    ).read_text()
    assert part.history == full.history


def test_a_bad_objective_spec_fails_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="valid objective names"):
        fit(_train_config(tmp_path / "r", 1, "iwea:k=5"), progress=False)
    assert not (tmp_path / "r").exists()
