r"""Discrete latents summed over their support, against exact marginals.

Two Pyro-style programs with a class :math:`y \in \{0, 1, 2\}`:

* a mixture of Gaussians with the class enumerated in the model (``config_enumerate`` on
  the model, an empty guide): :math:`\log p(x) = \operatorname{logsumexp}_y [\log \pi_y +
  \log \mathcal{N}(x; \mu_y, s^2)]`;
* an M2-style model :math:`p(y)\,p(z)\,p(x|y,z)` with :math:`x|y,z \sim \mathcal{N}(Wz +
  b_y, \sigma^2 I)`, and a guide :math:`q(y|x)\,q(z|x,y)` with y enumerated and
  :math:`q(z|x,y)` the exact :math:`p(z|x,y)`. Then every :math:`\hat p(x|y)` is exact, so
  :math:`\log \hat p(x) = \log \sum_y p(y)\,p(x|y)` exactly for *any* :math:`q(y|x)`, and
  the ELBO is :math:`\log p(x) - \mathrm{KL}(q(y|x)\,\|\,p(y|x))` in closed form.
"""

from __future__ import annotations

import m2
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate

from pyro_vae import elbo_terms, log_likelihood, log_weights
from pyro_vae.infer.sites import SiteError

pytestmark = pytest.mark.usefixtures("one_thread")

PI = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
MU = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
LG, B = m2.LG, m2.B  # the M2 programs: tests/m2.py


@config_enumerate
def gmm(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(PI))
        pyro.sample("x", dist.Normal(MU[y], 0.7), obs=x)


def empty_guide(x: torch.Tensor) -> None:
    pass


def _gmm_log_px(x: torch.Tensor) -> torch.Tensor:
    return (PI.log() + dist.Normal(MU, 0.7).log_prob(x[:, None])).logsumexp(-1)


def test_model_side_enumeration_of_a_mixture_is_exact() -> None:
    x = torch.linspace(-3, 4, 9, dtype=torch.float64)
    exact = _gmm_log_px(x)
    torch.testing.assert_close(log_likelihood(gmm, empty_guide, x, num_samples=2), exact)
    terms = elbo_terms(gmm, empty_guide, x)
    torch.testing.assert_close(terms["elbo"], exact, rtol=0, atol=1e-12)
    assert terms.kl_method == {"y": "enumerated"}
    # reconstruction and KL under the exact class posterior p(y|x)
    post = (PI.log() + dist.Normal(MU, 0.7).log_prob(x[:, None])).softmax(-1)  # (N, 3)
    recon = (post * dist.Normal(MU, 0.7).log_prob(x[:, None])).sum(-1)
    torch.testing.assert_close(terms["reconstruction"], recon, rtol=0, atol=1e-12)


_m2_programs, _m2_exact = m2.m2_programs, m2.m2_joint


@pytest.mark.parametrize("onehot", [False, True])
@pytest.mark.parametrize("q", [[1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]])
def test_guide_side_enumeration_sums_the_class_exactly(q: list[float], onehot: bool) -> None:
    q_y = torch.tensor(q, dtype=torch.float64)
    model, guide = _m2_programs(q_y, onehot=onehot)
    x = LG.sample_x(6) + B[torch.tensor([0, 1, 2, 0, 1, 2])] - LG.b
    joint = _m2_exact(x)
    exact = joint.logsumexp(-1)
    pyro.set_rng_seed(0)
    ll = log_likelihood(model, guide, x, num_samples=3)
    torch.testing.assert_close(ll, exact, rtol=0, atol=1e-9)
    assert ll.std() > 0.2  # each point its own value
    torch.testing.assert_close(
        log_weights(model, guide, x, 2), exact.expand(2, 6), rtol=0, atol=1e-9
    )
    terms = elbo_terms(model, guide, x, analytic_kl=False)
    elbo = (q_y * (joint - q_y.log())).sum(-1)  # sum_y q(y) [log p(x, y) - log q(y)]
    torch.testing.assert_close(terms["elbo"], elbo, rtol=0, atol=1e-9)
    kl_y = (q_y * (q_y.log() - PI.log())).sum()
    torch.testing.assert_close(terms["kl:y"], kl_y.expand(6), rtol=0, atol=1e-12)
    assert terms.kl_method["y"] == "enumerated"


def test_a_sampled_class_is_an_unbiased_monte_carlo_estimate() -> None:
    """Without config_enumerate the class is sampled: the same bounds, in expectation."""
    q_y = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    model, guide = _m2_programs(q_y, enumerate_guide=False)
    x = LG.sample_x(4) + B[torch.tensor([0, 1, 2, 0])] - LG.b
    joint = _m2_exact(x)
    elbo = (q_y * (joint - q_y.log())).sum(-1)
    pyro.set_rng_seed(1)
    draws = torch.stack(
        [elbo_terms(model, guide, x, analytic_kl=False)["elbo"] for _ in range(400)]
    )
    se = draws.std(0) / 400**0.5
    assert ((draws.mean(0) - elbo).abs() < 4.5 * se + 1e-9).all()


def test_programs_out_of_scope_are_refused_with_the_site_and_the_fix() -> None:
    x = torch.linspace(-3, 4, 6, dtype=torch.float64)

    def sequential(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(PI), infer={"enumerate": "sequential"})
            pyro.sample("x", dist.Normal(MU[y], 0.7), obs=x)

    with pytest.raises(SiteError, match=r"site 'y' asks for 'sequential'.*parallel"):
        log_likelihood(sequential, empty_guide, x, num_samples=2)

    @config_enumerate
    def nested(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]), pyro.plate("copies", 2, dim=-2):
            y = pyro.sample("y", dist.Categorical(PI))
            pyro.sample("x", dist.Normal(MU[y], 0.7), obs=x)

    with pytest.raises(SiteError, match=r"enumerated site 'y' is in plates \['copies', 'data'\]"):
        elbo_terms(nested, empty_guide, x)

    @config_enumerate
    def flat(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(PI))
            pyro.sample("x", dist.Normal(MU[y].reshape(x.shape[0]), 0.7), obs=x)

    with pytest.raises(SiteError, match=r"sites \['y'\] enumerated in parallel.*broadcast"):
        elbo_terms(flat, empty_guide, x)
    with pytest.raises(SiteError, match=r"sites \['y'\] enumerated in parallel.*broadcast"):
        log_likelihood(flat, empty_guide, x, num_samples=2)
