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

Tolerances, stated: after 2,400 Adam steps through :func:`pyro_vae.fit`, the learned
model's exact log-likelihood is within 0.01 nats per point of :math:`\ell_{ML}/N` (and
never above it: it is a maximum), and its ELBO, computed in closed form, is within 0.05
nats per point (the rotation that makes the guide exact is a slow, flat direction).
"""

from __future__ import annotations

import math

import pytest
import torch
from linear_gaussian import LinearGaussian

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


def test_linear_vae_recovers_the_ppca_maximum_likelihood() -> None:
    lg = LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)
    x = lg.sample_x(2000, seed=1)  # (N, D) float64
    data = Dataset("ppca", x.float(), lg.sample_x(100, seed=2).float(), x[:100].float())
    config = RunConfig(
        VAEConfig(data_shape=(5,), latent_dim=2, hidden=(), likelihood="normal:scale=0.5"),
        TrainConfig(
            epochs=300,
            batch_size=250,
            lr=0.02,
            binarize="none",
            objective="elbo-analytic",
            device="cpu",
            eval_num_samples=2,
            eval_num_points=10,
        ),
    )
    vae = fit(config, dataset=data, write=False, progress=False).vae.double()
    decoder = vae.model.decoder.net[0]  # type: ignore[index]
    W, b = decoder.weight.detach(), decoder.bias.detach()  # (D, L), (D,)
    with torch.no_grad():
        q = vae.guide.posterior(vae.guide.encoder(x)).base_dist  # type: ignore[operator]
        elbo = _closed_form_elbo(x, W, b, 0.5, q.loc, q.scale**2).mean()
    model_ll = float(LinearGaussian(W, b, 0.5).log_px(x).mean())
    ml = _ml_log_likelihood(x, latent=2, sigma2=0.25)
    assert model_ll <= ml + 1e-9
    assert ml - model_ll < 0.01
    assert float(elbo) <= model_ll + 1e-9
    assert ml - float(elbo) < 0.05
