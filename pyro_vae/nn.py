"""Networks: the deterministic maps inside the model and the guide.

Encoders map a data point to features, ``(..., *data_shape) -> (..., out_dim)``. Decoders
map a latent to the raw parameters of the likelihood, ``(..., latent_dim) -> (..., P * D)``
with ``D = prod(data_shape)``. Leading dimensions are batch dimensions (data points,
particles), so the same network serves training, vectorized particles and evaluation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyro_vae.registry import Registry

__all__ = ["ACTIVATIONS", "MLP", "NETWORKS", "activation", "build_networks"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``tanh``, ``relu``, ...)."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; valid names are: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """Fully connected layers with an activation between them, none after the last.

    ``in_shape`` trailing dimensions of the input are flattened, so an image batch
    ``(..., 1, 28, 28)`` enters as ``(..., 784)``.
    """

    def __init__(
        self, in_shape: Sequence[int], widths: Sequence[int], act: str, final_act: bool = False
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("MLP needs at least one layer width")
        self.in_shape = tuple(in_shape)
        sizes = [math.prod(self.in_shape), *widths]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 1 or final_act:
                layers.append(activation(act))
        self.net = nn.Sequential(*layers)
        self.out_dim = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.in_shape)]
        return self.net(x.reshape(*batch, -1))  # (..., out_dim)


NETWORKS: Registry[tuple[nn.Module, nn.Module]] = Registry("network")


@NETWORKS.register("mlp")
class MLPPair:
    """Fully connected encoder and mirrored decoder (the IWAE paper's architecture)."""

    def __init__(
        self,
        data_shape: tuple[int, ...],
        latent_dim: int,
        hidden: tuple[int, ...],
        act: str,
        decoder_out: int,
    ) -> None:
        # encoder: x -> hidden[-1] features (the guide family adds its own output head)
        self.encoder = (
            MLP(data_shape, hidden, act, final_act=True) if hidden else nn.Flatten(-len(data_shape))
        )
        # decoder: z -> reversed(hidden) -> decoder_out raw likelihood parameters
        self.decoder = MLP((latent_dim,), (*reversed(hidden), decoder_out), act)
        self.feature_dim = hidden[-1] if hidden else math.prod(data_shape)


def build_networks(
    spec: str,
    data_shape: tuple[int, ...],
    latent_dim: int,
    hidden: tuple[int, ...],
    act: str,
    decoder_out: int,
) -> tuple[nn.Module, nn.Module, int]:
    """Encoder, decoder and the encoder's feature width for a network spec."""
    activation(act)  # validate the name before building anything
    pair = NETWORKS.build(
        spec,
        data_shape=data_shape,
        latent_dim=latent_dim,
        hidden=hidden,
        act=act,
        decoder_out=decoder_out,
    )
    return pair.encoder, pair.decoder, pair.feature_dim  # type: ignore[attr-defined]
