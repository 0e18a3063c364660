"""elbo_terms and log_likelihood on plain Pyro programs that this package did not write.

Each program here is a linear-Gaussian model with its exact posterior as the guide, so
every importance weight equals log p(x) and the estimates must be exact (zero variance),
whatever the program's style: per-point parameters, a decoder that does not broadcast over
draws, or a data plate that is not named ``data`` and shares its size with another plate.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae import elbo_terms, log_likelihood

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


def _per_point_guide(lg: LinearGaussian, x: torch.Tensor):  # type: ignore[no-untyped-def]
    """A non-amortized guide: one pyro.param row per data point, set to the exact posterior."""
    mean, cov = lg.posterior(x)  # (N, L), (L, L)

    def guide(x: torch.Tensor) -> None:
        loc = pyro.param("loc", mean.clone())  # (N, L): only all N rows at once make sense
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    return guide


def test_per_point_guide_runs_whole_and_chunks_are_refused_clearly(lg: LinearGaussian) -> None:
    pyro.clear_param_store()
    x = lg.sample_x(12)
    guide = _per_point_guide(lg, x)
    ll = log_likelihood(lg.model, guide, x, num_samples=50, batch_size=12)
    torch.testing.assert_close(ll, lg.log_px(x), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"chunk of 4 of the 12 rows.*batch_size=N"):
        log_likelihood(lg.model, guide, x, num_samples=50, batch_size=4)


def test_a_model_that_does_not_broadcast_over_draws_runs_them_one_at_a_time(
    lg: LinearGaussian,
) -> None:
    latent = lg.W.shape[1]

    def model(x: torch.Tensor) -> None:
        n = x.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(latent, dtype=x.dtype), 1.0).to_event(1))
            loc = z.reshape(n, latent) @ lg.W.T + lg.b  # (N, D): fails with a batch of draws
            pyro.sample("x", dist.Normal(loc, lg.sigma).to_event(1), obs=x)

    x = lg.sample_x(7)
    with pytest.warns(UserWarning, match="one at a time"):
        ll = log_likelihood(model, lg.exact_guide, x, num_samples=6, batch_size=3)
    torch.testing.assert_close(ll, lg.log_px(x), rtol=0, atol=1e-9)


def _two_plate_programs(lg: LinearGaussian):  # type: ignore[no-untyped-def]
    """Rows in plate "batch" (dim -2), pixels in plate "pixels" (dim -1): no "data" name."""
    latent = lg.W.shape[1]

    def model(x: torch.Tensor) -> None:
        n, d = x.shape
        with pyro.plate("batch", n, dim=-2):
            prior = dist.Normal(torch.zeros(latent, dtype=x.dtype), 1.0).to_event(1)
            z = pyro.sample("z", prior)  # (..., N, 1, L)
            loc = (z @ lg.W.T + lg.b).squeeze(-2)  # (..., N, D)
            with pyro.plate("pixels", d, dim=-1):
                pyro.sample("x", dist.Normal(loc, lg.sigma), obs=x)

    def guide(x: torch.Tensor) -> None:
        mean, cov = lg.posterior(x)  # (N, L), (L, L)
        with pyro.plate("batch", x.shape[0], dim=-2):
            pyro.sample("z", dist.MultivariateNormal(mean.unsqueeze(-2), covariance_matrix=cov))

    return model, guide


@pytest.mark.parametrize("num_samples", [1, 5, 9])
def test_data_plate_is_the_outer_one_when_an_inner_plate_has_the_same_size(
    lg: LinearGaussian, num_samples: int
) -> None:
    """N = D = 5 rows and pixels; k = 5 also gives the particle plate that size."""
    model, guide = _two_plate_programs(lg)
    x = lg.sample_x(5)
    exact = lg.log_px(x)  # (N,)
    ll = log_likelihood(model, guide, x, num_samples=num_samples)
    torch.testing.assert_close(ll, exact, rtol=0, atol=1e-9)
    # Monte Carlo KL: with the exact posterior every draw's log weight is log p(x) (zero
    # variance); the analytic KL of this MVN guide (guides/kl.py) would add the
    # reconstruction term's sampling noise.
    terms = elbo_terms(model, guide, x, analytic_kl=False)
    torch.testing.assert_close(terms["elbo"], exact, rtol=0, atol=1e-9)
