"""Every plate style a Pyro user writes gives each data point its own, exact value.

The programs are linear-Gaussian (tests/plate_styles.py, shared with the diagnostics'
tests) written in each style: a sized
or unsized data plate, at dim -1 or -2, subsampled, with ``obs_mask`` or ``poutine.scale``.
The guide is the exact posterior, so every importance weight equals log p(x_n): the ELBO
(Monte Carlo KL), the log weights and the IW estimate must all equal the exact per-point
log p(x_n) to rounding (zero variance), and the points' values differ from each other.
A rule that found the wrong data dim would spread the batch mean over the points.
"""

from __future__ import annotations

import plate_styles
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import elbo_terms, log_likelihood, log_weights
from pyro_vae.infer.sites import SiteError

pytestmark = pytest.mark.usefixtures("one_thread")

STYLES = plate_styles.STYLES
LG, L, Programs, _prior = plate_styles.LG, plate_styles.L, plate_styles.Programs, plate_styles.prior
_dim_minus_one = plate_styles.dim_minus_one


def _not_vectorizable() -> Programs:
    """Pyro's CVAE example style: an unsized plate and boolean-mask indexing of the mean."""

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data"):
            z = pyro.sample("z", _prior(x).expand([x.shape[0]]))
            loc = z @ LG.W.T + LG.b
            keep = torch.ones_like(x, dtype=torch.bool)  # indexing loses the batch of draws
            loc = loc[keep].view(x.shape[0], -1)
            pyro.sample("x", dist.Normal(loc, LG.sigma).to_event(1), obs=x)

    return model, _dim_minus_one("unsized")[1]


@pytest.fixture
def x() -> torch.Tensor:
    return LG.sample_x(7)


@pytest.mark.parametrize("style", list(STYLES))
def test_elbo_terms_gives_each_point_its_own_exact_value(style: str, x: torch.Tensor) -> None:
    model, guide = STYLES[style]()
    exact = LG.log_px(x)
    assert exact.std() > 1.0  # the points differ: a batch mean would fail
    terms = elbo_terms(model, guide, x, analytic_kl=False)
    torch.testing.assert_close(terms["elbo"], exact, rtol=0, atol=1e-9)
    analytic = elbo_terms(model, guide, x)
    assert analytic.kl_method["z"] == "analytic"
    torch.testing.assert_close(analytic["kl"], _exact_kl(x), rtol=0, atol=1e-9)


def _exact_kl(x: torch.Tensor) -> torch.Tensor:
    """KL(p(z|x_n) || N(0, I)) per point, in closed form."""
    mean, cov = LG.posterior(x)
    return 0.5 * (cov.trace() + (mean**2).sum(-1) - L - torch.logdet(cov))


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("num_samples", [1, 3])
def test_log_likelihood_and_log_weights_are_exact_per_point(
    style: str, num_samples: int, x: torch.Tensor
) -> None:
    model, guide = STYLES[style]()
    exact = LG.log_px(x)
    torch.testing.assert_close(
        log_likelihood(model, guide, x, num_samples=num_samples), exact, rtol=0, atol=1e-9
    )
    lw = log_weights(model, guide, x, num_samples)
    assert lw.shape == (num_samples, 7)
    torch.testing.assert_close(lw, exact.expand(num_samples, 7), rtol=0, atol=1e-9)


def test_a_program_that_does_not_vectorize_runs_one_draw_at_a_time(x: torch.Tensor) -> None:
    """IndexError under a particle plate (Pyro's CVAE): caught, and each point is its own."""
    model, guide = _not_vectorizable()
    with pytest.warns(UserWarning, match="one at a time"):
        ll = log_likelihood(model, guide, x, num_samples=4, batch_size=4)
    torch.testing.assert_close(ll, LG.log_px(x), rtol=0, atol=1e-9)
    terms = elbo_terms(model, guide, x, analytic_kl=False)
    torch.testing.assert_close(terms["elbo"], LG.log_px(x), rtol=0, atol=1e-9)


_masked_programs = plate_styles.masked_programs
_observed_log_px = plate_styles.observed_log_px


def test_obs_mask_scores_the_observed_entries_of_each_point(x: torch.Tensor) -> None:
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) > 0.4
    mask[:, 0] = True  # every point observes something
    model, guide = _masked_programs(mask)
    exact = _observed_log_px(x, mask)
    pyro.set_rng_seed(0)
    torch.testing.assert_close(
        log_likelihood(model, guide, x, num_samples=3), exact, atol=1e-9, rtol=0
    )
    terms = elbo_terms(model, guide, x, analytic_kl=False)
    torch.testing.assert_close(terms["elbo"], exact, rtol=0, atol=1e-9)
    assert terms.kl_method["x_unobserved"] == "prior"


def test_a_plate_that_subsamples_the_rows_of_x_is_refused(x: torch.Tensor) -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], subsample_size=3) as idx:
            z = pyro.sample("z", _prior(x))
            pyro.sample("x", dist.Normal(z @ LG.W.T + LG.b, LG.sigma).to_event(1), obs=x[idx])

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], subsample_size=3):
            pyro.sample("z", _prior(x))

    with pytest.raises(SiteError, match=r"one element per row of x \(7 rows\).*'data'.*size 3"):
        elbo_terms(model, guide, x)
    with pytest.raises(SiteError, match="one element per row of x"):
        log_likelihood(model, guide, x, num_samples=2)


def test_a_latent_shared_by_the_points_is_refused_by_the_per_point_estimators() -> None:
    def model(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("mu", dist.Normal(torch.tensor(0.3, dtype=x.dtype), 0.8))

    x = torch.linspace(-1, 1, 6, dtype=torch.float64)
    with pytest.raises(SiteError, match=r"site 'mu' is outside the data plate 'data'"):
        log_likelihood(model, guide, x, num_samples=2)
    terms = elbo_terms(model, guide, x)  # the ELBO is a sum: the shared KL is split evenly
    assert terms["kl"].std() == 0 and terms["reconstruction"].std() > 0.1
