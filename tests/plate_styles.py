r"""Pyro programs of the linear-Gaussian model written in every plate style a user writes.

Shared by the estimators' tests (tests/infer/test_plate_styles.py) and the diagnostics'
(tests/analysis/test_plate_styles.py). The model is :data:`LG` (tests/linear_gaussian.py:
d = 5, L = 2); the guide is its exact posterior :math:`p(z|x) = \mathcal{N}(m(x), S)`, or,
with ``widen``, :math:`\mathcal{N}(m(x), \text{widen}\cdot S)`, whose importance weights
are bounded but not constant. Each style puts the same densities in a different plate:

* ``sized``: ``pyro.plate("data", N)``; ``unsized``: ``pyro.plate("data")`` (Pyro sizes it);
* ``named-otherwise``: ``pyro.plate("rows", N)``;
* ``subsample``: ``pyro.plate("data", 1000, subsample=arange(N))``, a mini-batch (scale 1000/N);
* ``dim-2``, ``dim-2-unsized``: rows at dim -2, pixels in a plate at dim -1;
* ``scale``, ``scale-per-point``: ``poutine.scale`` by 0.01, or by one weight per point (7);
* :func:`masked_programs`: ``obs_mask``, each point observing some entries of x.

Scales are loss weights: every per-point value is that of the unscaled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from linear_gaussian import LinearGaussian

Programs = tuple[Callable[..., Any], Callable[..., Any]]
LG = LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)
L = LG.W.shape[1]


def prior(x: torch.Tensor) -> Any:
    """p(z) = N(0, I_L), one event of L coordinates."""
    return dist.Normal(torch.zeros(L, dtype=x.dtype), 1.0).to_event(1)


def _plate(style: str, n: int) -> Any:
    if style == "unsized":
        return pyro.plate("data")
    if style == "subsample":  # a mini-batch of a larger data set: scale 1000/n, ignored
        return pyro.plate("data", 1000, subsample=torch.arange(n))
    if style == "named-otherwise":
        return pyro.plate("rows", n)
    return pyro.plate("data", n)


def dim_minus_one(style: str, widen: float = 1.0) -> Programs:
    """Rows in a plate at dim -1, written in ``style`` (sized, unsized, subsample, ...)."""

    def model(x: torch.Tensor) -> None:
        with _plate(style, x.shape[0]):
            z = pyro.sample("z", prior(x).expand([x.shape[0]]))  # batch N: Pyro sizes by it
            pyro.sample("x", dist.Normal(z @ LG.W.T + LG.b, LG.sigma).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        mean, cov = LG.posterior(x)
        with _plate(style, x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=widen * cov))

    return model, guide


def dim_minus_two(sized: bool, widen: float = 1.0) -> Programs:
    """Rows at dim -2, pixels at dim -1."""

    def rows(n: int) -> Any:
        return pyro.plate("data", n, dim=-2) if sized else pyro.plate("data", dim=-2)

    def model(x: torch.Tensor) -> None:
        n, d = x.shape
        with rows(n):
            z = pyro.sample("z", prior(x).expand([n, 1]))  # (..., N, 1, L)
            loc = (z @ LG.W.T + LG.b).squeeze(-2)  # (..., N, D)
            with pyro.plate("pixels", d, dim=-1):
                pyro.sample("x", dist.Normal(loc, LG.sigma), obs=x)

    def guide(x: torch.Tensor) -> None:
        mean, cov = LG.posterior(x)
        with rows(x.shape[0]):
            z_dist = dist.MultivariateNormal(mean.unsqueeze(-2), covariance_matrix=widen * cov)
            pyro.sample("z", z_dist)

    return model, guide


def scaled(scale: float | torch.Tensor, widen: float = 1.0) -> Programs:
    """The sized programs under ``poutine.scale``."""
    model, guide = dim_minus_one("sized", widen)
    return poutine.scale(model, scale=scale), poutine.scale(guide, scale=scale)


STYLES: dict[str, Callable[..., Programs]] = {
    "sized": lambda widen=1.0: dim_minus_one("sized", widen),
    "unsized": lambda widen=1.0: dim_minus_one("unsized", widen),
    "named-otherwise": lambda widen=1.0: dim_minus_one("named-otherwise", widen),
    "subsample": lambda widen=1.0: dim_minus_one("subsample", widen),
    "dim-2": lambda widen=1.0: dim_minus_two(sized=True, widen=widen),
    "dim-2-unsized": lambda widen=1.0: dim_minus_two(sized=False, widen=widen),
    "scale": lambda widen=1.0: scaled(0.01, widen),
    "scale-per-point": lambda widen=1.0: scaled(
        torch.linspace(0.5, 2.0, 7, dtype=torch.float64), widen
    ),
}


def masked_programs(mask: torch.Tensor, widen: float = 1.0) -> Programs:
    """x observed where ``mask`` is True (``obs_mask``), rows at dim -2, pixels at dim -1.

    The model draws the unobserved entries (``x_unobserved``), which the guide does not;
    the guide is each point's posterior given its observed entries (covariance times
    ``widen``). Run on a prefix of the rows (a shape probe), they use that prefix's mask."""

    def model(x: torch.Tensor) -> None:
        n, d = x.shape
        with pyro.plate("data", n, dim=-2):
            z = pyro.sample("z", prior(x))
            loc = (z @ LG.W.T + LG.b).squeeze(-2)
            with pyro.plate("pixels", d, dim=-1):
                pyro.sample("x", dist.Normal(loc, LG.sigma), obs=x, obs_mask=mask[:n])

    def guide(x: torch.Tensor) -> None:
        pairs = [observed_posterior(row, m) for row, m in zip(x, mask[: len(x)], strict=True)]
        mean = torch.stack([m for m, _ in pairs]).unsqueeze(-2)  # (N, 1, L)
        cov = torch.stack([c for _, c in pairs]).unsqueeze(-3)  # (N, 1, L, L)
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=widen * cov))

    return model, guide


def observed_posterior(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(L,)`` and covariance ``(L, L)`` of p(z | the entries of one row x where m)."""
    W, b, s2 = LG.W[m], LG.b[m], LG.sigma**2
    cov = torch.linalg.inv(torch.eye(L, dtype=x.dtype) + W.T @ W / s2)
    return cov @ W.T @ (x[m] - b) / s2, cov


def observed_log_px(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(x_n's observed entries) per point, ``(N,)``."""
    out = []
    for row, m in zip(x, mask, strict=True):
        W = LG.W[m]
        cov = W @ W.T + LG.sigma**2 * torch.eye(int(m.sum()), dtype=x.dtype)
        out.append(dist.MultivariateNormal(LG.b[m], covariance_matrix=cov).log_prob(row[m]))
    return torch.stack(out)
