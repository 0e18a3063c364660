r"""A likelihood of your own: a Cauchy with a fixed scale, registered as ``cauchy``.

.. math::
    p(x|z) = \prod_d \frac{1}{\pi\gamma\,\big(1 + ((x_d - \mu_d(z))/\gamma)^2\big)},

a likelihood robust to outlying pixels: the decoder gives the location :math:`\mu` and
``scale`` (:math:`\gamma`) is fixed. A likelihood declares ``num_params``, the decoder
outputs it needs per data dimension, cuts the decoder output with ``self.split``, returns a
distribution with event shape ``data_shape`` and checks the data it is given in
``check_support`` (here: finite reals, the base class's check). Its ``.mean`` is what
``VAE.sample``/``reconstruct`` show; a Cauchy has none, so this class returns one whose
mean is its location (the median).

Use it without editing pyro-vae::

    pyro-vae train --plugin examples/custom_likelihood.py --likelihood cauchy:scale=0.1 \
        --binarize none
    pyro-vae sample RUN_DIR --plugin examples/custom_likelihood.py

Running this file trains one epoch on the digits (grey levels, not binarized).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.models import LIKELIHOODS, Likelihood


class CauchyWithMedian(dist.Cauchy):
    """A Cauchy whose ``mean`` reports the median, for pictures of samples."""

    @property
    def mean(self) -> torch.Tensor:
        return self.loc


@LIKELIHOODS.register("cauchy")
class CauchyLikelihood(Likelihood):
    """Cauchy with a fixed scale, robust to outlying values; for any real data."""

    num_params = 1

    def __init__(self, data_shape: tuple[int, ...], *, scale: float = 0.1) -> None:
        super().__init__(data_shape)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.scale = scale

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split(raw)  # (..., *data_shape)
        return CauchyWithMedian(loc, self.scale).to_event(len(self.data_shape))


def main(out: str | None = None, epochs: int = 1) -> dict[str, float]:
    """Train a tiny VAE with this likelihood on the digits; returns the test summary."""
    config = RunConfig(
        VAEConfig(latent_dim=2, hidden=(32,), likelihood="cauchy:scale=0.1"),
        TrainConfig(
            binarize="none",
            epochs=epochs,
            eval_num_samples=10,
            eval_num_points=100,
            out=out or "",
        ),
    )
    result = fit(config, write=out is not None, progress=False)
    print({k: round(v, 3) for k, v in result.summary.items()})
    return result.summary


if __name__ == "__main__":
    main()
