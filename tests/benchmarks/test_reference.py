"""The hand-written PyTorch reference (benchmarks/reference.py) against pyro-vae, in float64.

On the same weights and the same random draws the reference must compute exactly what
pyro-vae computes (loss, gradients, ELBO terms, a whole training epoch), to float64
rounding. With independent draws its estimates must agree with pyro-vae's within Monte
Carlo error: the tolerance is ``Z`` standard errors of the paired per-point differences.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch import nn

from benchmarks.reference import ConvReferenceVAE, ReferenceVAE, train_epoch
from pyro_vae import VAE, TrainConfig, VAEConfig, elbo_terms, log_likelihood
from pyro_vae.infer.objectives import TraceELBO
from pyro_vae.training.loop import Loop

Z = 4.5  # two-sided z-score bound: a correct estimator fails with probability < 1e-5
CONFIG = VAEConfig(data_shape=(1, 6, 6), latent_dim=3, hidden=(16, 12), activation="tanh")


@pytest.fixture
def vae() -> VAE:
    pyro.set_rng_seed(0)
    return VAE(CONFIG).double()


@pytest.fixture
def x() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.full((40, 1, 6, 6), 0.3, dtype=torch.float64), generator=gen)


def _pairs(ref: ReferenceVAE, vae: VAE) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """(reference parameter, pyro-vae parameter) for every weight and bias."""
    layers = [m for m in vae.guide.encoder.modules() if isinstance(m, nn.Linear)]
    layers.append(vae.guide.posterior.head)
    layers += [m for m in vae.model.decoder.modules() if isinstance(m, nn.Linear)]
    mine = [*ref.encoder, ref.head, *ref.decoder]
    assert len(mine) == len(layers) == 6
    pairs = zip(mine, layers, strict=True)
    return [(getattr(a, p), getattr(b, p)) for a, b in pairs for p in ("weight", "bias")]


def _paired_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mean(a - b)| in standard errors of the per-point differences."""
    d = (a - b).detach()
    return float(d.mean().abs() / (d.std() / math.sqrt(d.numel())))


def test_copies_weights_and_computes_the_same_networks(vae: VAE, x: torch.Tensor) -> None:
    ref = ReferenceVAE.from_pyro_vae(vae)
    assert next(ref.parameters()).dtype == torch.float64
    for mine, theirs in _pairs(ref, vae):
        assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr()
    q = vae.guide.posterior(vae.guide.encoder(x))
    loc, scale = ref.encode(x)
    torch.testing.assert_close(loc, q.mean, rtol=0, atol=1e-13)
    torch.testing.assert_close(scale, q.stddev, rtol=0, atol=1e-13)
    z = torch.randn(5, 7, 3, dtype=torch.float64)
    torch.testing.assert_close(ref.decode(z), vae.model.decoder(z), rtol=0, atol=1e-13)


@pytest.mark.parametrize("objective", [pyro.infer.Trace_ELBO, TraceELBO], ids=["pyro", "ours"])
def test_loss_and_gradients_equal_trace_elbo_on_the_same_draws(
    vae: VAE, x: torch.Tensor, objective: type[pyro.infer.ELBO]
) -> None:
    """Both draw eps ~ N(0, I) of shape (N, L) from the global RNG: same seed, same z."""
    ref = ReferenceVAE.from_pyro_vae(vae)
    torch.manual_seed(5)
    theirs = objective()(vae.model, vae.guide)(x) / x.shape[0]
    theirs.backward()
    torch.manual_seed(5)
    mine = ref.loss(x)
    mine.backward()
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0)
    for a, b in _pairs(ref, vae):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_elbo_terms_equal_pyro_vae_on_the_same_draws(
    vae: VAE, x: torch.Tensor, analytic_kl: bool
) -> None:
    ref = ReferenceVAE.from_pyro_vae(vae)
    torch.manual_seed(6)
    theirs = elbo_terms(vae.model, vae.guide, x, analytic_kl=analytic_kl)
    torch.manual_seed(6)
    mine = ref.elbo_terms(x, analytic_kl=analytic_kl)
    for key in ("reconstruction", "kl", "elbo"):
        assert mine[key].shape == (x.shape[0],)
        torch.testing.assert_close(mine[key], theirs[key], rtol=1e-12, atol=1e-12)


def test_a_training_epoch_equals_pyro_vae_trainer_loop(vae: VAE, x: torch.Tensor) -> None:
    """Same init, data order (randperm of a generator seeded alike) and draws: same weights."""
    ref = ReferenceVAE.from_pyro_vae(vae)
    tc = TrainConfig(binarize="none", batch_size=16, lr=1e-2, epochs=1)  # 3 steps, last of 8
    opt = torch.optim.Adam(vae.parameters(), lr=tc.lr)
    loop = Loop(vae, opt, torch.Generator().manual_seed(3), tc, x, progress=False)
    torch.manual_seed(7)
    record, _ = loop.train_epoch(1)
    loop.close()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=tc.lr)
    torch.manual_seed(7)
    loss = train_epoch(ref, ref_opt, x, tc.batch_size, torch.Generator().manual_seed(3))
    assert math.isclose(loss, record["train_loss"], rel_tol=1e-12)
    for a, b in _pairs(ref, vae):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.equal(*_pairs(ref, VAE(CONFIG).double())[0])  # the step moved them


