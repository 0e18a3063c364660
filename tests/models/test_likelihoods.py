"""Likelihoods: log-densities against scipy, mpmath or direct float64 references; support.

Every reference is computed independently of the code under test: scipy.stats densities,
closed forms evaluated in 200 or more digits with mpmath, or the textbook CDF difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mpmath
import numpy as np
import pyro
import pytest
import scipy.integrate
import scipy.stats
import torch
from torch.nn import functional as F

from pyro_vae import VAE, VAEConfig, log_likelihood
from pyro_vae.models import LIKELIHOODS, SupportError
from pyro_vae.models.likelihood_dists import (
    ContinuousBernoulli,
    DiscretizedLogistic,
    QuantizedCategorical,
)

SHAPE = (2, 3)  # a small data_shape; D = 6
D = 6
F64 = torch.float64


def build(spec: str) -> torch.nn.Module:
    return LIKELIHOODS.build(spec, data_shape=SHAPE).double()


def raw_params(p: int, n: int = 4, seed: int = 0, spread: float = 2.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return spread * torch.randn(n, p * D, generator=gen, dtype=F64)  # (n, P * D)


def softplus(x: torch.Tensor, floor: float) -> np.ndarray:
    return (F.softplus(x) + floor).numpy()


def summed(log_p: np.ndarray) -> np.ndarray:
    """Sum a reference (n, *SHAPE) over the event dims, as ``to_event`` does."""
    return log_p.reshape(log_p.shape[0], -1).sum(-1)


# --------------------------------------------------------------------------- the registry


def test_all_likelihoods_are_registered() -> None:
    assert set(LIKELIHOODS.names()) >= {
        "bernoulli",
        "beta",
        "categorical256",
        "continuous-bernoulli",
        "discretized-logistic",
        "laplace",
        "negative-binomial",
        "normal",
        "normal-decoder",
        "normal-learned",
        "poisson",
    }


def test_registry_errors_list_names_and_parameters() -> None:
    with pytest.raises(ValueError, match="valid likelihood names are: bernoulli, beta"):
        LIKELIHOODS.build("gaussian", data_shape=SHAPE)
    with pytest.raises(ValueError, match=r"min_scale \(float, default 0.001\)"):
        LIKELIHOODS.build("normal-decoder:scale=2", data_shape=SHAPE)
    with pytest.raises(ValueError, match="min_rate must be a positive finite number"):
        LIKELIHOODS.build("poisson:min_rate=-1", data_shape=SHAPE)
    with pytest.raises(ValueError, match="init_scale must exceed min_scale"):
        LIKELIHOODS.build("laplace:init_scale=0.01,min_scale=0.1", data_shape=SHAPE)


# --------------------------------------------------------------------------- continuous Bernoulli

mpmath.mp.dps = 200  # sigma(150) differs from 1 in the 66th digit

# logits from 0 through the Taylor/closed-form switch points to far beyond torch's clamp
LOGITS = [0.0, 1e-9, -1e-6, 5e-5, -1e-4, 3e-4, 1e-3, 0.05, -0.0999, 0.1, 0.1001, -0.7, 3.0]
LOGITS += [-12.0, 25.0, -60.0, 150.0]


def cb_log_density(x: float, eta: float) -> float:
    r""":math:`\log C(\lambda) + x\log\lambda + (1-x)\log(1-\lambda)` in 60 digits."""
    eta_mp = mpmath.mpf(eta)
    lam = 1 / (1 + mpmath.exp(-eta_mp))
    c = mpmath.mpf(2) if eta == 0 else 2 * mpmath.atanh(1 - 2 * lam) / (1 - 2 * lam)
    return float(mpmath.log(c) + x * mpmath.log(lam) + (1 - x) * mpmath.log(1 - lam))


def cb_mean(eta: float) -> float:
    if eta == 0:
        return 0.5
    lam = 1 / (1 + mpmath.exp(-mpmath.mpf(eta)))
    return float(lam / (2 * lam - 1) + 1 / (2 * mpmath.atanh(1 - 2 * lam)))


def test_continuous_bernoulli_matches_the_closed_form() -> None:
    eta = torch.tensor(LOGITS, dtype=F64)
    xs = [0.0, 1.0, 0.3, 0.77]
    for x in xs:
        value = torch.full_like(eta, x)
        got = ContinuousBernoulli(eta).log_prob(value)
        ref = torch.tensor([cb_log_density(x, e) for e in LOGITS], dtype=F64)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    mean = ContinuousBernoulli(eta).mean
    ref_mean = torch.tensor([cb_mean(e) for e in LOGITS], dtype=F64)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-13, atol=1e-13)


def test_continuous_bernoulli_float32_is_accurate_everywhere() -> None:
    eta = torch.tensor(LOGITS)
    value = torch.full_like(eta, 0.3)
    got = ContinuousBernoulli(eta).log_prob(value).double()
    ref = torch.tensor([cb_log_density(0.3, e) for e in LOGITS], dtype=F64)
    # float32 rounding of x * eta for |eta| = 150 is ~5e-6; elsewhere ~1e-7
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)
    ref_mean = torch.tensor([cb_mean(e) for e in LOGITS], dtype=F64)
    torch.testing.assert_close(ContinuousBernoulli(eta).mean.double(), ref_mean, atol=1e-6, rtol=0)


def test_continuous_bernoulli_agrees_with_torch_where_torch_is_accurate() -> None:
    eta = torch.linspace(-8, 8, 33, dtype=F64)
    eta = eta[eta.abs() > 0.1]  # torch's Taylor window is tiny; compare outside it
    value = torch.rand(eta.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    ref = torch.distributions.ContinuousBernoulli(logits=eta).log_prob(value)
    torch.testing.assert_close(ContinuousBernoulli(eta).log_prob(value), ref)
    ref_mean = torch.distributions.ContinuousBernoulli(logits=eta).mean
    torch.testing.assert_close(ContinuousBernoulli(eta).mean, ref_mean)


@pytest.mark.parametrize("eta", [0.0, 2e-5, 0.4, -5.0, 40.0])
def test_continuous_bernoulli_integrates_to_one(eta: float) -> None:
    d = ContinuousBernoulli(torch.tensor(eta, dtype=F64))

    def density(x: float) -> float:
        return float(d.log_prob(torch.tensor(x, dtype=F64)).exp())

    total, err = scipy.integrate.quad(density, 0, 1, epsabs=1e-12, limit=200)
    assert abs(total - 1) < 1e-9 + err


def test_continuous_bernoulli_samples_have_the_stated_mean() -> None:
    torch.manual_seed(0)
    eta = torch.tensor([0.0, 3e-5, 0.5, -4.0, 30.0, -200.0], dtype=F64)
    n = 20_000
    draws = ContinuousBernoulli(eta).rsample((n,))  # (n, 6)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    se = draws.std(0) / math.sqrt(n)
    assert bool(((draws.mean(0) - ContinuousBernoulli(eta).mean).abs() < 4.5 * se + 1e-12).all())


@pytest.mark.parametrize("eta", [0.5, -4.0, 30.0, -200.0])
def test_continuous_bernoulli_samples_follow_its_cdf(eta: float) -> None:
    r"""Kolmogorov-Smirnov against :math:`F(x) = (e^{\eta x} - 1)/(e^{\eta} - 1)`."""
    torch.manual_seed(1)
    draws = ContinuousBernoulli(torch.tensor(eta, dtype=F64)).rsample((20_000,)).numpy()

    def cdf(x: np.ndarray) -> np.ndarray:
        if eta > 0:  # the same ratio, scaled by e^-eta so that nothing overflows
            return np.exp(eta * (x - 1)) * -np.expm1(-eta * x) / -np.expm1(-eta)
        return np.expm1(eta * x) / np.expm1(eta)

    assert scipy.stats.kstest(draws, cdf).pvalue > 1e-6


def test_continuous_bernoulli_likelihood_scores_the_decoder_logits() -> None:
    raw = raw_params(1, spread=5.0)
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=F64)
    got = build("continuous-bernoulli")(raw).log_prob(x)
    logits = raw.reshape(4, *SHAPE).numpy()
    ref = np.array(
        [
            [cb_log_density(float(v), float(e)) for v, e in zip(xr, lr, strict=True)]
            for xr, lr in zip(x.reshape(4, -1).numpy(), logits.reshape(4, -1), strict=True)
        ]
    ).sum(-1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


# --------------------------------------------------------------------------- real-valued data


@pytest.mark.parametrize(("spec", "scale"), [("normal:scale=0.3", 0.3), ("normal", 1.0)])
def test_normal_fixed_scale(spec: str, scale: float) -> None:
    """The decoder gives the mean; the scale is the spec's (default 1), not learned."""
    lik = build(spec)
    raw = raw_params(1)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = scipy.stats.norm.logpdf(x.numpy(), raw.reshape(4, *SHAPE).numpy(), scale)
    np.testing.assert_allclose(lik(raw).log_prob(x).numpy(), summed(ref), rtol=1e-12)
    assert list(lik.parameters()) == []


