"""
Using it in your own model
==========================

pyro-vae's parts are registered classes, and its model and guide are plain Pyro
programs. So a prior, likelihood or guide family of your own lives in *your* file,
registers itself with a decorator, and then works everywhere a built-in one does: in
:class:`pyro_vae.VAEConfig`, with :func:`pyro_vae.fit`, on the command line with
``--plugin FILE.py``, and in saved runs. And since ``vae.model`` and ``vae.guide`` are
ordinary Pyro programs, Pyro's own inference tools (``SVI``, ``Predictive``,
``Importance``) run on them unchanged. The last section scales training out to several
processes with ``torchrun``.

Budget: well under a minute on two CPU cores; ``PYRO_VAE_TUTORIAL_EPOCHS`` trains longer.
"""

# %%
# Your parts, in your file
# ------------------------
# Three small classes, each registered under a name of your choosing:
#
# - a prior: a Laplace with unit variance, :math:`p(z) = \prod_j \frac{1}{2b}
#   e^{-|z_j|/b}`, :math:`b = 1/\sqrt2` (sparser codes than a Normal);
# - a likelihood: a Bernoulli with a floor, :math:`p(x_d{=}1|z) = \epsilon + (1 - 2
#   \epsilon)\,\sigma(\ell_d)`, which cannot be certain of any pixel, so one flipped pixel
#   costs at most :math:`-\log \epsilon` nats;
# - a guide family: a Student-t posterior with learned location and scale,
#   :math:`q(z|x) = \prod_j t_\nu(z_j; \mu_j(x), \sigma_j(x))`, heavier-tailed than a
#   Normal.
#
# A component's keyword-only constructor arguments (``eps``, ``df``) become its spec
# parameters, e.g. ``"floored-bernoulli:eps=0.01"``. The file is written to a temporary
# folder here; in your project it is just a ``.py`` file next to your code.

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

from pyro_vae import VAE, VAEConfig, load_dataset, load_plugin, log_likelihood
from pyro_vae.components import component_names

EPOCHS = int(os.environ.get("PYRO_VAE_TUTORIAL_EPOCHS", "20"))  # raise to train longer
RUN_TORCHRUN = os.environ.get("PYRO_VAE_TUTORIAL_TORCHRUN", "1") == "1"  # 0: only show it

PARTS = '''\
"""My parts for pyro-vae: a Laplace prior, a floored Bernoulli, a Student-t guide."""

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.guides import GUIDES, Posterior
from pyro_vae.models import LIKELIHOODS, PRIORS, Likelihood, Prior


@PRIORS.register("unit-laplace")
class UnitLaplace(Prior):
    """p(z) = prod_j Laplace(z_j; 0, 1/sqrt(2)): unit variance, heavier tails."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))  # (L,)
        self.register_buffer("scale", torch.full((latent_dim,), 1 / math.sqrt(2)))  # (L,)

    def forward(self) -> dist.TorchDistribution:
        return dist.Laplace(self.loc, self.scale).to_event(1)


@LIKELIHOODS.register("floored-bernoulli")
class FlooredBernoulli(Likelihood):
    """p(x_d = 1 | z) = eps + (1 - 2 eps) sigmoid(logit_d), for binary data."""

    binary_data = True  # binarize "auto" (the default) binarizes grey data for it

    def __init__(self, data_shape: tuple[int, ...], *, eps: float = 0.01) -> None:
        super().__init__(data_shape)
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        self.eps = eps

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split(raw)  # (..., *data_shape)
        probs = self.eps + (1 - 2 * self.eps) * torch.sigmoid(logits)  # (..., *data_shape)
        return dist.Bernoulli(probs=probs).to_event(len(self.data_shape))

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("floored-bernoulli needs binary data: use --binarize dynamic")


@GUIDES.register("student-t")
class StudentTPosterior(Posterior):
    """q(z|x) = prod_j StudentT(z_j; df, mu_j(x), sigma_j(x))."""

    def __init__(self, feature_dim: int, latent_dim: int, *, df: float = 5.0) -> None:
        super().__init__()
        self.df = df
        self.head = nn.Linear(feature_dim, 2 * latent_dim)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.head(h).chunk(2, dim=-1)  # (..., L) each
        scale = F.softplus(raw) + 1e-3  # (..., L)
        return dist.StudentT(self.df, loc, scale).to_event(1)
'''

folder = Path(tempfile.mkdtemp(prefix="pyro-vae-tutorial-5-"))  # every output goes here
parts_file = folder / "my_parts.py"
parts_file.write_text(PARTS)
load_plugin(parts_file)  # imports the file: its decorators register the three classes
names = component_names()
print("unit-laplace" in names["priors"], "floored-bernoulli" in names["likelihoods"])
print("guides:", names["guides"])

# %%
# Build a VAE from them by name, exactly as with the built-in parts:

pyro.set_rng_seed(0)
config = VAEConfig(
    latent_dim=4,
    hidden=(128,),
    prior="unit-laplace",
    likelihood="floored-bernoulli:eps=0.01",
    guide="student-t:df=5",
)
vae = VAE(config)
digits = load_dataset("digits")
gen = torch.Generator().manual_seed(0)
test = torch.bernoulli(digits.test, generator=gen)  # (300, 1, 8, 8), binarized once
vae.check_data(test)
trace = pyro.poutine.trace(vae.guide).get_trace(test[:3])
print(trace.nodes["z"]["fn"])

# %%
# Plain ``pyro.infer.SVI``
# ------------------------
# :func:`pyro_vae.fit` is one way to train; Pyro's ``SVI`` is another, on the same
# pair. The networks are registered with ``pyro.module`` under names unique to this
# instance, so ``SVI`` finds them in the param store. There is no closed-form KL between
# a Student-t and a Laplace, and ``Trace_ELBO`` does not need one: it estimates the
# whole ELBO by Monte Carlo. The training data are binarized afresh every epoch.

