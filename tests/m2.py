r"""The semi-supervised model M2 of Kingma et al. (2014), linear-Gaussian, with exact answers.

:math:`p(y)\,p(z)\,p(x|y,z)` with a class :math:`y \in \{0, 1, 2\}` of prior :data:`PI`,
:math:`z \sim \mathcal{N}(0, I_2)` and :math:`x|y,z \sim \mathcal{N}(Wz + B_y, \sigma^2 I)`
(:data:`LG` gives W and sigma). The guide is :math:`q(y|x)\,q(z|x,y)` with
:math:`q(z|x,y) = p(z|x,y)` exactly (or, with ``widen``, its covariance widened), written
as in Pyro's ``examples/vae/ss_vae_M2.py``: an unsized plate ``"data"``, the class drawn
in the guide unless it is observed (``y`` passed: the supervised model). Shared by
tests/infer/test_enumeration.py and the diagnostics' tests.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from linear_gaussian import LinearGaussian
from pyro.infer import config_enumerate

PI = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
LG = LinearGaussian.random(d=4, latent=2, sigma=0.5, seed=0)
B = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2


def m2_programs(
    q_y: torch.Tensor, enumerate_guide: bool = True, onehot: bool = False, widen: float = 1.0
) -> tuple[Any, Any]:
    """``(model, guide)`` taking ``(x, y=None)``. With ``onehot``, y is ``OneHotCategorical``
    as in Pyro's ``ss_vae_M2.py``; else ``Categorical``."""
    latent = LG.W.shape[1]

    def klass(probs: torch.Tensor) -> Any:
        return dist.OneHotCategorical(probs) if onehot else dist.Categorical(probs)

    def offset(y: torch.Tensor) -> torch.Tensor:
        return y @ B if onehot else B[y]

    def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with pyro.plate("data"):  # unsized, as in Pyro's ss_vae_M2.py
            y = pyro.sample("y", klass(PI.expand(x.shape[0], 3)), obs=y)
            prior = dist.Normal(torch.zeros(latent, dtype=x.dtype), 1.0).to_event(1)
            z = pyro.sample("z", prior.expand([x.shape[0]]))
            loc = z @ LG.W.T + offset(y)
            pyro.sample("x", dist.Normal(loc, LG.sigma).to_event(1), obs=x)

    def guide(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with pyro.plate("data"):
            if y is None:
                y = pyro.sample("y", klass(q_y.expand(x.shape[0], 3)))
            mean, cov = LG.posterior(x - offset(y) + LG.b)  # p(z | x, y): (..., N, L)
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=widen * cov))

    return model, config_enumerate(guide) if enumerate_guide else guide


def m2_joint(x: torch.Tensor) -> torch.Tensor:
    """log p(x, y) for each class, (N, 3)."""
    return torch.stack([PI[c].log() + LG.log_px(x - B[c] + LG.b) for c in range(3)], -1)


def m2_data(labels: list[int]) -> torch.Tensor:
    """Points of the classes ``labels``, one each (seeded)."""
    return LG.sample_x(len(labels)) + B[torch.tensor(labels)] - LG.b


def m2_posterior_mean(x: torch.Tensor, q_y: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathbb{E}_q[z|x] = \sum_y q(y|x)\,\mathbb{E}[z|x,y]`, (N, L)."""
    means = torch.stack([LG.posterior(x - B[c] + LG.b)[0] for c in range(3)])  # (3, N, L)
    return (q_y[:, None, None] * means).sum(0)