def test_normal_learned_scale() -> None:
    lik = build("normal-learned:init_scale=0.5,min_scale=0.01")
    raw = raw_params(1)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=F64)
    scale = float(lik.scale().detach())
    assert abs(scale - 0.5) < 1e-7  # the parameter was initialized in float32
    ref = scipy.stats.norm.logpdf(x.numpy(), raw.reshape(4, *SHAPE).numpy(), scale)
    np.testing.assert_allclose(lik(raw).log_prob(x).detach().numpy(), summed(ref), rtol=1e-12)
    lik(raw).log_prob(x).sum().backward()  # the scale is a parameter that learns
    assert lik.scale.raw.grad is not None and float(lik.scale.raw.grad) != 0
    with torch.no_grad():
        lik.scale.raw.fill_(-1e4)
    assert float(lik.scale().detach()) == pytest.approx(0.01)  # never below the floor


def test_normal_decoder_scale() -> None:
    lik = build("normal-decoder:min_scale=0.05")
    raw = raw_params(2)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=F64)
    loc, rho = raw.reshape(4, 2, *SHAPE).unbind(1)
    ref = scipy.stats.norm.logpdf(x.numpy(), loc.numpy(), softplus(rho, 0.05))
    np.testing.assert_allclose(lik(raw).log_prob(x).numpy(), summed(ref), rtol=1e-12)


