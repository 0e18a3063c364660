"""Build a (model, guide) pair from a :class:`~pyro_vae.config.VAEConfig`."""

from __future__ import annotations

import itertools

import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.config import VAEConfig
from pyro_vae.guides import GUIDES, Guide, Posterior
from pyro_vae.models import LIKELIHOODS, PRIORS, ConditionalNormal, Model
from pyro_vae.nn import MLP, build_networks
from pyro_vae.structure import check_data_shape, check_labels

__all__ = ["VAE"]


class VAE(nn.Module):
    r"""A variational autoencoder: the model :math:`p(x|z)p(z)` and the guide :math:`q(z|x)`.

    ``vae.model`` and ``vae.guide`` are ordinary Pyro programs (``nn.Module`` s whose call
    ``(x)`` runs the program), so they work with ``pyro.infer.SVI``,
    ``Trace_ELBO()(model, guide)``, ``Predictive`` and ``Importance`` unchanged.
    ``vae.config`` is the frozen config that rebuilds the same architecture.

    ``config.upper_latent_dims`` adds stochastic layers above z (sites ``z1``, ``z2``, ...,
    the IWAE paper's hierarchy), and ``config.conditional`` makes the model p(x|z, y) and
    the guide q(z|x, y), called as ``model(x, y)`` with int64 labels ``y``.
    ``config.semi_supervised`` builds M2 of Kingma et al. (2014): the model
    p(x|y,z) p(y) p(z) and the guide q(y|x) q(z|x,y), whose classifier q(y|x) is an encoder
    of ``config.network`` with a linear head to the class logits; y is enumerated, and
    ``model(x, y)`` takes labels with ``-1`` where the class is hidden (see
    :class:`~pyro_vae.guides.Guide`).

    Example::

        vae = VAE(VAEConfig(data_shape=(1, 28, 28), latent_dim=50))
        loss = pyro.infer.Trace_ELBO()(vae.model, vae.guide)   # an nn.Module
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        labelled = config.conditional or config.semi_supervised
        if labelled and config.num_classes < 1:
            raise ValueError(
                "a conditional or semi-supervised VAE needs num_classes >= 1 (fit sets it "
                f"from the data set's labels), got num_classes={config.num_classes}"
            )
        self.config = config
        shape, latent = config.data_shape, config.latent_dim
        classes = config.num_classes if labelled else 0
        likelihood = LIKELIHOODS.build(config.likelihood, data_shape=shape)
        encoder, decoder, features = build_networks(
            config.network,
            data_shape=shape,
            latent_dim=latent + classes,  # the decoder reads [z, onehot(y)]
            hidden=config.hidden,
            act=config.activation,
            decoder_out=likelihood.num_outputs,
        )
        posterior = GUIDES.build(config.guide, feature_dim=features + classes, latent_dim=latent)
        upper, layers = _upper_layers(config)
        dims = (latent, *config.upper_latent_dims)  # z1, z2, ... (just z for one layer)
        prior = PRIORS.build(config.prior, latent_dim=dims[-1])  # the top layer's density
        semi = config.semi_supervised
        self.model = Model(
            prior,
            decoder,
            likelihood,
            layers=layers,
            num_classes=classes,
            data_shape=shape,
            semi_supervised=semi,
        )
        classifier = _classifier(config, likelihood.num_outputs) if semi else None
        self.guide = Guide(
            encoder,
            posterior,
            upper=upper,
            num_classes=classes,
            data_shape=shape,
            classifier=classifier,
        )
        # the guide exists now: a prior made of it (VampPrior) gets its top stage, whose
        # input is x for one layer and the layer below the top otherwise
        top_input = (dims[-2],) if len(dims) > 1 else shape
        prior.bind_guide(self.guide.posterior_at, top_input)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise unless ``x`` is a float batch ``(N, *data_shape)`` the likelihood can score."""
        check_data_shape(x, self.config.data_shape)
        self.model.likelihood.check_support(x)

    @torch.no_grad()
    def sample(
        self, num: int, label: int | torch.Tensor | None = None, draw: bool = False
    ) -> torch.Tensor:
        """Means of p(x|z) for ``num`` ancestral draws of z from the model: ``(num, *data_shape)``.

        With ``draw=True``, a draw x ~ p(x|z) instead of its mean (binary images for a
        Bernoulli likelihood, noisy ones for a Normal).

        A conditional VAE draws from p(x|z, y): ``label`` is one class for all ``num``
        draws, a tensor of ``num`` classes, or None for the classes 0, 1, ..., C-1 in turn.
        """
        model = self.model
        y = self._labels(num, label)
        z = model.prior().sample((num,))  # (num, L_top)
        for layer in reversed(model.layers):
            z = layer(z).sample()  # (num, L_l)
        p_x = model.likelihood(model.decoder(model.decoder_input(z, y)))
        return p_x.sample() if draw else p_x.mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Means of p(x|z1) at the guide's code for z1, ``(N, *data_shape)``.

        The code is E_q[z1|x] where the family has a closed-form mean, else (IAF) the base
        mean pushed through the flow.
        """
        check_labels(y, x.shape[0], self.model.num_classes, optional=self.config.semi_supervised)
        if self.config.semi_supervised:  # hidden labels: q(y|x)'s most probable class
            guess = self.guide.class_logits(x).argmax(-1)  # (N,)
            y = guess if y is None else torch.where(y >= 0, y, guess)
        z = _code(self.guide.posterior(self.guide.features(x, y)))  # (N, L1)
        return self.model.likelihood(self.model.decoder(self.model.decoder_input(z, y))).mean

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The class probabilities ``(N, C)`` of the classifier q(y|x) of M2."""
        return self.guide.class_logits(x).softmax(-1)

    def _labels(self, num: int, label: int | torch.Tensor | None) -> torch.Tensor | None:
        classes = self.model.num_classes
        if not classes:
            if label is not None:
                raise ValueError("label: this VAE is not conditional, so it takes no label")
            return None
        device = next(self.parameters()).device
        if label is None:
            return torch.arange(num, device=device) % classes  # (num,)
        y = torch.as_tensor(label, device=device).long()
        if y.dim() > 1 or (y.dim() == 1 and y.shape[0] != num):
            raise ValueError(
                f"label must be one class or {num} classes, got shape {tuple(y.shape)}"
            )
        y = y.expand(num)  # (num,)
        if bool(((y < 0) | (y >= classes)).any()):
            raise ValueError(f"label must be a class in 0..{classes - 1}, got {label!r}")
        return y


