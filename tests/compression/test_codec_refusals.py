"""What the coder refuses, each with a message that says why and what works."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_helpers import SHAPE, random_data, tiny_vae

from pyro_vae import compress
from pyro_vae.compression import CodecConfig, CompressionError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("likelihood", ["normal", "laplace", "beta", "continuous-bernoulli"])
def test_a_continuous_likelihood_is_refused_because_a_density_is_not_a_code(
    likelihood: str,
) -> None:
    vae = tiny_vae(likelihood)
    with pytest.raises(CompressionError, match=r"a density is not a code") as e:
        compress(vae, torch.full((2, *SHAPE), 0.5))
    for name in ("bernoulli", "categorical256", "discretized-logistic", "poisson"):
        assert name in str(e.value)
    assert "--" not in str(e.value)  # the library speaks Python, not flags


def test_a_delta_guide_is_refused() -> None:
    with pytest.raises(CompressionError, match=r"point mass.*density"):
        compress(tiny_vae(guide="delta"), random_data("bernoulli", 2))


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"prior": "flow"}, "quantiles"),
        ({"prior": "vamp:components=3", "guide": "full"}, "quantiles"),
        ({"upper_latent_dims": (2,)}, "several stochastic layers"),
        ({"conditional": True, "num_classes": 3}, "conditional"),
    ],
)
def test_models_without_a_route_are_refused(kw: dict, words: str) -> None:
    with pytest.raises(CompressionError, match=words):
        compress(tiny_vae(**kw), random_data("bernoulli", 2))


def test_data_the_likelihood_cannot_code_exactly_are_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot code exactly.*0 and 1"):
        compress(tiny_vae(), torch.full((2, *SHAPE), 0.5))
    x = random_data("categorical256", 2) + 1e-4  # near the grid, not on it
    with pytest.raises(ValueError, match=r"cannot code exactly"):
        compress(tiny_vae("categorical256"), x)
    with pytest.raises(ValueError, match=r"cannot code exactly"):
        compress(tiny_vae("poisson"), torch.full((2, *SHAPE), -1.0))
    with pytest.raises(CompressionError, match=r"CodecConfig\.max_count"):
        compress(tiny_vae("poisson"), torch.full((2, *SHAPE), 50.0), CodecConfig(max_count=10))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 3, 4\)"):
        compress(tiny_vae(), np.zeros((2, 12)))


def test_bad_codec_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"CodecConfig\.latent_bits"):
        CodecConfig(latent_bits=40)
    with pytest.raises(ValueError, match=r"CodecConfig\.coarse_bits"):
        CodecConfig(latent_bits=8, coarse_bits=8)
    with pytest.raises(ValueError, match=r"CodecConfig\.precision"):
        CodecConfig(precision=16)
