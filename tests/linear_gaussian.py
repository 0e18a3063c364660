r"""The linear-Gaussian VAE (probabilistic PCA), an exact reference for the estimators.

Model: :math:`z \sim \mathcal{N}(0, I_L)`, :math:`x | z \sim \mathcal{N}(Wz + b, \sigma^2 I_D)`.
Then :math:`p(x) = \mathcal{N}(b, WW^\top + \sigma^2 I)` and the posterior is
:math:`p(z|x) = \mathcal{N}(M^{-1}W^\top(x-b)/\sigma^2, M^{-1})` with
:math:`M = I + W^\top W / \sigma^2` (Tipping & Bishop 1999).

The model and guides are plain Pyro functions, not modules of this package, so every test
that uses them also shows that the estimators accept any (model, guide) pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch


@dataclass
class LinearGaussian:
    W: torch.Tensor  # (D, L)
    b: torch.Tensor  # (D,)
    sigma: float

    @staticmethod
    def random(d: int = 5, latent: int = 2, sigma: float = 0.5, seed: int = 0) -> LinearGaussian:
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(d, latent, generator=g, dtype=torch.float64)
        b = torch.randn(d, generator=g, dtype=torch.float64)
        return LinearGaussian(W, b, sigma)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        noise = torch.randn(n, self.W.shape[0], generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + self.sigma * noise  # (N, D)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        d = self.W.shape[0]
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(d, dtype=x.dtype)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)  # (N,)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(N, L)`` and covariance ``(L, L)`` of p(z|x)."""
        latent = self.W.shape[1]
        M = torch.eye(latent, dtype=x.dtype) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(M)
        mean = (x - self.b) @ self.W @ cov.T / self.sigma**2
        return mean, cov

    def model(self, x: torch.Tensor) -> None:
        latent = self.W.shape[1]
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(latent, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def exact_guide(self, x: torch.Tensor) -> None:
        mean, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))

    def diagonal_guide(self, scale_factor: float = 1.0, shift: float = 0.0):  # type: ignore[no-untyped-def]
        """A mean-field guide: exact marginal means (+shift), scaled marginal stds."""

        def guide(x: torch.Tensor) -> None:
            mean, cov = self.posterior(x)
            std = cov.diagonal().sqrt() * scale_factor
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(mean + shift, std).to_event(1))

        return guide