def _code(q: dist.TorchDistribution) -> torch.Tensor:
    """E_q[z], or for a flow without a closed-form mean its base mean pushed through it."""
    try:
        return q.mean
    except NotImplementedError:
        if not isinstance(q, dist.TransformedDistribution):
            raise
        z = q.base_dist.mean
        for transform in q.transforms:
            z = transform(z)
        return z


def _classifier(config: VAEConfig, decoder_out: int) -> nn.Module:
    """q(y|x)'s network: an encoder of ``config.network`` and a linear head to C logits."""
    shape = config.data_shape
    encoder, _, features = build_networks(
        config.network,
        data_shape=shape,
        latent_dim=config.latent_dim,
        hidden=config.hidden,
        act=config.activation,
        decoder_out=decoder_out,  # the decoder is built and not used
    )
    return nn.Sequential(encoder, nn.Linear(features, config.num_classes))


def _upper_layers(
    config: VAEConfig,
) -> tuple[list[tuple[nn.Module, Posterior]], list[ConditionalNormal]]:
    """Guide stages q(z_{l+1}|z_l) and model layers p(z_l|z_{l+1}) above the bottom layer.

    Burda et al. (2015), sec. 5: between stochastic layers the guide's MLP runs upward with
    widths ``upper_hidden`` and the model's runs downward with the same widths reversed;
    each guide stage uses the configured guide family.
    """
    dims = (config.latent_dim, *config.upper_latent_dims)
    hidden, act = config.upper_hidden, config.activation
    stages: list[tuple[nn.Module, Posterior]] = []
    layers: list[ConditionalNormal] = []
    for layer, (below, above) in enumerate(itertools.pairwise(dims), start=2):
        encoder = MLP((below,), hidden, act, final_act=True)
        try:
            posterior = GUIDES.build(config.guide, feature_dim=hidden[-1], latent_dim=above)
        except ValueError as e:  # name the layer: latent_dim there is upper_latent_dims'
            raise type(e)(f"stochastic layer z{layer} (upper_latent_dims {above}): {e}") from e
        stages.append((encoder, posterior))
        layers.append(ConditionalNormal(above, below, tuple(reversed(hidden)), act))
    return stages, layers
