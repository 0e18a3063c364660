"""
Semi-supervised learning with enumeration
=========================================

A few labels and many unlabelled images: the semi-supervised VAE M2 of Kingma, Rezende,
Mohamed & Welling (2014) learns a classifier from both. Its class :math:`y` is observed
where a label is kept and a latent variable everywhere else, and Pyro sums it out
*exactly*, by enumeration, instead of sampling it. This tutorial shows the model and the
guide, what ``config_enumerate`` does to them, checks the enumerated ELBO against the sum
over classes written by hand, and trains M2 with more and more labels.

Budget: well under a minute on two CPU cores; ``PYRO_VAE_TUTORIAL_EPOCHS`` trains longer.
"""

# %%
# The model and the guide
# -----------------------
# The generative model draws a class and a style, then the image:
#
# .. math::
#
#     p(x, y, z) = p(y)\, p(z)\, p_\theta(x \mid y, z), \qquad
#     p(y) = \tfrac{1}{C},\ p(z) = \mathcal{N}(0, I).
#
# The guide classifies, then encodes the style given the class:
# :math:`q_\phi(y, z \mid x) = q_\phi(y \mid x)\, q_\phi(z \mid x, y)`, with
# :math:`q_\phi(y \mid x)` a classifier network. Written as Pyro programs (as in Pyro's
# ``examples/vae/ss_vae_M2.py``), the guide marks ``y`` with
# ``infer={"enumerate": "parallel"}``; the decorator ``config_enumerate`` writes that mark
# on every discrete site of a program.
#
# ``pyro_vae`` builds exactly this pair from ``VAEConfig(semi_supervised=True)``: any
# prior, likelihood, guide family for z and network of the registries combines with it.

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from pyro_vae import VAE, RunConfig, TrainConfig, VAEConfig, fit, load_dataset

EPOCHS = int(os.environ.get("PYRO_VAE_TUTORIAL_EPOCHS", "4"))  # raise to train longer
torch.set_num_threads(min(2, torch.get_num_threads()))
pyro.set_rng_seed(0)

digits = load_dataset("digits", progress=False)  # 8x8 digits, 10 classes, bundled
vae = VAE(
    VAEConfig(
        data_shape=digits.data_shape,
        latent_dim=8,
        hidden=(64,),
        semi_supervised=True,
        num_classes=10,
    )
)
print(vae.guide.classifier)  # q(y|x): an encoder of the network, then 10 logits

# %%
# What ``config_enumerate`` does
# ------------------------------
# Under ``poutine.enum`` (what ``TraceEnum_ELBO`` runs the guide in) an enumerated site
# takes *all* its values at once, in a new batch dimension to the left of the plates: ``y``
# becomes the column ``0, 1, ..., 9`` of shape ``(10, 1)``, and every site after it is
# computed for each class, ``z`` of shape ``(10, N, L)``. Labels are passed as ``y`` with
# ``-1`` for a hidden one; a known label pins :math:`q(y|x)` to its class.

x = digits.test[:5].round()  # five binary images
y = torch.tensor([3, -1, -1, 7, -1])  # two labels kept, three hidden
with poutine.trace() as tr, poutine.enum(first_available_dim=-2):
    vae.guide(x, y)
for name in ("y", "z"):
    print(name, tuple(tr.trace.nodes[name]["value"].shape))

# %%
# The ELBO of M2 is then a sum over classes, weighted by :math:`q(y|x)`, not a sampled
# class. For an unlabelled point,
#
# .. math::
#
#     \mathcal{U}(x) = \sum_y q(y|x) \bigl(\mathbb{E}_{q(z|x,y)}[\log p(x|y,z) + \log p(y)
#     + \log p(z) - \log q(z|x,y)] - \log q(y|x)\bigr),
#
# and for a labelled point the same with :math:`q(y|x)` all on its class, the bound
# :math:`\mathcal{L}(x, y)`. Here is ``TraceEnum_ELBO``'s value against that sum computed by
# hand, on the same draws of z (same seed):

