"""Convolutional encoder/decoder pairs: shapes, particle dimensions, layout, validation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pyro
import pytest
import torch

from pyro_vae import VAE, VAEConfig, log_likelihood
from pyro_vae.models import LIKELIHOODS
from pyro_vae.nn import NETWORKS, build_networks


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny convolutions on a busy 2-core machine: one thread avoids OpenMP barrier waits
    (measured here: 0.4 s per tiny conv backward pass with 2 threads under load, 1 ms with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("shape", "spec", "num_params"),
    [
        ((1, 28, 28), "conv:channels=4", 1),
        ((3, 32, 32), "conv:channels=4", 2),
        ((1, 8, 8), "conv:channels=3,layers=3", 3),
        ((2, 12, 20), "conv:channels=2,layers=1", 256),
    ],
)
def test_conv_shapes_with_particle_dims(shape: tuple[int, ...], spec: str, num_params: int) -> None:
    latent, d = 5, math.prod(shape)
    enc, dec, features = build_networks(
        spec, shape, latent, hidden=(16,), act="relu", decoder_out=num_params * d
    )
    assert features == 16
    x = torch.rand(4, 3, *shape)  # (K, N, C, H, W): particles and data points
    assert enc(x).shape == (4, 3, 16)
    assert enc(x[0, 0]).shape == (16,)  # one unbatched image
    assert enc(x[:, :0]).shape == (4, 0, 16)  # an empty batch keeps its shape
    z = torch.randn(4, 3, latent)
    assert dec(z).shape == (4, 3, num_params * d)
    assert dec(z[0, 0]).shape == (num_params * d,)
    # leading dims are a batch: each entry equals its own unbatched evaluation
    torch.testing.assert_close(enc(x)[2, 1], enc(x[2, 1]))
    torch.testing.assert_close(dec(z)[3, 2], dec(z[3, 2]))


def test_conv_without_hidden_layers() -> None:
    enc, dec, features = build_networks("conv:channels=4", (1, 28, 28), 3, (), "tanh", 784)
    assert features == 8 * 7 * 7
    assert enc(torch.rand(2, 1, 28, 28)).shape == (2, features)
    assert dec(torch.randn(2, 3)).shape == (2, 784)


def test_conv_decoder_layout_is_what_the_likelihood_splits() -> None:
    """Output channel ``p * C + c`` is parameter ``p`` of image channel ``c``."""
    shape, p = (3, 8, 8), 2
    pair = NETWORKS.build(
        "conv:channels=4",
        data_shape=shape,
        latent_dim=2,
        hidden=(8,),
        act="tanh",
        decoder_out=p * math.prod(shape),
    )
    z = torch.randn(5, 2)
    h = pair.decoder.fc(z).reshape(5, *pair.decoder.start)
    maps = pair.decoder.deconv(h)  # (5, P * C, H, W)
    parts = LIKELIHOODS.build("normal-decoder", data_shape=shape).split(pair.decoder(z))
    for k in range(p):
        torch.testing.assert_close(parts[k], maps[:, k * 3 : (k + 1) * 3])


@pytest.mark.parametrize(
    ("shape", "spec", "message"),
    [
        ((1, 30, 30), "conv", "divisible by 2**layers = 4"),
        ((784,), "conv", "images of shape (C, H, W)"),
        ((1, 28, 28), "conv:layers=3", "divisible by 2**layers = 8"),
        ((1, 28, 28), "conv:channels=0", "channels and layers must be positive"),
        ((1, 28, 28), "conv:width=3", "channels (int, default 32), layers (int, default 2)"),
        (
            (32, 32, 3),
            "conv",
            "looks like (H, W, C) with C = 3. Transpose the array to (3, 32, 32)",
        ),
        ((28, 28, 1), "conv", "x.transpose(0, 3, 1, 2)"),
    ],
)
def test_conv_refuses_shapes_it_cannot_halve(
    shape: tuple[int, ...], spec: str, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        build_networks(spec, shape, 2, (8,), "tanh", math.prod(shape))
    assert message in str(info.value)


def test_conv_vae_trains_and_runs_the_iw_bound() -> None:
    pyro.set_rng_seed(0)
    vae = VAE(
        VAEConfig(data_shape=(1, 8, 8), latent_dim=2, hidden=(16,), network="conv:channels=4")
    )
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.4))
    loss_fn = pyro.infer.Trace_ELBO(num_particles=3, vectorize_particles=True)(vae.model, vae.guide)
    opt = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = loss_fn(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]  # it learns (6 points, 30 steps: a large drop)
    assert vae.sample(4).shape == (4, 1, 8, 8)
    assert vae.reconstruct(x).shape == (6, 1, 8, 8)
    ll = log_likelihood(vae.model, vae.guide, x, num_samples=4)  # (K, N, C, H, W) inside
    assert ll.shape == (6,) and bool(torch.isfinite(ll).all())
