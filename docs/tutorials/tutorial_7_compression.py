"""
A VAE is a compressor
=====================

DRAFT (issue 15): rename to ``tutorial_6_compression.py`` to publish it in the gallery.

A VAE's negative ELBO is usually read as a loss. It is also a code length: with bits-back
coding (Hinton & van Camp 1993; Frey & Hinton 1997) and asymmetric numeral systems
(BB-ANS, Townsend, Bird & Barber 2019), a trained VAE is a lossless compressor whose file
size is, to within a fraction of a percent, :math:`-\\mathrm{ELBO}/\\ln 2` bits per point.
This tutorial

- reads the ELBO as a code length, term by term;
- compresses a batch with :func:`pyro_vae.compress`, checks the size against the ELBO,
  and decompresses it exactly;
- watches the coder's stack grow point by point;
- draws the rate–distortion view of the same trade-off (Alemi et al. 2018).

Budget: under a minute on two CPU cores; ``PYRO_VAE_TUTORIAL_EPOCHS`` trains longer.
"""

# %%
# The ELBO as a code length
# -------------------------
#
# .. math::
#     -\mathrm{ELBO}(x) = \underbrace{-\mathbb{E}_{q(z|x)}[\log p(x|z)]}_{\text{bits for }x
#     \text{ given } z} + \underbrace{\mathrm{KL}(q(z|x)\,\|\,p(z))}_{\text{bits for } z
#     \text{, less the bits got back}}
#
# Sending :math:`z \sim q(z|x)` under the prior costs :math:`-\log p(z)`; sending :math:`x`
# under :math:`p(x|z)` costs :math:`-\log p(x|z)`. The receiver, having decoded :math:`x`,
# can recompute :math:`q(z|x)` and recover the random bits that chose :math:`z`:
# :math:`-\log q(z|x)` of them come *back*. Net, on average, the negative ELBO. BB-ANS
# makes the "random bits" the compressed stack itself: it *decodes* :math:`z` from the
# stack under :math:`q(z|x)`, then encodes :math:`x` and :math:`z`. The latent is coded in
# buckets of equal prior mass (``CodecConfig.latent_bits``, 2**12 per dimension).

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, compress, decompress, elbo_terms, fit
from pyro_vae.compression import CodecConfig, inspect
from pyro_vae.data import Dataset, load_dataset, static_binarize

EPOCHS = int(os.environ.get("PYRO_VAE_TUTORIAL_EPOCHS", "20"))
digits = load_dataset("digits")
binary = Dataset(
    "digits-binary",
    static_binarize(digits.train, 1),
    static_binarize(digits.valid, 2),
    static_binarize(digits.test, 3),
)
config = RunConfig(
    VAEConfig(latent_dim=6, hidden=(128,), likelihood="bernoulli"),
    TrainConfig(epochs=EPOCHS, binarize="none", eval_num_points=100, eval_num_samples=10),
)
vae = fit(config, dataset=binary, write=False, progress=False).vae
x = binary.test  # (300, 1, 8, 8) in {0, 1}

# %%
# Compress, check the size, decompress
# ------------------------------------

data = compress(vae, x)
info = inspect(data)
pyro.set_rng_seed(0)
with torch.no_grad():
    neg_elbo_bits = -float(elbo_terms(vae.model, vae.guide, x, num_particles=20)["elbo"].sum())
neg_elbo_bits /= math.log(2)
print(f"-ELBO: {neg_elbo_bits:.0f} bits for {len(x)} images")
print(f"bits-back payload: {info.payload_bits} bits ({info.payload_bits / neg_elbo_bits:.4f} x)")
print(f"clean bits (one-off start-up): {info.clean_bits}; container: {info.container_bits}")
print(f"{info.bits_per_dim:.3f} bits per pixel in the file, against 1 bit raw")
assert torch.equal(decompress(vae, data), x)  # lossless: every pixel equal

# %%
# The stack at work
# -----------------
#
# Compressing the first ``n`` points for growing ``n`` shows the stack: after the clean
# bits are spent on the first latent draw, it grows by about one negative ELBO per point.

sizes = [inspect(compress(vae, x[:n])).payload_bits for n in range(0, 61, 5)]
plt.figure(figsize=(5, 3))
plt.plot(range(0, 61, 5), sizes, "o-", label="bits-back payload")
per_point = neg_elbo_bits / len(x)
plt.plot([0, 60], [0, 60 * per_point], "--", label="-ELBO / ln 2")
plt.xlabel("points coded")
plt.ylabel("bits")
plt.legend()
plt.tight_layout()

# %%
# Precision: the buckets of the latent
# ------------------------------------
#
# Fewer buckets coarsen the latent and cost rate; 2**12 per dimension is already within
# the Monte Carlo noise of the ELBO.

for bits in (4, 6, 8, 12):
    size = inspect(compress(vae, x, CodecConfig(latent_bits=bits, coarse_bits=bits // 2)))
    print(f"latent_bits={bits:2d}: {size.payload_bits / neg_elbo_bits:.4f} x the -ELBO")

# %%
# Rate and distortion
# -------------------
#
# Alemi et al. (2018), "Fixing a broken ELBO": the same two terms, rate
# :math:`R = \mathrm{KL}` and distortion :math:`D = -\mathbb{E}_q[\log p(x|z)]`, trace a
# curve as the :math:`\beta`-VAE's weight on the rate changes. The lossless code length
# is :math:`R + D` (the diagonal lines); a small :math:`\beta` spends bits in the latent,
# a large one in the pixels.

points = []
for beta in (0.1, 0.5, 1.0, 4.0):
    cfg = RunConfig(config.vae, TrainConfig(epochs=EPOCHS, binarize="none",
                                            objective=f"beta:beta={beta}",
                                            eval_num_points=100, eval_num_samples=10))  # fmt: skip
    model = fit(cfg, dataset=binary, write=False, progress=False).vae
    with torch.no_grad():
        terms = elbo_terms(model.model, model.guide, x, num_particles=5)
    points.append((float(terms["kl"].mean()), -float(terms["reconstruction"].mean())))
rate, distortion = np.array(points).T
plt.figure(figsize=(4, 4))
plt.plot(rate, distortion, "o-")
for (r, d), beta in zip(points, (0.1, 0.5, 1.0, 4.0), strict=True):
    plt.annotate(f"β={beta}", (r, d))
plt.xlabel("rate: KL, nats per point")
plt.ylabel("distortion: -reconstruction, nats per point")
plt.tight_layout()
