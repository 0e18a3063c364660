r"""A hand-written VAE in plain PyTorch: the reference pyro-vae is benchmarked against.

No Pyro here. The networks, the initialization (copied with :meth:`ReferenceVAE.from_pyro_vae`)
and the training estimator are those of pyro-vae's default VAE, so that a difference between
the two is a difference of implementation, not of model:

- guide :math:`q(z|x) = \mathcal{N}(z; \mu(x), \mathrm{diag}\,\sigma(x)^2)`, an MLP encoder
  (``data_dim -> hidden...``, activation after every layer) and a linear head to
  :math:`(\mu, s)`, :math:`\sigma = \mathrm{softplus}(s) + \sigma_{\min}`;
- model :math:`p(z) = \mathcal{N}(0, I)`, :math:`p(x|z) = \prod_d \mathrm{Bernoulli}(x_d;
  \mathrm{logits}=f(z)_d)`, an MLP decoder ``latent_dim -> reversed(hidden)... -> data_dim``
  with no activation after the last layer (Kingma & Welling 2014, appendix C);
- training loss: the single-sample reparameterized Monte Carlo ELBO
  :math:`\log p(x|z) + \log p(z) - \log q(z|x)`, :math:`z = \mu + \sigma \odot \epsilon`,
  negated and averaged over the batch, which is what Pyro's ``Trace_ELBO`` computes for this
  model (value and gradient);
- evaluation: the importance-weighted bound :math:`\mathcal{L}_k` of Burda, Grosse &
  Salakhutdinov (2015), eq. 8, with the draws in chunks combined by a running log-sum-exp.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ACTIVATIONS", "ConvReferenceVAE", "ReferenceVAE", "train_epoch"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "softplus": F.softplus,
    "leaky_relu": F.leaky_relu,
}

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _linears(sizes: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_l \log \mathcal{N}(z_l; 0, 1)` over the last dim."""
    return (-0.5 * z.square() - _HALF_LOG_2PI).sum(-1)