def test_laplace() -> None:
    lik = build("laplace:init_scale=0.3")
    raw = raw_params(1)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(5), dtype=F64)
    scale = float(lik.scale().detach())
    assert abs(scale - 0.3) < 1e-7
    ref = scipy.stats.laplace.logpdf(x.numpy(), raw.reshape(4, *SHAPE).numpy(), scale)
    np.testing.assert_allclose(lik(raw).log_prob(x).detach().numpy(), summed(ref), rtol=1e-12)


def test_beta() -> None:
    lik = build("beta:min_concentration=0.1")
    raw = raw_params(2)
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(6), dtype=F64)
    a, b = (softplus(t, 0.1) for t in raw.reshape(4, 2, *SHAPE).unbind(1))
    ref = scipy.stats.beta.logpdf(x.numpy(), a, b)
    d = lik(raw)
    np.testing.assert_allclose(d.log_prob(x).numpy(), summed(ref), rtol=1e-10)
    np.testing.assert_allclose(d.mean.numpy(), a / (a + b), rtol=1e-12)


# --------------------------------------------------------------------------- counts


def counts(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 30, (4, *SHAPE), generator=gen).to(F64)


def test_poisson() -> None:
    raw = raw_params(1)
    x = counts(7)
    rate = softplus(raw.reshape(4, *SHAPE), 1e-6)
    ref = scipy.stats.poisson.logpmf(x.numpy(), rate)
    d = build("poisson")(raw)
    np.testing.assert_allclose(d.log_prob(x).numpy(), summed(ref), rtol=1e-12)
    np.testing.assert_allclose(d.mean.numpy(), rate, rtol=1e-14)


def test_negative_binomial_matches_scipy_nbinom() -> None:
    raw = raw_params(2)
    x = counts(8)
    mean_raw, count_raw = raw.reshape(4, 2, *SHAPE).unbind(1)
    m, r = softplus(mean_raw, 1e-6), softplus(count_raw, 1e-3)
    ref = scipy.stats.nbinom.logpmf(x.numpy(), r, r / (r + m))  # scipy: n = r, p = r/(r+m)
    d = build("negative-binomial")(raw)
    np.testing.assert_allclose(d.log_prob(x).numpy(), summed(ref), rtol=1e-10)
    np.testing.assert_allclose(d.mean.numpy(), m, rtol=1e-12)
    np.testing.assert_allclose(d.variance.numpy(), m + m**2 / r, rtol=1e-10)


# --------------------------------------------------------------------------- 8-bit images

H = 0.5 / 255  # half a bin


def dl_reference(x: float, loc: float, scale: float) -> float:
    """log P(x) as the plain CDF difference, with digits enough for the deepest tail here."""

    def cdf(t: float) -> mpmath.mpf:
        return 1 / (1 + mpmath.exp(-(mpmath.mpf(t) - mpmath.mpf(loc)) / mpmath.mpf(scale)))

    with mpmath.workdps(1000):  # (1 + 0.3) / e^-7 ~ 1426: e^-1426 ~ 1e-620
        k = round(x * 255)
        upper = mpmath.mpf(1) if k == 255 else cdf(k / 255 + H)
        lower = mpmath.mpf(0) if k == 0 else cdf(k / 255 - H)
        return float(mpmath.log(upper - lower))


