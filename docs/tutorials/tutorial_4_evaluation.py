"""
Evaluating a VAE honestly
=========================

A training curve of the ELBO says little about a VAE. The ELBO is a lower bound whose
gap, :math:`\\mathrm{KL}(q(z|x)\\,\\|\\,p(z|x))`, changes with the guide; a model can
score well while ignoring most of its latent dimensions; and the guide can be a poor
approximation of the posterior in ways a single number hides. This tutorial trains one
VAE and then asks it the questions of :mod:`pyro_vae.analysis.diagnostics` (the same ones
``pyro-vae evaluate RUN_DIR --gaps N --mcmc N`` answers):

- the importance-weighted NLL (Burda et al. 2015) and how it depends on :math:`k`;
- active units and the KL of each latent dimension;
- the Pareto :math:`\\hat k` of the importance weights, from ArviZ (Yao et al. 2018);
- the approximation and amortization gaps (Cremer, Li & Duvenaud 2018);
- NUTS on the exact posterior :math:`p(z|x)` of a few points, with ArviZ's
  :math:`\\hat R` and effective sample size.

Budget: about a minute on two CPU cores; ``PYRO_VAE_TUTORIAL_EPOCHS`` trains longer.
"""

# %%
# A VAE to evaluate
# -----------------

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pyro

from pyro_vae import (
    RunConfig,
    TrainConfig,
    VAEConfig,
    elbo_terms,
    fit,
    load_dataset,
    log_likelihood,
)
from pyro_vae.analysis import diagnostics as diag
from pyro_vae.training.fit import evaluation_split

EPOCHS = int(os.environ.get("PYRO_VAE_TUTORIAL_EPOCHS", "30"))  # raise to train longer
NUTS_POINTS = 2  # test points whose posterior NUTS samples
NUTS_DRAWS = 150  # draws per chain after as many warm-up steps

digits = load_dataset("digits")
config = RunConfig(
    VAEConfig(latent_dim=6, hidden=(128,)),
    TrainConfig(epochs=EPOCHS, eval_num_samples=100, eval_num_points=300, seed=0),
)
vae = fit(config, dataset=digits, write=False, progress=False).vae
model, guide = vae.model, vae.guide
test = evaluation_split(digits, "test", "dynamic")  # (300, 1, 8, 8), binarized once
pyro.set_rng_seed(0)

# %%
# The ELBO and the importance-weighted bound
# ------------------------------------------
# With :math:`k` draws from the guide,
#
# .. math::
#
#     \mathcal{L}_k(x) = \mathbb{E}\Big[\log \frac1k \sum_{i=1}^k
#     \frac{p(x, z_i)}{q(z_i|x)}\Big] \le \log p(x),
#     \qquad \mathcal{L}_1 = \text{ELBO}, \quad \mathcal{L}_k \uparrow \log p(x),
#
# so :math:`-\mathcal{L}_k` is an upper bound on the NLL that tightens with :math:`k`
# (Burda et al. 2015). :func:`pyro_vae.log_likelihood` computes it in chunks, so large
# :math:`k` fits in memory.

terms = elbo_terms(model, guide, test)
print(
    f"test ELBO {terms['elbo'].mean():.3f} = reconstruction "
    f"{terms['reconstruction'].mean():.3f} - KL {terms['kl'].mean():.3f} nats"
)
ks = [1, 10, 100, 1000]
nll = {k: -float(log_likelihood(model, guide, test, num_samples=k).mean()) for k in ks}
for k, value in nll.items():
    print(f"IW NLL, k={k:<5}: {value:.3f} nats")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ks, list(nll.values()), "o-")
ax.set_xscale("log")
ax.set_xlabel("k (importance samples)")
ax.set_ylabel("-L_k (nats per image)")
ax.set_title("the bound tightens with k")
plt.show()

# %%
# The drop from :math:`k = 1` to :math:`k = 1000` is an estimate of how much of the
# ELBO's gap the guide leaves on the table: here
print(f"{nll[1] - nll[1000]:.3f} nats per image")

# %%
# Active units and the KL per dimension
# -------------------------------------
# A latent dimension that the guide does not move with :math:`x` carries no information.
# Burda et al. (2015) count a unit :math:`j` as *active* when
# :math:`\mathrm{Cov}_x\, \mathbb{E}_{q(z|x)}[z_j] > 0.01`. The KL of each dimension,
# :math:`\mathrm{KL}(q(z_j|x)\,\|\,p(z_j))` averaged over the test set, tells the same
# story in nats: an inactive unit's posterior is the prior, and its KL is near zero.

units = diag.active_units(guide, test)
kl = diag.kl_per_dim(model, guide, test)
print(f"active units: {units.count} of {len(units.variances)} ({kl.method} KL per dim)")
for j, (var, nats) in enumerate(zip(units.variances, kl.values, strict=True)):
    print(f"  z_{j}: Cov_x E_q[z_j] = {var:.3f}   KL = {nats:.3f} nats")