def _normal_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_l \log \mathcal{N}(z_l; \mu_l, \sigma_l^2)` over the last dim."""
    return (-0.5 * ((z - loc) / scale).square() - scale.log() - _HALF_LOG_2PI).sum(-1)


def _check_components(vae: Any, network: str) -> Any:
    """``vae.config`` if ``vae`` is a ``pyro_vae.VAE`` with the components a reference
    implements (``network``, prior ``normal``, likelihood ``bernoulli``, guide ``normal``)."""
    config = getattr(vae, "config", None)
    if config is None or not hasattr(vae, "guide") or not hasattr(vae, "model"):
        raise TypeError(f"vae must be a pyro_vae.VAE, got {type(vae).__name__}")
    wanted = {"network": network, "prior": "normal", "likelihood": "bernoulli", "guide": "normal"}
    for field, name in wanted.items():
        got = str(getattr(config, field)).split(":", 1)[0]
        if got != name:
            raise ValueError(
                f"the reference implements {field} {name!r} only; vae has {field} "
                f"{getattr(config, field)!r}"
            )
    return config


class ReferenceVAE(nn.Module):
    r"""A Gaussian-latent, Bernoulli-likelihood VAE written directly in PyTorch.

    ``ReferenceVAE(784, (200, 200), 50)`` is the one-stochastic-layer architecture of the
    IWAE paper (Burda et al. 2015, section 5). Inputs are batches ``(N, ...)`` whose trailing
    dimensions flatten to ``data_dim`` values in {0, 1}.
    """

    def __init__(
        self,
        data_dim: int,
        hidden: Sequence[int],
        latent_dim: int,
        activation: str = "tanh",
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        _check_positive_int("data_dim", data_dim)
        _check_positive_int("latent_dim", latent_dim)
        hidden = tuple(hidden)
        for width in hidden:
            _check_positive_int("every hidden width", width)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not (isinstance(min_scale, (int, float)) and math.isfinite(min_scale) and min_scale > 0):
            raise ValueError(f"min_scale must be a positive finite number, got {min_scale!r}")
        self.data_dim, self.latent_dim, self.hidden = data_dim, latent_dim, hidden
        self.activation, self.min_scale = activation, float(min_scale)
        self.act = ACTIVATIONS[activation]
        features = hidden[-1] if hidden else data_dim
        self.encoder = _linears((data_dim, *hidden))  # activation after every layer
        self.head = nn.Linear(features, 2 * latent_dim)  # -> (loc, raw scale)
        self.decoder = _linears((latent_dim, *reversed(hidden), data_dim))  # none after last

    @classmethod
    def from_pyro_vae(cls, vae: Any) -> ReferenceVAE:
        """A reference with the same architecture and a copy of ``vae``'s current weights.

        ``vae`` is a ``pyro_vae.VAE`` with the components this reference implements: network
        ``mlp``, prior ``normal``, likelihood ``bernoulli`` and guide ``normal``. The copy has
        ``vae``'s dtype and device; later training of either leaves the other unchanged.
        """
        config = _check_components(vae, network="mlp")
        ref = cls(
            math.prod(config.data_shape),
            config.hidden,
            config.latent_dim,
            config.activation,
            vae.guide.posterior.min_scale,
        )
        sources = {
            "encoder": [m for m in vae.guide.encoder.modules() if isinstance(m, nn.Linear)],
            "head": [vae.guide.posterior.head],
            "decoder": [m for m in vae.model.decoder.modules() if isinstance(m, nn.Linear)],
        }
        weight = vae.guide.posterior.head.weight
        ref.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            for part, layers in sources.items():
                targets = [ref.head] if part == "head" else list(getattr(ref, part))
                if len(targets) != len(layers):
                    raise ValueError(
                        f"vae's {part} has {len(layers)} linear layers, expected {len(targets)}"
                    )
                for target, source in zip(targets, layers, strict=True):
                    target.weight.copy_(source.weight)  # shapes are checked by copy_
                    target.bias.copy_(source.bias)
        return ref

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[0] == 0 or math.prod(x.shape[1:]) != self.data_dim:
            raise ValueError(
                f"x must have shape (N, ...) with N > 0 and {self.data_dim} values per row, "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
        return x.reshape(x.shape[0], self.data_dim)  # (N, D)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Location and scale of :math:`q(z|x)`, each ``(N, L)``."""
        h = self._flat(x)  # (N, D)
        for layer in self.encoder:
            h = self.act(layer(h))  # (N, H)
        loc, raw_scale = self.head(h).chunk(2, dim=-1)  # (N, L) each
        return loc, F.softplus(raw_scale) + self.min_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""Bernoulli logits of :math:`p(x|z)`: ``(..., L) -> (..., D)``."""
        h = z
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = self.act(h)
        return h  # (..., D)

    def _log_weights(
        self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        r"""Per-draw :math:`\log p(x|z)`, :math:`\log p(z)`, :math:`\log q(z|x)`: ``(..., N)``.

        ``x`` is flat ``(N, D)``, ``loc`` and ``scale`` are ``q``'s ``(N, L)`` and ``eps`` is
        ``(..., N, L)`` standard normal noise.
        """
        z = loc + scale * eps  # (..., N, L)
        logits = self.decode(z)  # (..., N, D)
        target = x.expand_as(logits)  # (..., N, D)
        log_px = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        return {
            "log_px_given_z": log_px,  # (..., N)
            "log_pz": _standard_normal_log_prob(z),  # (..., N)
            "log_qz": _normal_log_prob(z, loc, scale),  # (..., N)
        }

    def _noise(
        self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        return torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Negative single-sample ELBO, averaged over the batch (nats per data point).

        .. math:: -\frac1N \sum_n \big[\log p(x_n|z_n) + \log p(z_n) - \log q(z_n|x_n)\big],
            \quad z_n = \mu(x_n) + \sigma(x_n) \odot \epsilon_n,\ \epsilon_n \sim \mathcal{N}(0, I)

        ``generator`` draws :math:`\epsilon` (the global RNG when ``None``).
        """
        flat = self._flat(x)  # (N, D)
        loc, scale = self.encode(flat)  # (N, L) each
        eps = self._noise((flat.shape[0], self.latent_dim), flat, generator)  # (N, L)
        lw = self._log_weights(flat, loc, scale, eps)
        return -(lw["log_px_given_z"] + lw["log_pz"] - lw["log_qz"]).mean()

    def elbo_terms(
        self,
        x: torch.Tensor,
        analytic_kl: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        r"""Per-data-point ``reconstruction``, ``kl`` and ``elbo``, each ``(N,)``.

        ``reconstruction`` is :math:`\log p(x|z)` at one draw :math:`z \sim q(z|x)`; ``kl`` is
        :math:`\mathrm{KL}(q\|p) = \tfrac12 \sum_l (\mu_l^2 + \sigma_l^2 - 1 - \log \sigma_l^2)`
        in closed form, or with ``analytic_kl=False`` the one-draw estimate
        :math:`\log q(z|x) - \log p(z)`; ``elbo = reconstruction - kl``.
        """
        flat = self._flat(x)  # (N, D)
        loc, scale = self.encode(flat)  # (N, L) each
        eps = self._noise((flat.shape[0], self.latent_dim), flat, generator)  # (N, L)
        lw = self._log_weights(flat, loc, scale, eps)
        if analytic_kl:
            kl = 0.5 * (loc.square() + scale.square() - 1 - 2 * scale.log()).sum(-1)  # (N,)
        else:
            kl = lw["log_qz"] - lw["log_pz"]  # (N,)
        recon = lw["log_px_given_z"]  # (N,)
        return {"reconstruction": recon, "kl": kl, "elbo": recon - kl}

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
        batch_size: int = 1000,
        max_elements: int = 2**25,
    ) -> torch.Tensor:
        r"""Importance-weighted estimate of :math:`\log p(x)`, shape ``(N,)``.

        .. math:: \mathcal{L}_k(x) = \log \frac1k \sum_{i=1}^k
            \frac{p(x|z_i)\,p(z_i)}{q(z_i|x)}, \quad z_i \sim q(z|x)

        (Burda et al. 2015, eq. 8). Points go in batches of ``batch_size`` and draws in
        chunks of at most ``max_elements // (batch * data_dim)``, combined with a running
        log-sum-exp, so memory stays bounded for any ``k``.
        """
        flat = self._flat(x)  # (N, D)
        _check_positive_int("k", k)
        _check_positive_int("batch_size", batch_size)
        _check_positive_int("max_elements", max_elements)
        out = []
        for xb in flat.split(batch_size):
            chunk = max(1, min(k, max_elements // (xb.shape[0] * self.data_dim)))
            loc, scale = self.encode(xb)  # (B, L) each
            acc = torch.full((xb.shape[0],), -math.inf, dtype=xb.dtype, device=xb.device)  # (B,)
            for start in range(0, k, chunk):
                size = min(chunk, k - start)
                eps = self._noise((size, xb.shape[0], self.latent_dim), xb, generator)  # (C, B, L)
                lw = self._log_weights(xb, loc, scale, eps)
                log_w = lw["log_px_given_z"] + lw["log_pz"] - lw["log_qz"]  # (C, B)
                acc = torch.logaddexp(acc, log_w.logsumexp(0))  # (B,)
            out.append(acc - math.log(k))
        return torch.cat(out)  # (N,)


def train_epoch(
    model: ReferenceVAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    order: torch.Generator,
    noise: torch.Generator | None = None,
) -> float:
    """One pass over ``x`` in mini-batches; returns the mean training loss (nats per point).

    The order is ``torch.randperm(N, generator=order)`` cut into batches of ``batch_size``
    (the last one smaller), the schedule of pyro-vae's trainer; each step minimizes
    :meth:`ReferenceVAE.loss` of the batch with ``noise`` drawing the reparameterization
    noise. The host reads the device once, at the end of the epoch.
    """
    _check_positive_int("batch_size", batch_size)
    perm = torch.randperm(x.shape[0], generator=order, device=x.device)  # (N,)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for idx in perm.split(batch_size):
        xb = x[idx]  # (B, ...)
        loss = model.loss(xb, generator=noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * xb.shape[0]
    return float(total) / x.shape[0]


class ConvReferenceVAE(ReferenceVAE):
    r"""The reference VAE with a pyro-vae ``conv`` VAE's networks (copies of its torch modules).

    The convolutional encoder, the guide's linear head and the transposed-convolution decoder
    are plain ``torch.nn`` modules (:mod:`pyro_vae.nn`); this class deep-copies them and
    trains them with :class:`ReferenceVAE`'s hand-written loss, so the networks, their
    initial weights and the estimator are the same and only Pyro is missing.
    """

    def __init__(self, vae: Any) -> None:
        config = vae.config
        super().__init__(
            math.prod(config.data_shape),
            (),
            config.latent_dim,
            config.activation,
            vae.guide.posterior.min_scale,
        )
        del self.encoder, self.head, self.decoder
        self.data_shape = tuple(config.data_shape)
        self.conv_encoder = copy.deepcopy(vae.guide.encoder)
        self.head = copy.deepcopy(vae.guide.posterior.head)
        self.conv_decoder = copy.deepcopy(vae.model.decoder)

    @classmethod
    def from_pyro_vae(cls, vae: Any) -> ConvReferenceVAE:
        """A reference with ``vae``'s conv networks and their current weights (copied)."""
        _check_components(vae, network="conv")
        return cls(vae)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv_encoder(self._flat(x).reshape(-1, *self.data_shape))  # (N, F)
        loc, raw_scale = self.head(h).chunk(2, dim=-1)  # (N, L) each
        return loc, F.softplus(raw_scale) + self.min_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_decoder(z)  # type: ignore[no-any-return]  # (..., D) logits
