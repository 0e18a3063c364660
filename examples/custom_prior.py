r"""A prior of your own: a heavy-tailed Student-t, registered as ``student-t``.

.. math::
    p(z) = \prod_{l=1}^{L} \mathrm{StudentT}(z_l; \nu, 0, 1), \qquad
    \mathrm{StudentT}(z; \nu, 0, 1) \propto (1 + z^2/\nu)^{-(\nu+1)/2},

the heavy-tailed prior of e.g. Takahashi et al. (2018), "Student-t Variational Autoencoder".
There is no closed-form KL against a Normal guide, so the ELBO's KL is estimated by Monte
Carlo (``elbo_terms(...).kl_method["z"] == "monte-carlo"``).

Use it without editing pyro-vae::

    pyro-vae train --plugin examples/custom_prior.py --prior student-t:df=3
    pyro-vae evaluate RUN_DIR --plugin examples/custom_prior.py

or from Python: import this module (or ``pyro_vae.load_plugin("examples/custom_prior.py")``)
before building the ``VAEConfig``. Running this file trains one epoch on the digits.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.models import PRIORS, Prior


@PRIORS.register("student-t")
class StudentTPrior(Prior):
    """Student-t prior with ``df`` degrees of freedom, independent over dimensions."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int, *, df: float = 5.0) -> None:
        super().__init__()
        if not (math.isfinite(df) and df > 0):
            raise ValueError(f"df must be a positive finite number, got {df}")
        self.latent_dim = latent_dim
        self.df = df
        # buffers follow the module across devices and dtypes
        self.register_buffer("loc", torch.zeros(latent_dim))  # (L,)
        self.register_buffer("scale", torch.ones(latent_dim))  # (L,)

    def forward(self) -> dist.TorchDistribution:
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)


def main(out: str | None = None, epochs: int = 1) -> dict[str, float]:
    """Train a tiny VAE with this prior on the digits; returns the test summary."""
    config = RunConfig(
        VAEConfig(latent_dim=2, hidden=(32,), prior="student-t:df=3"),
        TrainConfig(epochs=epochs, eval_num_samples=10, eval_num_points=100, out=out or ""),
    )
    result = fit(config, write=out is not None, progress=False)
    print({k: round(v, 3) for k, v in result.summary.items()})
    return result.summary


if __name__ == "__main__":
    main()
