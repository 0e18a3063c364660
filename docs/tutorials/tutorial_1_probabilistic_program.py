"""
The VAE as a probabilistic program
==================================

An autoencoder compresses a data point :math:`x` into a short code :math:`z` and decodes
the code back into :math:`x`. A variational autoencoder (Kingma & Welling 2014; Rezende,
Mohamed & Wierstra 2014) changes two things: the encoder outputs a *distribution* over
codes, and the decoder is the likelihood :math:`p(x|z)` of a generative model whose codes
come from a prior :math:`p(z)`. Written that way, a VAE is two small probabilistic
programs: the model :math:`p(x|z)\\,p(z)` and the guide :math:`q(z|x)`.

This tutorial builds both with :class:`pyro_vae.VAE`, looks inside them, writes the loss
as reconstruction plus KL, and trains a deterministic autoencoder beside a VAE to show
why only the VAE generates new data. It runs in about half a minute on two CPU cores;
``PYRO_VAE_TUTORIAL_EPOCHS`` trains longer.
"""

# %%
# Setup
# -----
# The 8x8 ``digits`` images ship with scikit-learn, so nothing is downloaded. Every
# number and figure below comes from this run; the seed fixes them.

from __future__ import annotations

import inspect
import os

import matplotlib.pyplot as plt
import pyro
import torch

from pyro_vae import VAE, RunConfig, TrainConfig, VAEConfig, elbo_terms, fit, load_dataset

EPOCHS = int(os.environ.get("PYRO_VAE_TUTORIAL_EPOCHS", "30"))  # raise to train longer
LATENT = 8  # dimension of z

pyro.set_rng_seed(0)
digits = load_dataset("digits")
print(digits)


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


fig, ax = plt.subplots(figsize=(5, 2.6))
show_images(ax, digits.test[:16], "test digits (grey levels k/16)")
plt.show()

# %%
# From an autoencoder to a VAE
# ----------------------------
# A classic autoencoder is a pair of networks, an encoder :math:`z = f_\phi(x)` and a
# decoder :math:`\hat x = g_\theta(z)`, trained so that :math:`\hat x \approx x`. Nothing
# says where the codes :math:`z` lie, so there is no way to draw a *new* code.
#
# A VAE fixes where codes come from with a prior, and makes the decoder a likelihood:
#
# .. math::
#
#     p_\theta(x, z) = p(z)\, p_\theta(x \mid z), \qquad p(z) = \mathcal{N}(z; 0, I),
#     \qquad p_\theta(x \mid z) = \prod_{d} \mathrm{Bernoulli}(x_d; \sigma(g_\theta(z)_d)).
#
# The encoder no longer outputs a code but the parameters of an approximate posterior,
#
# .. math::
#
#     q_\phi(z \mid x) = \mathcal{N}\big(z; \mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2\big),
#
# and both are written as Pyro programs: the model samples ``z`` from the prior and
# observes ``x``; the guide samples ``z`` given ``x``. Here is the source of the two
# programs that :class:`pyro_vae.VAE` builds (``vae.model`` and ``vae.guide``):

vae = VAE(VAEConfig(data_shape=(1, 8, 8), latent_dim=LATENT))
print(inspect.getsource(type(vae.model).forward))
print(inspect.getsource(type(vae.guide).forward))

# %%
# Both programs put their sites in one plate ``"data"`` over the rows of ``x``, so the
# model's log density is a sum over data points. Run the guide, replay the model on the
# guide's ``z`` and print each site's shape: batch dims left of ``|``, event dims right.
# The model is binarized digits here, so ``x`` is drawn once as
# :math:`x \sim \mathrm{Bernoulli}(\text{grey level})`.

x = torch.bernoulli(digits.test[:5])  # (5, 1, 8, 8) binary
guide_trace = pyro.poutine.trace(vae.guide).get_trace(x)
model_trace = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
print(guide_trace.format_shapes())
print(model_trace.format_shapes())

