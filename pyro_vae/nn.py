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

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "NETWORKS",
    "ConvDecoder",
    "ConvEncoder",
    "activation",
    "build_networks",
]

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
        return self.net(x.reshape(*batch, math.prod(self.in_shape)))  # (..., out_dim)


NETWORKS: Registry[tuple[nn.Module, nn.Module]] = Registry("network", config_field="network")


@NETWORKS.register("mlp")
class MLPPair:
    """Fully connected encoder and mirrored decoder (the IWAE paper's architecture).

    The encoder maps ``x`` of shape ``(N, *data_shape)`` through dense layers of widths
    ``hidden`` to features ``(N, hidden[-1])``; the decoder maps ``(N, latent_dim)`` through
    the reversed widths to ``(N, decoder_out)`` raw likelihood parameters (Burda et al. 2015).
    """

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


def _conv_geometry(data_shape: tuple[int, ...], layers: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of ``data_shape``, checked to halve cleanly ``layers`` times."""
    factor = 2**layers
    fits = len(data_shape) == 3 and all(n % factor == 0 for n in data_shape[1:])
    channels_last = len(data_shape) == 3 and data_shape[-1] in (1, 3, 4) and data_shape[0] > 4
    if not fits and channels_last:
        h, w, c = data_shape
        raise ValueError(
            f"the conv network needs images of shape (C, H, W), channels first, but the data "
            f"have shape {tuple(data_shape)}, which looks like (H, W, C) with C = {c}. "
            f"Transpose the array to ({c}, {h}, {w}) before saving it, e.g. "
            "np.save(path, x.transpose(0, 3, 1, 2)), or use VAEConfig(network='mlp')."
        )
    if not fits:
        raise ValueError(
            f"the conv network needs images of shape (C, H, W) with H and W divisible by "
            f"2**layers = {factor} (e.g. (1, 28, 28) or (3, 32, 32) with layers=2), got "
            f"data_shape {tuple(data_shape)}. Use VAEConfig(network='mlp'), or fewer layers "
            "(VAEConfig(network='conv:layers=1'))."
        )
    c, h, w = data_shape
    return c, h, w


def _flatten_batch(x: torch.Tensor, event: tuple[int, ...]) -> tuple[torch.Tensor, torch.Size]:
    """``(..., *event) -> (B, *event)`` and the leading shape to restore afterwards."""
    batch = x.shape[: x.dim() - len(event)]
    return x.reshape(math.prod(batch), *event), batch


class ConvEncoder(nn.Module):
    """Strided convolutions, then fully connected layers: ``(..., C, H, W) -> (..., out_dim)``.

    Each of the ``len(channels)`` layers is a 4x4 convolution with stride 2 and padding 1,
    halving H and W (28 -> 14 -> 7, 32 -> 16 -> 8), followed by the activation; the feature
    map is flattened and passed through ``hidden`` widths (activation after each). Leading
    dimensions (data points, particles) are flattened into one batch and restored.
    """

    def __init__(
        self, data_shape: tuple[int, ...], channels: Sequence[int], hidden: Sequence[int], act: str
    ) -> None:
        super().__init__()
        c, h, w = _conv_geometry(data_shape, len(channels))
        self.data_shape = (c, h, w)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise([c, *channels]):
            layers += [nn.Conv2d(a, b, kernel_size=4, stride=2, padding=1), activation(act)]
        self.conv = nn.Sequential(*layers)
        side = 2 ** len(channels)
        flat = channels[-1] * (h // side) * (w // side)
        self.fc: nn.Module = MLP((flat,), hidden, act, final_act=True) if hidden else nn.Identity()
        self.out_dim = hidden[-1] if hidden else flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat, batch = _flatten_batch(x, self.data_shape)  # (B, C, H, W)
        h = self.conv(flat).flatten(1)  # (B, c * h * w)
        return self.fc(h).reshape(*batch, self.out_dim)  # (..., out_dim)


class ConvDecoder(nn.Module):
    """Fully connected layers, then transposed convolutions: ``(..., L) -> (..., P * D)``.

    The mirror of :class:`ConvEncoder`: ``z`` passes through ``hidden`` widths to a
    ``(channels[-1], H / 2**n, W / 2**n)`` feature map, and 4x4 transposed convolutions of
    stride 2 double it back to ``(P * C, H, W)``, no activation after the last. The output
    is flattened as ``(P, C, H, W)``, the layout
    :meth:`pyro_vae.models.likelihoods.Likelihood.split` cuts into ``P`` parameters of shape
    ``data_shape``.
    """

    def __init__(
        self,
        latent_dim: int,
        data_shape: tuple[int, ...],
        channels: Sequence[int],
        hidden: Sequence[int],
        act: str,
        num_params: int,
    ) -> None:
        super().__init__()
        c, h, w = _conv_geometry(data_shape, len(channels))
        self.latent_dim = latent_dim
        side = 2 ** len(channels)
        self.start = (channels[-1], h // side, w // side)
        self.fc = MLP((latent_dim,), (*hidden, math.prod(self.start)), act, final_act=True)
        widths = [*reversed(channels), num_params * c]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1))
            if i < len(widths) - 2:
                layers.append(activation(act))
        self.deconv = nn.Sequential(*layers)
        self.out_dim = num_params * c * h * w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat, batch = _flatten_batch(z, (self.latent_dim,))  # (B, L)
        h = self.fc(flat).reshape(flat.shape[0], *self.start)  # (B, c, h, w)
        return self.deconv(h).reshape(*batch, self.out_dim)  # (..., P * C * H * W)


@NETWORKS.register("conv")
class ConvPair:
    """Convolutional encoder and mirrored transposed-convolution decoder for (C, H, W) images.

    ``layers`` stride-2 convolutions of 4x4 kernels with ``channels``, ``2 * channels``, ...
    output channels halve H and W each time (so 28x28 and 32x32 images with the default two
    layers, and 8x8 digits too); the config's ``hidden`` widths are fully connected layers
    between the feature map and the guide head (reversed in the decoder). A DCGAN-style
    pair (Radford, Metz & Chintala 2016) as used for VAEs of images since Kingma et al.
    (2016). H and W must be divisible by ``2**layers``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        latent_dim: int,
        hidden: tuple[int, ...],
        act: str,
        decoder_out: int,
        *,
        channels: int = 32,
        layers: int = 2,
    ) -> None:
        if channels < 1 or layers < 1:
            raise ValueError(f"channels and layers must be positive ints, got {channels}, {layers}")
        _conv_geometry(data_shape, layers)
        size = math.prod(data_shape)
        if decoder_out % size:
            raise ValueError(
                f"decoder_out must be a multiple of the data size {size}, got {decoder_out}"
            )
        widths = [channels * 2**i for i in range(layers)]
        self.encoder = ConvEncoder(data_shape, widths, hidden, act)
        self.decoder = ConvDecoder(
            latent_dim, data_shape, widths, tuple(reversed(hidden)), act, decoder_out // size
        )
        self.feature_dim = self.encoder.out_dim


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