def dl_cases() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(9)
    n = 400
    k = torch.randint(0, 256, (n,), generator=gen)
    k[:20], k[20:40] = 0, 255  # the edge bins
    loc = torch.rand(n, generator=gen, dtype=F64) * 1.6 - 0.3  # some beyond [0, 1]
    scale = torch.exp(torch.rand(n, generator=gen, dtype=F64) * 8 - 7)  # e^-7 .. e^1
    return k.to(F64) / 255, loc, scale


def test_discretized_logistic_matches_the_cdf_difference() -> None:
    x, loc, scale = dl_cases()
    got = DiscretizedLogistic(loc, scale).log_prob(x)
    # the plain float64 difference, where it has not cancelled away (P > 1e-6)
    sig = torch.sigmoid
    upper = torch.where(x == 1, torch.ones_like(x), sig((x + H - loc) / scale))
    lower = torch.where(x == 0, torch.zeros_like(x), sig((x - H - loc) / scale))
    direct = torch.log(upper - lower)
    ok = (upper - lower) > 1e-6
    assert int(ok.sum()) > 100
    torch.testing.assert_close(got[ok], direct[ok], rtol=1e-8, atol=1e-8)
    # all cases, deep tails included, against 1000-digit arithmetic
    ref = torch.tensor(
        [dl_reference(*v) for v in zip(x.tolist(), loc.tolist(), scale.tolist(), strict=True)],
        dtype=F64,
    )
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_discretized_logistic_sums_to_one_and_has_the_stated_mean() -> None:
    _, loc, scale = dl_cases()
    loc, scale = loc[:50, None], scale[:50, None]
    levels = torch.arange(256, dtype=F64) / 255  # (256,)
    p = DiscretizedLogistic(loc.expand(50, 256), scale.expand(50, 256)).log_prob(levels).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(50, dtype=F64), rtol=0, atol=1e-12)
    mean = DiscretizedLogistic(loc[:, 0], scale[:, 0]).mean
    torch.testing.assert_close(mean, (p * levels).sum(-1), rtol=0, atol=1e-12)


def test_discretized_logistic_samples_follow_its_probabilities() -> None:
    torch.manual_seed(0)
    loc = torch.tensor([0.5, 0.02, 0.9], dtype=F64)
    scale = torch.tensor([0.01, 0.05, 0.2], dtype=F64)
    n = 40_000
    draws = DiscretizedLogistic(loc, scale).sample((n,))  # (n, 3)
    assert bool(((draws * 255 - (draws * 255).round()).abs() < 1e-9).all())
    levels = torch.arange(256, dtype=F64) / 255
    p = DiscretizedLogistic(loc[:, None].expand(3, 256), scale[:, None].expand(3, 256))
    probs = p.log_prob(levels).exp()  # (3, 256)
    for j in range(3):
        count = torch.bincount((draws[:, j] * 255).round().long(), minlength=256)
        common = n * probs[j] >= 20  # bins where the normal approximation holds
        freq, p_common = count[common] / n, probs[j][common]
        se = (p_common * (1 - p_common) / n).sqrt()
        assert bool(((freq - p_common).abs() <= 4.5 * se).all())
        # the rare bins together: their count is at most Poisson's 1 - 1e-6 quantile
        rare = float(probs[j][~common].sum())
        assert int(count[~common].sum()) <= scipy.stats.poisson.ppf(1 - 1e-6, n * rare)


def test_categorical256_layout_and_values() -> None:
    lik = build("categorical256")
    raw = raw_params(256, spread=1.0)  # (4, 256 * D), blocks of D per level
    gen = torch.Generator().manual_seed(10)
    k = torch.randint(0, 256, (4, *SHAPE), generator=gen)
    d = lik(raw)
    logits = raw.reshape(4, 256, D)  # level-major, as Likelihood.split cuts it
    log_softmax = logits.log_softmax(1)
    ref = log_softmax.gather(1, k.reshape(4, 1, D)).reshape(4, D).sum(-1)
    torch.testing.assert_close(d.log_prob(k.to(F64) / 255), ref, rtol=1e-12, atol=1e-12)
    levels = torch.arange(256, dtype=F64) / 255
    ref_mean = (log_softmax.exp() * levels[:, None]).sum(1).reshape(4, *SHAPE)
    torch.testing.assert_close(d.mean, ref_mean)


def test_quantized_categorical_broadcasts_particles() -> None:
    logits = torch.randn(3, 256, dtype=F64)
    value = torch.randint(0, 256, (5, 3)).to(F64) / 255  # (K, N) against batch (N,)
    got = QuantizedCategorical(logits).log_prob(value)
    ref = torch.distributions.Categorical(logits=logits).log_prob((value * 255).round().long())
    torch.testing.assert_close(got, ref)


