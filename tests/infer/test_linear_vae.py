r"""Training a linear VAE recovers probabilistic PCA's maximum likelihood (Lucas et al. 2019).

Data: N points from the pPCA model of tests/linear_gaussian.py (D = 5, L = 2, σ = 0.5).
For a fixed noise σ², the maximum over (W, b) of the pPCA log-likelihood has the closed
form of Tipping & Bishop (1999): with :math:`\lambda_1 \ge \dots \ge \lambda_D` the
eigenvalues of the sample covariance S (normalized by N), :math:`W_{ML} = U_L(\Lambda_L -
\sigma^2 I)^{1/2}` and

.. math::

    \frac{\ell_{ML}}{N} = -\frac12\Big[D\log 2\pi + \sum_{i \le L}\log\lambda_i
        + (D-L)\log\sigma^2 + L + \frac{1}{\sigma^2}\sum_{i > L}\lambda_i\Big].

Lucas et al. (2019, "Don't blame the ELBO!") show that for a linear VAE (linear decoder,
Normal likelihood, diagonal Normal guide with linear mean) every stationary point of the
ELBO is a pPCA maximum-likelihood solution at which the ELBO is tight: the
posterior covariance :math:`\sigma^2 (\sigma^2 I + W^\top W)^{-1}` is diagonal once the
columns of W are orthogonal, so a mean-field guide is exact there. We keep the noise fixed
at the true σ (this package's ``normal`` likelihood has a fixed scale; Lucas et al.'s result
holds for each fixed σ² as well as for learned σ², whose optimum is the mean of the
discarded eigenvalues).

Training: 300 epochs of 8 mini-batches (2,400 Adam steps through :func:`pyro_vae.fit`), the
learning rate decayed on a cosine from 0.1 to 0 (a schedule set for this test on the
trainer). Without noise, Adam on the closed-form ELBO reaches the optimum to 1e-5 nats
within about 1,200 steps at 0.05 from these inits; with the one-draw, mini-batch gradients
of training, a constant rate leaves the parameters fluctuating about it (at 0.02, ELBO
gaps of 0.01 to 0.06 nats per point, depending on the seed: the rotation that makes the
guide exact is a flat direction), and the cosine decay lets them settle.

Tolerances, derived from the optimization noise measured once over 13 seeds (0-12) of this
exact setting: the ML log-likelihood was missed by 2.1e-5 nats on average (sd 0.9e-5,
max 4.4e-5) and the ELBO by 3.4e-4 (sd 1.3e-4, max 7.0e-4). Each tolerance is that mean
plus Z = 4.5 standard deviations over seeds: 6e-5 and 9e-4 nats per point. Both figures
are closed forms (no Monte Carlo error in the check itself), and the model's
log-likelihood must not exceed the maximum.
"""

from __future__ import annotations

import math

import pytest
import torch
from linear_gaussian import LinearGaussian

import pyro_vae.training.loop as loop_module
from pyro_vae import Dataset, RunConfig, TrainConfig, VAEConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _ml_log_likelihood(x: torch.Tensor, latent: int, sigma2: float) -> float:
    """Tipping & Bishop's maximum over (W, b) of the mean log-likelihood, for fixed σ²."""
    d = x.shape[1]
    lam = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)  # (D,), descending
    assert float(lam[latent - 1]) > sigma2  # the closed form needs lambda_L > sigma^2
    return -0.5 * float(
        d * math.log(2 * math.pi)
        + lam[:latent].log().sum()
        + (d - latent) * math.log(sigma2)
        + latent
        + lam[latent:].sum() / sigma2
    )


def _closed_form_elbo(
    x: torch.Tensor,
    W: torch.Tensor,  # noqa: N803 (the paper's name)
    b: torch.Tensor,
    sigma: float,
    loc: torch.Tensor,
    s2: torch.Tensor,
) -> torch.Tensor:
    """ELBO per point of q = N(loc, diag s2) under the linear-Gaussian model, exactly."""
    d = x.shape[1]
    resid = x - loc @ W.T - b  # (N, D)
    recon = -0.5 * (d * math.log(2 * math.pi * sigma**2) + (resid**2).sum(-1) / sigma**2)
    recon = recon - 0.5 * (s2 * (W**2).sum(0)).sum(-1) / sigma**2  # E_q of the quadratic
    kl = 0.5 * (s2 + loc**2 - 1 - s2.log()).sum(-1)
    return recon - kl  # (N,)


EPOCHS, LR = 300, 0.1
Z = 4.5
ML_LL_GAP = 2.1e-5 + Z * 0.9e-5  # mean + Z sd over 13 seeds, see the module docstring
ML_ELBO_GAP = 3.4e-4 + Z * 1.3e-4


def test_linear_vae_recovers_the_ppca_maximum_likelihood(monkeypatch: pytest.MonkeyPatch) -> None:
    epochs: list[int] = []

    def cosine(lr: float, schedule: str, epoch: int, stage_scale: float = 1.0) -> float:
        """The rate of epoch ``epoch``: lr (1 + cos(pi (epoch - 1) / EPOCHS)) / 2."""
        epochs.append(epoch)
        return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / EPOCHS))

    monkeypatch.setattr(loop_module, "learning_rate", cosine)  # the trainer's per-epoch rate
    lg = LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)
    x = lg.sample_x(2000, seed=1)  # (N, D) float64
    data = Dataset("ppca", x.float(), lg.sample_x(100, seed=2).float(), x[:100].float())
    config = RunConfig(
        VAEConfig(data_shape=(5,), latent_dim=2, hidden=(), likelihood="normal:scale=0.5"),
        TrainConfig(
            epochs=EPOCHS,
            batch_size=250,
            lr=LR,
            binarize="none",
            objective="elbo-analytic",
            device="cpu",
            eval_num_samples=2,
            eval_num_points=10,
        ),
    )
    vae = fit(config, dataset=data, write=False, progress=False).vae.double()
    assert sorted(set(epochs)) == list(range(1, EPOCHS + 1))  # the schedule was in force
    decoder = vae.model.decoder.net[0]  # type: ignore[index]
    W, b = decoder.weight.detach(), decoder.bias.detach()  # (D, L), (D,)
    with torch.no_grad():
        q = vae.guide.posterior(vae.guide.encoder(x)).base_dist  # type: ignore[operator]
        elbo = _closed_form_elbo(x, W, b, 0.5, q.loc, q.scale**2).mean()
    model_ll = float(LinearGaussian(W, b, 0.5).log_px(x).mean())
    ml = _ml_log_likelihood(x, latent=2, sigma2=0.25)
    assert model_ll <= ml + 1e-9
    assert ml - model_ll < ML_LL_GAP
    assert float(elbo) <= model_ll + 1e-9
    assert ml - float(elbo) < ML_ELBO_GAP
