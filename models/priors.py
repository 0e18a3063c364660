r"""Priors p(z): modules whose call returns a distribution over one latent vector.

A prior returns a distribution with ``event_shape == (latent_dim,)`` and an empty (or
broadcastable) batch shape; the model's data plate broadcasts it over data points. In a
VAE with several stochastic layers the prior is the density of the top layer.

Scales are :math:`\mathrm{softplus}(\cdot) + \sigma_{\min}`, bounded away from zero by
construction. A prior built from the guide (the VampPrior) receives the guide through
:meth:`Prior.bind_guide`, which :class:`~pyro_vae.VAE` calls once the guide exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import transforms as T
from pyro.nn import AutoRegressiveNN
from torch import nn
from torch.nn import functional as F

from pyro_vae.checks import check_min_scale, inverse_softplus
from pyro_vae.config import ConfigError
from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.registry import Registry

__all__ = [
    "PRIORS",
    "FlowPrior",
    "GaussianMixture",
    "LearnedNormal",
    "Prior",
    "StandardNormal",
    "VampPrior",
]

# q(z | u) of the guide's top stage at a batch of its inputs u: the VampPrior's components
PosteriorAt = Callable[[torch.Tensor], dist.TorchDistribution]


class Prior(nn.Module):
    """Base class: ``prior() -> Distribution`` with event shape ``(latent_dim,)``."""

    latent_dim: int

    def forward(self) -> dist.TorchDistribution:  # pragma: no cover - abstract
        """The prior :math:`p(z)`: a distribution with ``event_shape == (latent_dim,)``."""
        raise NotImplementedError

    def bind_guide(self, posterior_at: PosteriorAt, input_shape: tuple[int, ...]) -> None:
        """Give the prior the guide's top stage; only priors made of the guide use it.

        ``posterior_at(u)`` maps inputs ``u`` of shape ``(M, *input_shape)`` to the guide's
        family q(z|u) with batch shape ``(M',)``. The guide's networks stay the guide's: a
        prior must keep the callable as a plain attribute, never as a submodule, so the
        parameters are registered (and saved) once, under the guide.
        """


PRIORS: Registry[Prior] = Registry("prior", config_field="prior")


def _raw_scale(scale: float, min_scale: float) -> float:
    """The raw value r with softplus(r) + min_scale = scale (inverse softplus)."""
    return inverse_softplus(scale - min_scale)


@PRIORS.register("normal")
class StandardNormal(Prior):
    r"""Standard Normal, :math:`p(z) = \mathcal{N}(z; 0, I)` (Kingma & Welling 2014).

    The loc and scale are buffers, so they follow the module across devices and dtypes.
    """

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))  # (L,)
        self.register_buffer("scale", torch.ones(latent_dim))  # (L,)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


@PRIORS.register("learned-normal")
class LearnedNormal(Prior):
    r"""Learned diagonal Gaussian, :math:`p(z) = \mathcal{N}(z; \mu, \mathrm{diag}\,\sigma^2)`.

    :math:`\mu` and :math:`\sigma = \mathrm{softplus}(\rho) + \sigma_{\min}` are learned
    with the rest of the model, starting at the standard Normal. With a diagonal Normal
    guide the KL stays analytic. Learning p(z) moves it towards the aggregate posterior
    :math:`\mathbb{E}_x q(z|x)` (Hoffman & Johnson 2016, "ELBO surgery"); within this
    family the optimum matches its mean and marginal variances (empirical Bayes).
    """

    def __init__(self, latent_dim: int, *, min_scale: float = 1e-3) -> None:
        super().__init__()
        check_min_scale(min_scale)
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.loc = nn.Parameter(torch.zeros(latent_dim))  # (L,)
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), _raw_scale(1.0, min_scale)))

    @property
    def scale(self) -> torch.Tensor:
        r""":math:`\sigma = \mathrm{softplus}(\rho) + \sigma_{\min}`, shape ``(L,)``."""
        return F.softplus(self.raw_scale) + self.min_scale  # (L,)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


@PRIORS.register("mixture")
class GaussianMixture(Prior):
    r"""Mixture of K diagonal Gaussians with learned weights, means and scales.

    .. math::

        p(z) = \sum_{k=1}^{K} \pi_k\, \mathcal{N}(z; \mu_k, \mathrm{diag}\,\sigma_k^2),
        \qquad \pi = \mathrm{softmax}(\alpha),\quad
        \sigma_k = \mathrm{softplus}(\rho_k) + \sigma_{\min}.

    Means start at draws from :math:`\mathcal{N}(0, I)` so that the components differ,
    scales at 1, weights at 1/K. The mixture-of-Gaussians prior of Jiang et al. (2017,
    VaDE); see also Dilokthanakul et al. (2016). The KL against it is Monte Carlo (no
    closed form exists).
    """

    def __init__(self, latent_dim: int, *, components: int = 10, min_scale: float = 1e-3) -> None:
        super().__init__()
        if components < 1:
            raise ValueError(f"components must be a positive int, got {components}")
        check_min_scale(min_scale)
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.logits = nn.Parameter(torch.zeros(components))  # (K,)
        self.locs = nn.Parameter(torch.randn(components, latent_dim))  # (K, L)
        raw = _raw_scale(1.0, min_scale)
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), raw))  # (K, L)

    @property
    def scales(self) -> torch.Tensor:
        r""":math:`\sigma_k = \mathrm{softplus}(\rho_k) + \sigma_{\min}`, shape ``(K, L)``."""
        return F.softplus(self.raw_scales) + self.min_scale  # (K, L)

    def forward(self) -> dist.TorchDistribution:
        components = dist.Normal(self.locs, self.scales).to_event(1)  # batch (K,)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class PseudoInputMixture(dist.MixtureSameFamily):
    """An equally weighted mixture whose components may be flows conditioned per component.

    Like ``MixtureSameFamily``, but a value is expanded to the components' batch shape
    before it is scored, so components whose transforms are conditioned on a per-component
    context (an IAF guide's encoder output) can score it.
    """

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        k = self.mixture_distribution.logits.shape[-1]
        ev = len(self.event_shape)
        x = x.unsqueeze(-1 - ev)  # (..., 1, *event)
        return x.expand(*x.shape[: -1 - ev], k, *self.event_shape)  # (..., K, *event)


@PRIORS.register("vamp")
class VampPrior(Prior):
    r"""VampPrior: the guide's posterior averaged over K learned pseudo-inputs.

    .. math::

        p(z) = \frac{1}{K} \sum_{k=1}^{K} q_\phi(z \mid u_k)

    where :math:`u_k` are learned points in the input space of the guide's top stage (data
    space for a one-layer VAE, the space of :math:`z_1` for the top layer of a two-layer
    one) and :math:`q_\phi` is the guide itself, sharing its encoder. Tomczak & Welling
    (2018), "VAE with a VampPrior". For a conditional guide :math:`q(z|x,y)`, every
    pseudo-input is taken with every label, :math:`p(z) = \frac{1}{KC}\sum_{k,c}
    q(z|u_k, c)`. Pseudo-inputs start at uniform draws in [0, 1] (grey images) and are not
    clipped. Needs a guide family with a density (not ``delta``).
    """

    def __init__(self, latent_dim: int, *, components: int = 500) -> None:
        super().__init__()
        if components < 1:
            raise ValueError(f"components must be a positive int, got {components}")
        self.latent_dim = latent_dim
        self.components = components
        self.register_parameter("pseudo_inputs", None)  # (K, *input_shape) once bound
        self._posterior_at: PosteriorAt | None = None

    def bind_guide(self, posterior_at: PosteriorAt, input_shape: tuple[int, ...]) -> None:
        probe = posterior_at(torch.zeros(1, *input_shape))
        if is_point_mass(probe):
            raise ConfigError(  # a pairing of two settings that cannot work: the user's to fix
                "the VampPrior is a mixture of the guide's densities, but this guide family "
                "is a point mass (delta), which has none. Use another guide family with "
                "VAEConfig(prior='vamp'), or another prior with VAEConfig(guide='delta')."
            )
        self.pseudo_inputs = nn.Parameter(torch.rand(self.components, *input_shape))
        # a plain attribute, not a submodule: the encoder's parameters belong to the guide
        self._posterior_at = posterior_at

    def forward(self) -> dist.TorchDistribution:
        if self.pseudo_inputs is None or self._posterior_at is None:
            raise RuntimeError("VampPrior.bind_guide must be called (VAE does) before use")
        components = self._posterior_at(self.pseudo_inputs)  # batch (K',), event (L,)
        k = components.batch_shape[0]
        logits = self.pseudo_inputs.new_zeros(k)  # (K',) equal weights
        return PseudoInputMixture(dist.Categorical(logits=logits), components)


@PRIORS.register("flow")
class FlowPrior(Prior):
    r"""Flow prior: a standard Normal pushed through learned autoregressive transforms.

    .. math::

        p(z) = \mathcal{N}(f(z); 0, I)\, \Big|\det \frac{\partial f}{\partial z}\Big|,
        \qquad f = f_T \circ \dots \circ f_1

    with each :math:`f_t` autoregressive: ``kind=affine`` is the masked autoregressive flow
    (Papamakarios, Pavlakou & Murray 2017), :math:`f_t(z)_i = \sigma_i(z_{<i})\, z_i +
    \mu_i(z_{<i})`; ``kind=spline`` is the rational-linear spline flow (Dolatabadi,
    Erfani & Leckie 2020) with 8 bins on [-3, 3]. The transforms run in the density
    direction: :math:`\log p(z)` costs one network pass per layer, a prior draw costs
    ``latent_dim`` passes. Successive layers reverse the order of the dimensions. An
    autoregressive flow prior for a VAE as in Chen et al. (2017, "Variational lossy
    autoencoder"). Built from ``pyro.distributions.transforms``; the networks are
    registered submodules.
    ``hidden=0`` gives one hidden layer of width 3·latent_dim + 1 (Pyro's default).
    """

    param_notes: ClassVar[dict[str, str]] = {"hidden": "automatic width, 3·latent_dim + 1"}

    def __init__(
        self, latent_dim: int, *, layers: int = 2, kind: str = "affine", hidden: int = 0
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be a positive int, got {layers}")
        if kind not in ("affine", "spline"):
            raise ValueError(f"kind must be 'affine' or 'spline', got {kind!r}")
        if latent_dim < 2:
            raise ValueError(f"a flow prior needs latent_dim >= 2, got {latent_dim}")
        width = hidden or 3 * latent_dim + 1
        if width < latent_dim:
            raise ValueError(f"hidden must be >= latent_dim ({latent_dim}), got {hidden}")
        self.latent_dim = latent_dim
        self.flows = nn.ModuleList(
            _autoregressive(latent_dim, width, kind, reverse=i % 2 == 1) for i in range(layers)
        )
        self.register_buffer("loc", torch.zeros(latent_dim))  # (L,)
        self.register_buffer("scale", torch.ones(latent_dim))  # (L,)

    loc: torch.Tensor
    scale: torch.Tensor

    def forward(self) -> dist.TorchDistribution:
        base = dist.Normal(self.loc, self.scale).to_event(1)
        # base -> z is f^-1 = f_1^-1 o ... o f_T^-1; scoring z runs f_1, ..., f_T
        to_z = [flow.inv for flow in reversed(self.flows)]
        return dist.TransformedDistribution(base, to_z)


class AffineAutoregressive(T.AffineAutoregressive):
    r"""Pyro's affine autoregressive transform, :math:`y = \sigma(x_{<i}) x + \mu(x_{<i})`.

    Its inverse is solved one variable at a time in the network's order,
    :math:`x_i = (y_i - \mu_i(x_{<i})) / \sigma_i(x_{<i})`, keeping the dtype and device
    of ``y`` (Pyro 1.9's inverse starts from float32 zeros, which fails in float64).
    """

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(y)  # (..., L)
        positions = torch.arange(y.shape[-1], device=y.device)  # (L,)
        for i in self.arn.permutation.tolist():
            mean, log_scale = self.arn(x)  # (..., L) each; position i is final now
            log_scale = log_scale.clamp(self.log_scale_min_clip, self.log_scale_max_clip)
            solved = (y - mean) * torch.exp(-log_scale)  # (..., L)
            x = torch.where(positions == i, solved, x)
        self._cached_log_scale = log_scale  # the last pass saw every x_{<i}
        return x


class SplineAutoregressive(T.SplineAutoregressive):
    """Pyro's rational-linear spline autoregressive transform, its network registered once.

    Pyro 1.9 registers the same network as ``arn`` and as ``spline.nn``; the two names share
    tensors, which safetensors refuses to save. ``arn`` is unused, so it is dropped.
    """

    def __init__(self, input_dim: int, autoregressive_nn: nn.Module, **kwargs: Any) -> None:
        super().__init__(input_dim, autoregressive_nn, **kwargs)
        del self.arn  # still registered, and used, as self.spline.nn


def _autoregressive(
    latent_dim: int, width: int, kind: str, reverse: bool
) -> AffineAutoregressive | SplineAutoregressive:
    """One affine or spline autoregressive transform with a fixed variable order."""
    order = torch.arange(latent_dim)
    if reverse:
        order = order.flip(0)
    if kind == "affine":
        arn = AutoRegressiveNN(latent_dim, [width], permutation=order)  # type: ignore[arg-type]
        return AffineAutoregressive(arn)
    bins = 8
    params = [bins, bins, bins - 1, bins]  # widths, heights, derivatives, lambdas (linear)
    arn = AutoRegressiveNN(latent_dim, [width], param_dims=params, permutation=order)  # type: ignore[arg-type]
    return SplineAutoregressive(latent_dim, arn, count_bins=bins, bound=3.0, order="linear")
