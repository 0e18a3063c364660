"""pyro_vae.analysis.psis: PSIS k-hat on the linear-Gaussian model, its summary, and the
sentence that interprets it.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import LinearGaussian

from pyro_vae.analysis import psis

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian.random(d=5, latent=2, sigma=0.5, seed=0)


def test_psis_khat_small_for_a_good_guide_and_large_for_a_poor_one(lg: LinearGaussian) -> None:
    x = lg.sample_x(30)
    pyro.set_rng_seed(2)
    exact = psis.psis_khat(lg.model, lg.exact_guide, x, num_samples=500)
    assert (exact == 0).all()  # equal weights: nothing to fit

    def near_exact(x: torch.Tensor) -> None:  # p(z|x) with its covariance 1% wider
        mean, cov = lg.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, 1.01 * cov))

    # real weights, bounded above (q wider than p), through arviz.psislw: k-hat well below 0.5
    near = psis.psis_khat(lg.model, near_exact, x, num_samples=500)
    assert (near != 0).all() and psis.khat_summary(near)["max"] < 0.5, near
    wide = psis.psis_khat(lg.model, lg.diagonal_guide(1.3), x, num_samples=1000)
    assert psis.khat_summary(wide)["max"] < 0.5  # q wider than p(z|x): bounded weights
    poor = psis.khat_summary(
        psis.psis_khat(lg.model, lg.diagonal_guide(0.5, 0.5), x, num_samples=1000)
    )
    assert poor["frac_above_0.7"] > 0.9 and poor["mean"] > 0.7  # q narrow and shifted
    worst = psis.worst_points(wide, 3, elbo=list(range(30)))
    assert [w["khat"] for w in worst] == sorted(wide.tolist(), reverse=True)[:3]
    assert all(w["elbo"] == w["index"] for w in worst)


def test_psis_inputs_are_validated(lg: LinearGaussian) -> None:
    x = lg.sample_x(3)
    with pytest.raises(ValueError, match="num_samples must be an int >= 2"):
        psis.psis_khat(lg.model, lg.exact_guide, x, num_samples=1)


@pytest.mark.parametrize(
    ("fractions", "needles"),
    [
        ((0.9, 0.72), ["72% of points", "too high", "more importance samples", "IWAE"]),
        ((0.1, 0.003), ["0.3% of points", "reliable elsewhere", "likely too high"]),
        ((0.2, 0.0), ["every point (20% between 0.5 and 0.7)", "can be trusted"]),
        ((0.0, 0.0), ["k-hat <= 0.5 at every point", "reliable"]),
    ],
)
def test_interpret_khat_says_what_it_means_for_the_nll(
    fractions: tuple[float, float], needles: list[str]
) -> None:
    """One sentence: what k-hat means for the IW NLL just printed, and what to do about it."""
    summary = {"mean": 0.8, "max": 1.5, "frac_above_0.5": fractions[0]}
    sentence = psis.interpret_khat({**summary, "frac_above_0.7": fractions[1]})
    assert "\n" not in sentence and sentence.endswith(".")
    for needle in needles:
        assert needle in sentence, sentence


def test_the_first_flat_paths_still_import_the_diagnostics() -> None:
    """pyro_vae.diagnostics (now pyro_vae.analysis.diagnostics) gathers every diagnostic."""
    import pyro_vae.diagnostics as old  # type: ignore[import-not-found]
    from pyro_vae.analysis import diagnostics, gaps, latent, mcmc

    assert old is diagnostics
    assert old.psis_khat is psis.psis_khat and old.kl_per_dim is latent.kl_per_dim
    assert old.inference_gaps is gaps.inference_gaps and old.nuts_posterior is mcmc.nuts_posterior