def test_elbo_agrees_with_pyro_vae_within_monte_carlo_error(vae: VAE) -> None:
    """Independent draws; the reference's one-draw KL against pyro-vae's analytic KL."""
    ref = ReferenceVAE.from_pyro_vae(vae)
    gen = torch.Generator().manual_seed(8)
    x = torch.bernoulli(torch.full((2000, 1, 6, 6), 0.3, dtype=torch.float64), generator=gen)
    torch.manual_seed(9)
    with torch.no_grad():
        theirs = elbo_terms(vae.model, vae.guide, x)["elbo"]
        mine = ref.elbo_terms(x, analytic_kl=False, generator=gen)["elbo"]
    assert _paired_z(mine, theirs) < Z


@pytest.mark.parametrize("k", [1, 30])
def test_iw_log_likelihood_agrees_with_pyro_vae_within_monte_carlo_error(vae: VAE, k: int) -> None:
    ref = ReferenceVAE.from_pyro_vae(vae)
    gen = torch.Generator().manual_seed(10)
    x = torch.bernoulli(torch.full((1500, 1, 6, 6), 0.3, dtype=torch.float64), generator=gen)
    torch.manual_seed(11)
    theirs = log_likelihood(vae.model, vae.guide, x, num_samples=k)
    mine = ref.log_likelihood(x, k, generator=gen)
    assert mine.shape == (x.shape[0],)
    assert _paired_z(mine, theirs) < Z
    # chunks of 400 points (the last 300) and 7 draws (the last 2 at k=30): the same bound
    chunked = ref.log_likelihood(x, k, generator=gen, batch_size=400, max_elements=400 * 36 * 7)
    assert _paired_z(chunked, theirs) < Z


def test_iw_bound_grows_with_k(vae: VAE) -> None:
    """L_1 <= L_k <= log p(x) in expectation (Burda et al. 2015, theorem 1)."""
    ref = ReferenceVAE.from_pyro_vae(vae)
    gen = torch.Generator().manual_seed(12)
    x = torch.bernoulli(torch.full((1500, 1, 6, 6), 0.3, dtype=torch.float64), generator=gen)
    l1 = ref.log_likelihood(x, 1, generator=gen)
    l50 = ref.log_likelihood(x, 50, generator=gen)
    d = l50 - l1
    assert float(d.mean()) > Z * float(d.std()) / math.sqrt(d.numel())


def test_inputs_are_validated(vae: VAE) -> None:
    with pytest.raises(ValueError, match="activation"):
        ReferenceVAE(36, (8,), 2, activation="swish")
    with pytest.raises(ValueError, match="latent_dim"):
        ReferenceVAE(36, (8,), 0)
    with pytest.raises(ValueError, match="min_scale"):
        ReferenceVAE(36, (8,), 2, min_scale=0.0)
    ref = ReferenceVAE.from_pyro_vae(vae)
    with pytest.raises(ValueError, match="36 values per row"):
        ref.loss(torch.zeros(3, 35, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be"):
        ref.log_likelihood(torch.zeros(3, 36, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="likelihood 'bernoulli' only"):
        ReferenceVAE.from_pyro_vae(VAE(VAEConfig(likelihood="normal")))
    with pytest.raises(TypeError, match=r"pyro_vae\.VAE"):
        ReferenceVAE.from_pyro_vae(nn.Linear(2, 2))


def test_conv_reference_has_the_same_loss_and_gradients_as_trace_elbo() -> None:
    pyro.set_rng_seed(0)
    conv = VAE(VAEConfig(data_shape=(1, 8, 8), network="conv:channels=4", hidden=(16,))).double()
    ref = ConvReferenceVAE.from_pyro_vae(conv)
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3, dtype=torch.float64))
    torch.manual_seed(5)
    theirs = TraceELBO()(conv.model, conv.guide)(x) / x.shape[0]
    theirs.backward()
    torch.manual_seed(5)
    mine = ref.loss(x)
    mine.backward()
    torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0)
    pairs = [
        (ref.conv_encoder, conv.guide.encoder),
        (ref.head, conv.guide.posterior.head),
        (ref.conv_decoder, conv.model.decoder),
    ]
    params = [zip(m.parameters(), n.parameters(), strict=True) for m, n in pairs]
    for a, b in (pq for pair in params for pq in pair):
        assert a.grad is not None and b.grad is not None and a is not b
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="network 'conv'"):
        ConvReferenceVAE.from_pyro_vae(VAE(VAEConfig(data_shape=(1, 8, 8))))