# %%
# The reparameterized sample
# --------------------------
# To train :math:`\phi` by gradient descent the draw from :math:`q_\phi(z|x)` must be a
# differentiable function of :math:`\phi`. For a Normal it is:
#
# .. math::
#
#     z = \mu_\phi(x) + \sigma_\phi(x) \odot \varepsilon, \qquad
#     \varepsilon \sim \mathcal{N}(0, I),
#
# so the noise is outside the network and gradients flow through :math:`\mu` and
# :math:`\sigma` (Kingma & Welling 2014). Pyro does this whenever a distribution has
# ``rsample``; the draw in the guide's trace carries a gradient back to the encoder:

z = guide_trace.nodes["z"]["value"]  # (5, 8)
q = guide_trace.nodes["z"]["fn"]
print("has_rsample:", q.has_rsample, " z.requires_grad:", z.requires_grad)
eps = (z - q.mean) / q.stddev  # (5, 8): the noise this draw used
print(f"eps mean {eps.mean().item():.3f}, sd {eps.std().item():.3f}")

# %%
# The loss: reconstruction plus KL
# --------------------------------
# For any :math:`q`, :math:`\log p(x) \ge \mathcal{L}(x)`, the evidence lower bound
#
# .. math::
#
#     \mathcal{L}(x) = \underbrace{\mathbb{E}_{q_\phi(z|x)}[\log p_\theta(x \mid z)]}
#     _{\text{reconstruction}}
#     - \underbrace{\mathrm{KL}\big(q_\phi(z \mid x)\,\|\,p(z)\big)}_{\text{KL}},
#     \qquad \log p(x) - \mathcal{L}(x) = \mathrm{KL}\big(q_\phi(z|x)\,\|\,p(z|x)\big).
#
# The reconstruction term is estimated with the reparameterized draw; the KL of two
# Normals is in closed form,
# :math:`\tfrac12 \sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2)`.
# :func:`pyro_vae.elbo_terms` reads both off the traces, per data point, in nats:

terms = elbo_terms(vae.model, vae.guide, x)
for key in ("reconstruction", "kl", "elbo"):
    print(f"{key:>15}: {terms[key].mean().item():8.3f} nats (untrained)")
print("KL method:", terms.kl_method)
mu, sd = q.mean, q.stddev  # (5, 8) each
kl = 0.5 * (mu**2 + sd**2 - 1 - 2 * sd.log()).sum(-1)  # (5,)
print("closed-form KL by hand:", kl.mean().item())

# %%
# Training the VAE and the autoencoder
# ------------------------------------
# :func:`pyro_vae.fit` maximizes the ELBO with Adam. The same model with the ``delta``
# guide, :math:`q(z|x) = \delta(z - \mu_\phi(x))`, is a deterministic autoencoder: its
# objective is :math:`\log p(x \mid \mu(x)) + \log p(\mu(x))`, a reconstruction plus a
# penalty :math:`\tfrac12\|\mu(x)\|^2` on the code. There is no entropy term, so nothing
# stops the codes from shrinking.


def train(guide: str) -> VAE:
    config = RunConfig(
        VAEConfig(latent_dim=LATENT, guide=guide),
        TrainConfig(epochs=EPOCHS, eval_num_samples=200, eval_num_points=300, seed=0),
    )
    result = fit(config, dataset=digits, write=False, progress=False)
    shown = {k: round(v, 2) for k, v in result.summary.items() if k.startswith("test_")}
    print(f"{guide:>6} guide, {EPOCHS} epochs: {shown}")
    return result.vae


vae = train("normal")
ae = train("delta")

# %%
# The VAE reports an importance-weighted NLL (``test_nll``, a bound on
# :math:`-\log p(x)`); the autoencoder reports none: its "ELBO" is not a bound on
# anything, because a point mass has no density to importance-sample from.
#
# Both reconstruct the test digits:

test = torch.bernoulli(digits.test[:16], generator=torch.Generator().manual_seed(1))
fig, axes = plt.subplots(1, 3, figsize=(12, 2.6))
show_images(axes[0], test, "binarized test digits")
show_images(axes[1], vae.reconstruct(test), "VAE reconstructions")
show_images(axes[2], ae.reconstruct(test), "autoencoder reconstructions")
plt.show()

# %%
# New data from each: prior samples
# ---------------------------------
# To generate, draw :math:`z \sim p(z) = \mathcal{N}(0, I)` and decode. Below are the
# means of :math:`p(x|z)` for the same 32 prior draws, left from the VAE, right from the
# autoencoder.

pyro.set_rng_seed(2)
vae_samples = vae.sample(32)  # (32, 1, 8, 8)
pyro.set_rng_seed(2)
ae_samples = ae.sample(32)  # (32, 1, 8, 8)
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
show_images(axes[0], vae_samples, "VAE: z ~ N(0, I), decoded")
show_images(axes[1], ae_samples, "autoencoder: z ~ N(0, I), decoded")
plt.show()

# %%
# Why only the VAE generates
# --------------------------
# The decoder has only learned to decode codes that the encoder produces. A prior draw
# makes sense only if it lands where those codes are. Compare the spread of the codes
# with the prior's (standard deviation 1 in every direction). For the VAE the relevant
# codes are draws from the *aggregate posterior* :math:`q(z) = \frac1N \sum_n q(z|x_n)`;
# for the autoencoder they are the points :math:`\mu(x_n)`.

with torch.no_grad():
    train_x = torch.bernoulli(digits.train, generator=torch.Generator().manual_seed(3))
    vae_codes = vae.guide.posterior(vae.guide.features(train_x)).sample()  # (N, 8)
    ae_codes = ae.guide.posterior(ae.guide.features(train_x)).mean  # (N, 8)
    prior_draws = vae.model.prior().sample((train_x.shape[0],))  # (N, 8)
vae_sd, ae_sd = vae_codes.std(0), ae_codes.std(0)  # (8,) each
print("sd per dimension, VAE aggregate posterior:", vae_sd.numpy().round(2))
print("sd per dimension, autoencoder codes:      ", ae_sd.numpy().round(2))
print(
    f"mean norm: prior {prior_draws.norm(dim=1).mean():.2f}, VAE codes "
    f"{vae_codes.norm(dim=1).mean():.2f}, autoencoder codes {ae_codes.norm(dim=1).mean():.2f}"
)

fig, ax = plt.subplots(figsize=(6, 3.5))
bins = torch.linspace(0, 6, 41).numpy()
ax.hist(prior_draws.norm(dim=1).numpy(), bins, alpha=0.5, density=True, label="prior p(z)")
ax.hist(vae_codes.norm(dim=1).numpy(), bins, alpha=0.5, density=True, label="VAE q(z)")
ax.hist(ae_codes.norm(dim=1).numpy(), bins, alpha=0.5, density=True, label="autoencoder μ(x)")
ax.set_xlabel("‖z‖")
ax.set_ylabel("density")
ax.legend()
plt.show()

# %%
# The autoencoder's codes sit in a small ball around the origin: the penalty
# :math:`\tfrac12\|\mu(x)\|^2` shrinks them and the decoder's first layer scales them
# back up, at no cost. Prior draws fall mostly outside that ball, where the decoder was
# never trained, which is why its samples above look like blots rather than digits.
# The VAE cannot do this: shrinking :math:`\sigma_\phi(x)` toward zero costs
# :math:`-\log \sigma_j` nats per dimension in the KL, so its aggregate posterior stays
# spread like the prior wherever a dimension is used, and the dimensions it does not use
# collapse onto the prior exactly (``sd`` near 1 in the first printout for those,
# since then :math:`q(z|x) = p(z)`). This check holds in this run:

assert ae_sd.max() < vae_sd.max(), "the autoencoder's codes should be the more concentrated"
assert ae_codes.norm(dim=1).mean() < 0.5 * prior_draws.norm(dim=1).mean()

# %%
# Next: tutorial 2 swaps the prior and the likelihood.