svi = pyro.infer.SVI(
    vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=pyro.infer.Trace_ELBO()
)
losses = []
for _ in range(EPOCHS):
    x_train = torch.bernoulli(digits.train, generator=gen)  # (1297, 1, 8, 8)
    total = 0.0
    for idx in torch.randperm(x_train.shape[0], generator=gen).split(100):
        total += svi.step(x_train[idx])  # minus the ELBO of the batch, summed over points
    losses.append(total / x_train.shape[0])  # nats per data point
print(f"train loss per point: epoch 1 {losses[0]:.2f}, epoch {EPOCHS} {losses[-1]:.2f}")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(range(1, EPOCHS + 1), losses)
ax.set_xlabel("epoch")
ax.set_ylabel("-ELBO per data point (nats)")
ax.set_title("pyro.infer.SVI on the plugin VAE")
plt.show()

# %%
# ``Predictive``: prior and posterior predictive draws
# ----------------------------------------------------
# ``Predictive(model)`` runs the model forward: new :math:`z \sim p(z)` and
# :math:`x \sim p(x|z)`. With ``guide=vae.guide`` it draws :math:`z \sim q(z|x)`
# first; the model observes ``x``, so ``poutine.uncondition`` lets it draw a new
# :math:`x` as well (a posterior predictive draw, a noisy reconstruction).

prior_pred = pyro.infer.Predictive(vae.model, num_samples=1)(None, batch_size=16)
print({site: tuple(value.shape) for site, value in prior_pred.items()})
unconditioned = pyro.poutine.uncondition(vae.model)
post_pred = pyro.infer.Predictive(unconditioned, guide=vae.guide, num_samples=1)(test[:16])
print({site: tuple(value.shape) for site, value in post_pred.items()})


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


fig, axes = plt.subplots(1, 3, figsize=(12, 2.6))
show_images(axes[0], test[:16], "test digits")
show_images(axes[1], post_pred["x"][0], "x ~ p(x|z), z ~ q(z|x)")
show_images(axes[2], prior_pred["x"][0], "x ~ p(x|z), z ~ p(z)")
plt.show()

# %%
# ``Importance``: log p(x) by importance sampling
# -----------------------------------------------
# Pyro's ``Importance`` draws from the guide and weights by
# :math:`p(x, z) / q(z|x)`; the log of the mean weight estimates :math:`\log p(x)`.
# For one point this is the same estimator as :func:`pyro_vae.log_likelihood`
# (Burda et al.'s bound with :math:`k` draws), which vectorizes the draws:

k = 200
for n in range(3):
    point = test[n : n + 1]  # (1, 1, 8, 8)
    importance = pyro.infer.Importance(vae.model, guide=vae.guide, num_samples=k).run(point)
    ours = log_likelihood(vae.model, vae.guide, point, num_samples=k)  # (1,)
    print(
        f"point {n}: Importance {float(importance.get_log_normalizer()):8.3f}   "
        f"log_likelihood {float(ours[0]):8.3f}  (k={k} each, different draws)"
    )

# %%
# The command line, with ``--plugin``
# -----------------------------------
# The same file makes the names available to every command. A run records which parts
# came from which file in ``config.json``, and loading it later asks for the file
# (``--plugin``, or ``pyro_vae.load(run_dir, plugins=[file])``) rather than importing
# anything by itself.

env = {**os.environ, "OMP_NUM_THREADS": "1"}
fast = ["--latent-dim", "2", "--hidden", "32", "--epochs", "2", "--quiet"]
fast += ["--eval-num-samples", "10", "--eval-num-points", "50"]
parts = ["--prior", "unit-laplace", "--likelihood", "floored-bernoulli:eps=0.01"]
run = folder / "cli-run"
cmd = [sys.executable, "-m", "pyro_vae", "train", "--plugin", str(parts_file), *parts]
cmd += [*fast, "--out", str(run)]
print("pyro-vae", " ".join(cmd[3:]).replace(str(folder), "DIR"))
done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)
print(done.stdout.strip().replace(str(folder), "DIR"))
for record in json.loads((run / "config.json").read_text())["plugins"]:
    print(record["kind"], record["name"], "from", Path(record["file"]).name)

# %%
# Scaling out with torchrun
# -------------------------
# ``pyro-vae train`` under ``torchrun`` trains with PyTorch's DistributedDataParallel:
# each process takes its share of every batch (``--batch-size`` is the global batch),
# gradients are averaged across processes, and only rank 0 writes the run directory and
# reports. On a machine with GPUs, one process per GPU::
#
#     torchrun --nproc_per_node=2 -m pyro_vae train --plugin my_parts.py \
#         --prior unit-laplace --epochs 100 --out runs/ddp
#
# Here two CPU processes talk over gloo on 127.0.0.1, with the tiny settings above
# (set ``PYRO_VAE_TUTORIAL_TORCHRUN=0`` to skip it):


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ddp_run = folder / "ddp-run"
torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
torchrun += ["--master_addr", "127.0.0.1", f"--master_port={free_port()}"]
cmd = [*torchrun, "-m", "pyro_vae", "train", "--plugin", str(parts_file), *parts]
cmd += [*fast, "--out", str(ddp_run)]
if RUN_TORCHRUN:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)
    print(done.stdout.strip().replace(str(folder), "DIR"))
    print(f"two processes, {time.perf_counter() - start:.1f} s including start-up")
    print("files:", sorted(p.name for p in ddp_run.iterdir()))