# --------------------------------------------------------------------------- support


def grey(n: int = 3) -> torch.Tensor:
    return torch.tensor([0.25, 0.5, 0.75]).repeat(n, 2).reshape(n, *SHAPE)


REFUSALS = [
    ("bernoulli", grey(), "TrainConfig(binarize='dynamic')"),
    ("continuous-bernoulli", grey() + 1, "needs data in [0, 1]"),
    ("beta", torch.zeros(3, *SHAPE), "VAEConfig(likelihood='continuous-bernoulli')"),
    ("beta", torch.ones(3, *SHAPE), "open interval"),
    ("discretized-logistic", grey() / 4 + 0.001, "8-bit data"),
    ("discretized-logistic", grey() - 1, "needs data in [0, 1]"),
    ("categorical256", torch.full((3, *SHAPE), 1 / 16), "k/255"),
    ("poisson", grey(), "non-negative integers"),
    ("negative-binomial", -torch.ones(3, *SHAPE), "raw counts"),
    ("normal", torch.full((3, *SHAPE), math.nan), "NaN or infinite"),
    ("laplace", torch.full((3, *SHAPE), math.inf), "NaN or infinite"),
]


@pytest.mark.parametrize(("spec", "x", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_support_refusals(spec: str, x: torch.Tensor, message: str) -> None:
    with pytest.raises(SupportError, match=r"likelihood|finite") as info:
        LIKELIHOODS.build(spec, data_shape=SHAPE).check_support(x)
    assert message in str(info.value)


ACCEPTED: dict[str, Callable[[torch.Generator], torch.Tensor]] = {
    "bernoulli": lambda g: torch.randint(0, 2, (3, *SHAPE), generator=g).float(),
    "continuous-bernoulli": lambda g: torch.rand(3, *SHAPE, generator=g).clamp(0, 1),
    "beta": lambda g: torch.rand(3, *SHAPE, generator=g) * 0.98 + 0.01,
    "discretized-logistic": lambda g: torch.randint(0, 256, (3, *SHAPE), generator=g) / 255,
    "categorical256": lambda g: torch.randint(0, 256, (3, *SHAPE), generator=g) / 255,
    "poisson": lambda g: torch.randint(0, 50, (3, *SHAPE), generator=g).float(),
    "negative-binomial": lambda g: torch.randint(0, 50, (3, *SHAPE), generator=g).float(),
    "normal": lambda g: torch.randn(3, *SHAPE, generator=g),
    "normal-decoder": lambda g: torch.randn(3, *SHAPE, generator=g),
    "normal-learned": lambda g: torch.randn(3, *SHAPE, generator=g),
    "laplace": lambda g: torch.randn(3, *SHAPE, generator=g),
}


# likelihoods of rows of a table, not of (2, 3) items: tests/models/test_tabular.py
TABLE_ONLY = {"table"}


def test_every_likelihood_has_accepted_data() -> None:
    assert set(ACCEPTED) | TABLE_ONLY == set(LIKELIHOODS.names())


@pytest.mark.parametrize("spec", sorted(ACCEPTED))
def test_valid_data_pass_and_the_vae_runs(spec: str) -> None:
    """Support check, a gradient step, ``sample``/``reconstruct`` means and the IW bound."""
    pyro.set_rng_seed(0)
    x = ACCEPTED[spec](torch.Generator().manual_seed(11))  # (3, 2, 3) float32
    vae = VAE(VAEConfig(data_shape=SHAPE, latent_dim=2, hidden=(8,), likelihood=spec))
    vae.check_data(x)
    loss = pyro.infer.Trace_ELBO()(vae.model, vae.guide)(x)
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert all(p.grad is not None for p in vae.model.decoder.parameters())
    for images in (vae.sample(4), vae.reconstruct(x)):
        assert images.shape[1:] == SHAPE and bool(torch.isfinite(images).all())
    ll = log_likelihood(vae.model, vae.guide, x, num_samples=5)  # (K, N) particle shapes
    assert ll.shape == (3,) and bool(torch.isfinite(ll).all())


def test_bernoulli_logits_equals_torchs_bernoulli_in_value_and_gradient() -> None:
    """The in-place negation changes nothing: same log-density and gradient, broadcast too."""
    from pyro_vae.models.likelihoods import BernoulliLogits

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    x = torch.bernoulli(torch.full((3, 5), 0.4, dtype=torch.float64), generator=g)  # broadcast
    ours = BernoulliLogits(logits=logits).to_event(1).log_prob(x)  # (7, 3)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    theirs = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    assert ours.shape == (7, 3)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=0, atol=0)
