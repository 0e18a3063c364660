"""On trained tiny models: exact round trips, and a rate equal to the negative ELBO.

The statistic: BB-ANS adds, per point, a one-sample estimate of -ELBO/ln 2 at the latent
buckets (the bits-back draw is the sample), so over N points the payload is
sum_i -ELBO_i/ln 2 plus a Monte Carlo error with standard deviation
sqrt(sum_i var_i), var_i the variance of the one-sample estimate (Monte Carlo KL), plus
the discretization and quantization overhead (bounded by 1%). The clean bits and the
container are outside the payload.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, compress, decompress, elbo_terms, fit
from pyro_vae.compression import inspect
from pyro_vae.data import Dataset, load_dataset, static_binarize

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits(kind: str) -> Dataset:
    d = load_dataset("digits")
    if kind == "binary":
        f = lambda x, s: static_binarize(x, s)  # noqa: E731
    elif kind == "8bit":
        f = lambda x, s: torch.round(x * 255) / 255  # noqa: E731
    else:  # counts 0..16
        f = lambda x, s: torch.round(x * 16)  # noqa: E731
    return Dataset(f"digits-{kind}", f(d.train, 1), f(d.valid, 2), f(d.test, 3))


def _train(
    likelihood: str, guide: str, data: Dataset, epochs: int, prior: str = "normal"
) -> object:
    vae = VAEConfig(data_shape=(1, 8, 8), latent_dim=4, hidden=(64,), likelihood=likelihood,
                    guide=guide, prior=prior)  # fmt: skip
    train = TrainConfig(epochs=epochs, binarize="none", seed=0, device="cpu",
                        eval_num_points=20, eval_num_samples=2)  # fmt: skip
    return fit(RunConfig(vae=vae, train=train), dataset=data, progress=False, write=False).vae


@pytest.mark.parametrize(
    ("likelihood", "guide", "kind"),
    [
        ("bernoulli", "lowrank", "binary"),
        ("bernoulli", "full", "binary"),
        ("bernoulli", "iaf", "binary"),
        ("categorical256", "normal", "8bit"),
        ("discretized-logistic", "normal", "8bit"),
        ("poisson", "normal", "counts"),
        ("negative-binomial", "normal", "counts"),
    ],
)
def test_round_trip_trained(likelihood: str, guide: str, kind: str) -> None:
    data = _digits(kind)
    vae = _train(likelihood, guide, data, epochs=2)
    x = data.test[:25]
    assert torch.equal(decompress(vae, compress(vae, x)), x)


@pytest.mark.parametrize(("prior", "points"), [("normal", 300), ("mixture", 100)])
def test_rate_matches_the_negative_elbo_on_a_trained_model(prior: str, points: int) -> None:
    data = _digits("binary")
    vae = _train("bernoulli", "normal", data, epochs=10, prior=prior)
    x = data.test[:points]
    info = inspect(compress(vae, x))
    pyro.set_rng_seed(0)
    with torch.no_grad():
        draws = torch.stack(
            [elbo_terms(vae.model, vae.guide, x, analytic_kl=False)["elbo"] for _ in range(64)]
        ) / -math.log(2)  # (64, N) one-sample code lengths in bits
    ideal = float(draws.mean(0).sum())
    spread = float(draws.var(0).sum().sqrt())  # sd of a sum of N one-sample estimates
    overhead = 0.01 * ideal  # the stated bound: discretization + 24-bit probabilities
    assert abs(info.payload_bits - ideal) <= 4 * spread + overhead, (info, ideal, spread)
    assert info.payload_bits <= 1.01 * ideal + 4 * spread
    assert info.clean_bits <= 4 * 12 + 64 + 32  # latent_dim * latent_bits + 64, in words
