"""Exact round trips: every discrete likelihood, every guide family with a density."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_helpers import DISCRETE, GUIDES, SHAPE, random_data, tiny_vae

from pyro_vae import compress, decompress
from pyro_vae.compression import CodecConfig, inspect

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("guide", GUIDES)
@pytest.mark.parametrize("likelihood", DISCRETE)
def test_round_trip_untrained(likelihood: str, guide: str) -> None:
    vae = tiny_vae(likelihood, guide)
    for n, seed in ((7, 0), (1, 1), (0, 2)):
        x = random_data(likelihood, n, seed)
        data = compress(vae, x)
        y = decompress(vae, data)
        assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.shape == x.shape
        assert torch.equal(x, y)
        assert inspect(data).points == n


@pytest.mark.parametrize("likelihood", DISCRETE)
def test_numpy_integer_data_come_back_as_they_went(likelihood: str) -> None:
    """uint8 images, int64 counts and bool pixels: same kind, dtype and values."""
    vae = tiny_vae(likelihood)
    x = random_data(likelihood, 5, seed=3).numpy()
    if likelihood in ("categorical256", "discretized-logistic"):
        x = np.rint(x * 255).astype(np.uint8)
    elif likelihood == "bernoulli":
        x = x.astype(bool)
    else:
        x = x.astype(np.int64)
    y = decompress(vae, compress(vae, x))
    assert isinstance(y, np.ndarray) and y.dtype == x.dtype and np.array_equal(x, y)


def test_float64_8bit_data_and_large_counts() -> None:
    vae = tiny_vae("discretized-logistic")
    x = torch.randint(0, 256, (4, *SHAPE), dtype=torch.float64) / 255
    assert torch.equal(decompress(vae, compress(vae, x)), x)
    vae = tiny_vae("negative-binomial")
    x = torch.poisson(torch.full((3, *SHAPE), 300.0))
    assert torch.equal(decompress(vae, compress(vae, x)), x)


def test_learned_normal_prior_and_coarse_settings() -> None:
    vae = tiny_vae("bernoulli", "full", prior="learned-normal")
    with torch.no_grad():
        vae.model.prior.loc.add_(0.7)
        vae.model.prior.raw_scale.sub_(1.0)
    x = random_data("bernoulli", 6)
    for config in (CodecConfig(), CodecConfig(latent_bits=8, coarse_bits=3, clean_bits=1000)):
        assert torch.equal(decompress(vae, compress(vae, x, config)), x)


@pytest.mark.parametrize(
    ("prior", "guide"),
    [("mixture:components=3", "normal"), ("mixture:components=3", "lowrank"),
     ("vamp:components=4", "normal")],
)  # fmt: skip
def test_mixture_priors_code_by_conditional_quantiles(prior: str, guide: str) -> None:
    vae = tiny_vae("categorical256", guide, prior=prior)
    for n, seed in ((5, 0), (1, 1), (0, 2)):
        x = random_data("categorical256", n, seed)
        assert torch.equal(decompress(vae, compress(vae, x)), x)


def test_compressing_twice_gives_the_same_bytes() -> None:
    vae = tiny_vae("categorical256", "iaf")
    x = random_data("categorical256", 5)
    first = compress(vae, x)
    assert compress(vae, x.clone()) == first
    assert compress(vae, x, CodecConfig(clean_seed=1)) != first  # the seed is the only noise


def test_progress_is_called_once_per_point() -> None:
    vae, x = tiny_vae(), random_data("bernoulli", 4)
    calls: list[int] = []
    data = compress(vae, x, progress=calls.append)
    decompress(vae, data, progress=calls.append)
    assert calls == [1] * 8