print(f"sum of the KLs per dim {sum(kl.values):.3f} = KL {terms['kl'].mean():.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].bar(range(len(kl.values)), kl.values)
axes[0].set_xlabel("latent dimension j")
axes[0].set_ylabel("KL (nats)")
axes[1].bar(range(len(units.variances)), units.variances)
axes[1].axhline(units.threshold, color="k", ls="--", label="threshold 0.01")
axes[1].set_yscale("log")
axes[1].set_xlabel("latent dimension j")
axes[1].set_ylabel("Cov_x E_q[z_j]")
axes[1].legend()
fig.tight_layout()
plt.show()

# %%
# Is the guide a good proposal? PSIS :math:`\hat k`
# -------------------------------------------------
# The IW bound is only as good as the importance weights
# :math:`w = p(x, z) / q(z|x)`. Pareto-smoothed importance sampling fits a generalized
# Pareto distribution to the largest weights of each point; its shape :math:`\hat k`
# says how heavy their tail is (Yao et al. 2018). Below 0.5 the weights have finite
# variance; above 0.7 the estimate of :math:`\log p(x)` at that point is unreliable,
# and :math:`q` misses posterior mass there.

khat = diag.psis_khat(model, guide, test, num_samples=1000)  # (300,)
summary = diag.khat_summary(khat)
print({key: round(value, 3) for key, value in summary.items()})
print("worst points:", diag.worst_points(khat, num=3))

fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(khat, bins=30)
for threshold in (0.5, 0.7):
    ax.axvline(threshold, color="k", ls="--")
ax.set_xlabel("Pareto k-hat")
ax.set_ylabel("test points")
plt.show()

# %%
# Where the ELBO's gap comes from: amortization
# ---------------------------------------------
# The gap :math:`\log p(x) - \mathcal{L}[q_\phi]` splits in two (Cremer et al. 2018):
#
# .. math::
#
#     \log p(x) - \mathcal{L}[q_\phi]
#     = \underbrace{\log p(x) - \mathcal{L}[q^*]}_{\text{approximation gap}}
#     + \underbrace{\mathcal{L}[q^*] - \mathcal{L}[q_\phi]}_{\text{amortization gap}},
#
# where :math:`q^*` is the best diagonal Normal for each point on its own, found by
# optimizing per-point parameters with the model fixed. The approximation gap is the
# price of the family; the amortization gap is the price of one encoder for all points.

gaps = diag.inference_gaps(model, guide, test[:20], steps=200, num_samples=500)
for key in ("elbo_amortized", "elbo_optimized", "log_px", "approximation_gap", "amortization_gap"):
    print(f"{key:>18}: {gaps[key]['mean']:8.3f} ± {gaps[key]['se']:.3f} (se over 20 points)")

# %%
# NUTS on the exact posterior
# ---------------------------
# For a few points, draw from :math:`p(z|x) \propto p(z)\,p(x|z)` itself with NUTS
# (Hoffman & Gelman 2014) and set the draws beside the guide's. Two chains per point
# give ArviZ's :math:`\hat R` (near 1 when the chains agree) and the bulk effective
# sample size. The chains are short here, so check :math:`\hat R` before trusting them.

points = test[:NUTS_POINTS]  # (2, 1, 8, 8)
nuts = diag.nuts_posterior(
    model, points, num_samples=NUTS_DRAWS, warmup_steps=NUTS_DRAWS, num_chains=2, max_tree_depth=6
)
az = diag.arviz()
table = az.summary(nuts, kind="diagnostics")
print(table[["ess_bulk", "r_hat"]].describe().loc[["min", "max"]])
moments = diag.compare_posteriors(nuts, guide, points)
print(f"max r_hat {moments['max_r_hat']:.3f}, min bulk ESS {moments['min_ess_bulk']:.0f}")
rows = moments["moments"]
print("point dim   NUTS mean  guide mean   NUTS sd  guide sd")
for row in rows:
    print(
        f"{row['point']:>5} {row['dim']:>3} {row['nuts_mean']:>11.3f} {row['q_mean']:>11.3f}"
        f" {row['nuts_sd']:>9.3f} {row['q_sd']:>9.3f}"
    )

# %%
# The two most informative dimensions (largest KL) of the first point, NUTS draws
# against draws from :math:`q(z|x)`:

a, b = np.argsort(kl.values)[-2:][::-1].tolist()
nuts_z = nuts.posterior["z"].sel(point=0).values.reshape(-1, len(kl.values))  # (C*S, L)
guide_z = diag.posterior_samples(guide, points[:1], num_samples=300).posterior["z"]
guide_z = guide_z.values.reshape(-1, len(kl.values))  # (300, L)
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter(nuts_z[:, a], nuts_z[:, b], s=6, alpha=0.5, label="NUTS, p(z|x)")
ax.scatter(guide_z[:, a], guide_z[:, b], s=6, alpha=0.5, label="guide, q(z|x)")
ax.set_xlabel(f"z_{a}")
ax.set_ylabel(f"z_{b}")
ax.legend()
plt.show()

# %%
# Read together: the IW NLL is the number to compare models by; active units and the
# KL per dimension show how much of the latent space is used; :math:`\hat k` flags the
# points where that NLL is unreliable; the gaps say whether a richer family or a better
# encoder would help more; and NUTS shows what the posterior the guide approximates
# actually looks like.
