"""
Swapping priors and likelihoods
===============================

In pyro-vae the prior :math:`p(z)` and the likelihood :math:`p(x|z)` are named parts,
picked by a spec string (``"vamp:components=50"``) in :class:`pyro_vae.VAEConfig`, on the
command line (``--prior vamp:components=50``) or in a TOML config. ``pyro-vae components``
lists them with their parameters. This tutorial trains the same VAE with three priors,
then with three likelihoods on grey-scale images, and shows why the Bernoulli, the
likelihood of most VAE tutorials, is the wrong one for grey pixels.

Budget: about a minute on two CPU cores; ``PYRO_VAE_TUTORIAL_EPOCHS`` trains longer.
"""

# %%
# Setup
# -----

from __future__ import annotations

import dataclasses
import os

import matplotlib.pyplot as plt
import pyro
import torch

from pyro_vae import (
    VAE,
    Dataset,
    RunConfig,
    TrainConfig,
    VAEConfig,
    fit,
    load_dataset,
    log_likelihood,
)
from pyro_vae.components import component_names
from pyro_vae.models.likelihoods import ContinuousBernoulliLikelihood, SupportError

EPOCHS = int(os.environ.get("PYRO_VAE_TUTORIAL_EPOCHS", "30"))  # raise to train longer
LATENT = 4  # dimension of z
HIDDEN = (128,)  # one hidden layer each way: small enough for six runs in a minute
IW_SAMPLES = 100  # k of the importance-weighted NLL

digits = load_dataset("digits")
print("priors:", component_names()["priors"])
print("likelihoods:", component_names()["likelihoods"])


def train(vae_config: VAEConfig, dataset: Dataset, binarize: str = "dynamic") -> dict:
    """Train with :func:`pyro_vae.fit`; return the test summary and the VAE."""
    config = RunConfig(
        vae_config,
        TrainConfig(
            epochs=EPOCHS,
            binarize=binarize,
            eval_num_samples=IW_SAMPLES,
            eval_num_points=300,
            seed=0,
        ),
    )
    result = fit(config, dataset=dataset, write=False, progress=False)
    return {**result.summary, "vae": result.vae}


def show_images(ax: plt.Axes, images: torch.Tensor, title: str, cols: int = 8) -> None:
    """Tile ``images`` (N, 1, H, W) into one grid on ``ax``."""
    n, _, h, w = images.shape
    rows = (n + cols - 1) // cols
    grid = torch.ones(rows * (h + 1), cols * (w + 1))  # white 1-pixel gaps
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image[0]
    ax.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")


# %%
# Three priors
# ------------
# - ``normal``: :math:`p(z) = \mathcal{N}(0, I)`, the standard choice.
# - ``vamp``: the VampPrior of Tomczak & Welling (2018), the guide's own posterior
#   averaged over :math:`K` learned pseudo-inputs :math:`u_k`,
#   :math:`p(z) = \frac1K \sum_{k=1}^K q_\phi(z \mid u_k)`. The prior is made of the
#   encoder, so it can match the aggregate posterior.
# - ``flow``: a standard Normal pushed through learned autoregressive transforms,
#   :math:`p(z) = \mathcal{N}(f(z); 0, I)\,|\det \partial f / \partial z|` (MAF,
#   Papamakarios et al. 2017; Chen et al. 2017 for flow priors in VAEs).
#
# Everything else, the networks, the data, the seed and the budget, is the same. The
# data are the digits binarized afresh every epoch, :math:`x \sim \mathrm{Bernoulli}(
# \text{grey level})`, with a Bernoulli likelihood.

priors = {}
for spec in ("normal", "vamp:components=50", "flow:layers=2"):
    vae_config = VAEConfig(latent_dim=LATENT, hidden=HIDDEN, prior=spec)
    priors[spec] = train(vae_config, digits)
    s = priors[spec]
    print(
        f"{spec:>20}: test ELBO {s['test_elbo']:7.2f}   KL {s['test_kl']:5.2f}   "
        f"IW NLL (k={IW_SAMPLES}) {s['test_nll']:6.2f}   nats"
    )

# %%
# The IW NLL is an upper bound on :math:`-\log p(x)` with :math:`k` importance draws
# (Burda et al. 2015), comparable across priors because the likelihood and data are the
# same. At this small budget the differences are small and come from one seed: read them
# as what this run gave, not as a ranking (:mod:`pyro_vae.analysis.compare` runs several seeds
# with confidence intervals; see tutorial 3). The samples, means of :math:`p(x|z)` for
# :math:`z \sim p(z)`:

fig, axes = plt.subplots(1, 3, figsize=(13, 3))
for ax, (spec, s) in zip(axes, priors.items(), strict=True):
    pyro.set_rng_seed(1)
    show_images(ax, s["vae"].sample(24), f"prior {spec}")
plt.show()

# %%
# Grey-scale data need a density on [0, 1]
# ----------------------------------------
# The digits have 17 grey levels :math:`k/16`. To score them with a density on
# :math:`[0, 1]`, dequantize them once with a fixed seed (Theis et al. 2016):
# :math:`x = (16\,g + u)/17` with :math:`u \sim \mathcal{U}(0, 1)`, which spreads each
# grey level :math:`g` uniformly over its own bin of width 1/17 and puts every value in
# the open interval (0, 1), which the Beta needs.

gen = torch.Generator().manual_seed(0)


def dequantize(grey: torch.Tensor) -> torch.Tensor:
    u = torch.rand(grey.shape, generator=gen).clamp(1e-4, 1 - 1e-4)  # (N, 1, 8, 8)
    return (16 * grey + u) / 17  # (N, 1, 8, 8), in (0, 1)


grey = Dataset(
    "digits-dequantized",
    dequantize(digits.train),
    dequantize(digits.valid),
    dequantize(digits.test),
)
print(grey, f"min {grey.train.min():.2e}, max 1 - {1 - grey.train.max():.2e}")

# %%
# pyro-vae refuses to put a Bernoulli on these pixels; the error says what to do:

bernoulli = VAE(VAEConfig(latent_dim=LATENT, hidden=HIDDEN, likelihood="bernoulli"))
try:
    bernoulli.check_data(grey.train)
except SupportError as error:
    print("SupportError:", error)

# %%
# Why a Bernoulli on grey pixels is wrong
# ---------------------------------------
# The Bernoulli is a distribution on :math:`\{0, 1\}`. Evaluated at a grey value
# :math:`x \in [0, 1]`, :math:`f(x; \lambda) = \lambda^x (1-\lambda)^{1-x}` is not a
# density: it does not integrate to one over :math:`[0, 1]`,
#
# .. math::
#
#     \int_0^1 \lambda^x (1-\lambda)^{1-x}\, dx = \frac{2\lambda - 1}
#     {\log \lambda - \log(1-\lambda)} = \frac{1}{C(\lambda)} \le \frac12,
#
# with the most mass, one half, at :math:`\lambda = \frac12`, and less and less toward
# :math:`\lambda = 0` or 1. The continuous Bernoulli of Loaiza-Ganem & Cunningham
# (2019) is exactly this function normalized, :math:`C(\lambda)\,\lambda^x
# (1-\lambda)^{1-x}`. Check the integral numerically:

lam = torch.tensor([0.5, 0.7, 0.9, 0.99], dtype=torch.float64)  # (4,)
xs = torch.linspace(0, 1, 10001, dtype=torch.float64)  # (X,)
f = lam[:, None] ** xs * (1 - lam[:, None]) ** (1 - xs)  # (4, X)
numeric = torch.trapezoid(f, xs, dim=1)  # (4,)
closed = (2 * lam - 1) / (lam.log() - (1 - lam).log())  # (4,); the limit 1/2 at lam = 1/2
closed[0] = 0.5
for a, b, c in zip(lam.tolist(), numeric.tolist(), closed.tolist(), strict=True):
    print(f"lambda {a:.2f}: integral {b:.4f} (closed form {c:.4f})")

fig, ax = plt.subplots(figsize=(5, 3))
grid_lam = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
mass = (2 * grid_lam - 1) / (grid_lam.log() - (1 - grid_lam).log())
ax.plot(grid_lam.numpy(), mass.numpy())
ax.set_xlabel("λ")
ax.set_ylabel("∫ λ^x (1-λ)^(1-x) dx")
ax.set_title("the Bernoulli 'density' of a grey pixel")
plt.show()

# %%
# So a VAE trained with a Bernoulli on grey pixels (as Pyro's VAE tutorial does, with
# validation switched off) maximizes an objective that is not a bound on any
# log-likelihood. It lacks :math:`\sum_d \log C(\lambda_d)`, at least
# :math:`\log 2` nats per pixel and unbounded as :math:`\lambda` nears 0 or 1, and since
# that term depends on the decoder's output, its gradient is not the gradient of any
# likelihood either. Train one that way, with a plain loop and Pyro's validation off, to
# see the numbers:

pyro.set_rng_seed(0)
vae_config = VAEConfig(latent_dim=LATENT, hidden=HIDDEN, likelihood="bernoulli")
bern = VAE(vae_config)
loss_fn = pyro.infer.Trace_ELBO()(bern.model, bern.guide)
opt = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
order = torch.Generator().manual_seed(0)
with pyro.validation_enabled(False):
    for _ in range(EPOCHS):
        for idx in torch.randperm(grey.train.shape[0], generator=order).split(100):
            loss = loss_fn(grey.train[idx]) / len(idx)  # nats per data point
            opt.zero_grad()
            loss.backward()
            opt.step()
    test = grey.test
    bern_score = log_likelihood(bern.model, bern.guide, test, num_samples=IW_SAMPLES)  # (N,)
print(f"Bernoulli 'IW NLL' on grey test pixels: {-bern_score.mean():.2f} nats (not a density)")

# %%
# Two proper densities on :math:`[0, 1]^{64}`, trained with :func:`pyro_vae.fit`:
# the continuous Bernoulli (``continuous-bernoulli``) and a Beta with both
# concentrations from the decoder (``beta``). ``binarize="none"`` keeps the grey values.

likelihoods = {}
for spec in ("continuous-bernoulli", "beta"):
    vae_config = VAEConfig(latent_dim=LATENT, hidden=HIDDEN, likelihood=spec)
    likelihoods[spec] = train(vae_config, grey, binarize="none")

# %%
# The Bernoulli-trained decoder does define a proper density once it is normalized: the
# continuous Bernoulli with the *same* logits. Swap the likelihood module (both read one
# logit per pixel) and score the same networks again:

bern.model.likelihood = ContinuousBernoulliLikelihood(bern.config.data_shape)
normalized = log_likelihood(bern.model, bern.guide, test, num_samples=IW_SAMPLES)  # (N,)
rows = [
    ("bernoulli (unnormalized)", -float(bern_score.mean())),
    ("bernoulli, normalized", -float(normalized.mean())),
    ("continuous-bernoulli", likelihoods["continuous-bernoulli"]["test_nll"]),
    ("beta", likelihoods["beta"]["test_nll"]),
]
for name, nll in rows:
    print(f"{name:>26}: IW NLL {nll:8.2f} nats per image")

# %%
# How to read these numbers:
#
# - The unnormalized Bernoulli figure is positive because each pixel's "likelihood" is at
#   most one; it is missing :math:`\sum_d \log C(\lambda_d) \ge 64 \log 2 \approx 44`
#   nats per image, so it is not an NLL of anything and cannot be set beside the others.
#   Normalizing it subtracts exactly that term.
# - The continuous Bernoulli and the Beta are densities on the same space, the
#   dequantized pixels, so their NLLs are comparable with each other (and with the
#   normalized Bernoulli). They can be negative: a density can exceed one.
# - None of these is comparable with an NLL of *binarized* data (the priors above):
#   that is a probability of a discrete image, not a density of a continuous one.
#
# The ordering of the three proper NLLs in this run:

proper = sorted(rows[1:], key=lambda row: row[1])
print(" < ".join(f"{name} ({nll:.1f})" for name, nll in proper))

# %%
# Finally, what the decoders say: the mean of :math:`p(x|z)` at each model's code for a
# few test images. The continuous Bernoulli's mean is not :math:`\lambda`; pyro-vae's
# ``reconstruct`` shows the exact mean of each likelihood.

fig, axes = plt.subplots(1, 4, figsize=(14, 2.2))
show_images(axes[0], test[:16], "dequantized test digits")
show_images(axes[1], bern.reconstruct(test[:16]), "bernoulli-trained")
for ax, spec in zip(axes[2:], likelihoods, strict=True):
    show_images(ax, likelihoods[spec]["vae"].reconstruct(test[:16]), spec)
plt.show()

# %%
# The likelihood fixes what the numbers mean: a VAE's NLL is only comparable with
# another's when both are densities (or both probabilities) of the same data.
# ``dataclasses.replace`` swaps one part of a config and keeps the rest:

print(dataclasses.replace(vae_config, likelihood="beta:min_concentration=0.1"))