elbo = TraceEnum_ELBO(max_plate_nesting=1)
pyro.set_rng_seed(1)
enumerated = -float(elbo.differentiable_loss(vae.model, vae.guide, x, y).detach())
pyro.set_rng_seed(1)
with poutine.trace() as tr, poutine.enum(first_available_dim=-2):
    vae.guide(x, y)
z = tr.trace.nodes["z"]["value"]  # (10, 5, 8): one draw per class and point
model, guide = vae.model, vae.guide
with torch.no_grad():
    log_q_y = guide.label_logits(x, y).log_softmax(-1)  # (5, 10), pinned where labelled
    by_hand = torch.zeros(5)
    for c in range(10):
        yc = torch.full((5,), c)
        q_z = guide.posterior(guide.features(x, yc))
        decoded = model.likelihood(model.decoder(model.decoder_input(z[c], yc)))
        inner = (
            decoded.log_prob(x)
            + torch.log(torch.tensor(0.1))
            + model.prior().log_prob(z[c])
            - q_z.log_prob(z[c])
            - log_q_y[:, c]
        )
        by_hand += log_q_y[:, c].exp() * inner
print(f"TraceEnum_ELBO {enumerated:.4f}   sum over classes by hand {float(by_hand.sum()):.4f}")

# %%
# Training with a few labels
# --------------------------
# The labelled bound does not train the classifier, so Kingma et al. add
# :math:`\alpha \log q(y|x)` on the labelled points, :math:`\alpha = 0.1 N`
# (``TrainConfig.alpha``). ``TrainConfig.labelled=N`` (``--labelled N`` on the command
# line) does everything: it keeps N labels of the training rows, balanced over the classes
# and chosen by the seed, hides the others, builds M2 and trains it with the objective
# ``elbo-enum`` (``TraceEnum_ELBO`` plus that term). ``test_accuracy`` is the classifier's,
# :math:`\arg\max_y q(y|x)`, and ``test_nll`` sums the class out exactly:
# :math:`\log p(x) = \log \sum_y p(y)\, p(x|y)`, each :math:`p(x|y)` by importance sampling.

accuracy = {}
for labelled in (20, 100, 500):
    config = RunConfig(
        VAEConfig(latent_dim=8, hidden=(64,)),
        TrainConfig(
            labelled=labelled, epochs=EPOCHS, lr=5e-3, eval_num_points=100, eval_num_samples=10
        ),
    )
    result = fit(config, dataset=digits, progress=False, write=False)
    accuracy[labelled] = result.summary["test_accuracy"]
    print(
        f"{labelled:4d} labels: test accuracy {accuracy[labelled]:.3f}, "
        f"NLL {result.summary['test_nll']:.2f} nats"
    )

# %%
# More labels, a better classifier; chance is 0.1. With MNIST, 100 labels and long
# training, the paper's M2 reaches 88% (``python -m benchmarks.semi_supervised``).

fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(list(accuracy), list(accuracy.values()), "o-")
ax.axhline(0.1, color="grey", ls=":", label="chance")
ax.set_xscale("log")
ax.set_xlabel(f"labels used (of {digits.train.shape[0]} training images)")
ax.set_ylabel("test accuracy of q(y|x)")
ax.set_title(f"M2 on the digits, {EPOCHS} epochs")
ax.legend()
fig.tight_layout()

# %%
# The trained model draws a chosen class: ``vae.sample(n, label=k)`` (``pyro-vae sample
# RUN --label K``), and ``pyro-vae train --labelled N`` writes one row per class to
# ``plots/samples_by_class.png``.

images = result.vae.sample(30, label=torch.arange(10).repeat_interleave(3))
fig, axes = plt.subplots(3, 10, figsize=(7, 2.3))
for i, ax in enumerate(axes.T.flat):
    ax.imshow(images[i, 0], cmap="gray_r")
    ax.axis("off")
fig.suptitle("means of p(x|z, y=k), one column per class k")
