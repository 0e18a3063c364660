r"""The diagnostics on the semi-supervised model M2 (tests/m2.py) and on guides that are
methods of an ``nn.Module``.

M2's guide is :math:`q(y|x)\,q(z|x,y)` with :math:`q(z|x,y) = p(z|x,y)` (or widened). The
latent statistics are about the continuous z: y is no unit, the posterior mean
:math:`\mathbb{E}_q[z|x] = \sum_y q(y|x)\,\mathbb{E}[z|x,y]` is summed over y exactly, and
the mutual information, whose q(z|x) is then a mixture, is refused with the reason.
Supervised (y observed), the inference gaps have closed forms.
"""

from __future__ import annotations

import math
import warnings

import m2
import pyro
import pyro.distributions as dist
import pytest
import torch
from plate_styles import LG  # d = 5; M2's own is m2.LG (d = 4)

from pyro_vae.analysis import gaps, latent

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

Z = 4.5
Q_Y = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
LABELS = [0, 1, 2, 0, 1, 2]


def test_active_units_sum_the_class_and_count_z_only() -> None:
    _, guide = m2.m2_programs(Q_Y)
    x = m2.m2_data(LABELS)
    units = latent.active_units(guide, x)
    assert units.discrete == ["y"] and len(units.variances) == 2  # z's 2 coordinates, not y's 3
    expected = m2.m2_posterior_mean(x, Q_Y).var(0)
    assert units.variances == pytest.approx(expected.tolist(), rel=1e-9)


def test_kl_per_dim_averages_over_the_sampled_class() -> None:
    """Per coordinate, E_{q(y)} KL(N(m_yj(x), S_jj) || N(0, 1)) averaged over the points:
    each draw of y gives the closed-form KL, so the Monte Carlo error is that of y alone,
    sqrt(sum_n Var_y KL_nj / (P N^2))."""
    model, guide = m2.m2_programs(Q_Y, enumerate_guide=False)
    x = m2.m2_data(LABELS)
    pyro.set_rng_seed(4)
    result = latent.kl_per_dim(model, guide, x, num_particles=200)
    assert (
        result.discrete == ["y"] and result.method == "monte-carlo" and result.site_of == ["z"] * 2
    )
    lg = m2.LG
    s = lg.posterior(x)[1].diagonal()
    means = torch.stack([lg.posterior(x - m2.B[c] + lg.b)[0] for c in range(3)])  # (3, N, L)
    kl = 0.5 * (s + means**2 - 1 - s.log())  # (3, N, L)
    mean = (Q_Y[:, None, None] * kl).sum(0)  # (N, L)
    var = (Q_Y[:, None, None] * (kl - mean) ** 2).sum(0)
    se = (var.sum(0) / (200 * len(LABELS) ** 2)).sqrt()
    got = torch.tensor(result.values, dtype=torch.float64)
    assert ((got - mean.mean(0)).abs() < Z * se).all(), (got, mean.mean(0), se)


def test_mutual_information_and_gaps_refuse_the_class_with_the_reason() -> None:
    model, guide = m2.m2_programs(Q_Y)
    x = m2.m2_data(LABELS)
    mi = latent.mutual_information(guide, x)
    assert mi.value is None and mi.reason is not None
    assert "['y', 'z']" in mi.reason and "mixture" in mi.reason
    with pytest.raises(ValueError, match=r"discrete latent sites \['y'\].*labels"):
        gaps.inference_gaps(model, guide, x)


def test_supervised_inference_gaps_have_their_closed_form() -> None:
    """y observed, q(z|x,y) = N(m, 1.5 S), unsized plate (Pyro's ss_vae_M2 style). The best
    full-covariance Normal is p(z|x,y): approximation gap 0, amortization gap
    KL(N(m, 1.5 S) || N(m, S)) = L/2 (1.5 - 1 - log 1.5), within Z standard errors plus a
    0.01-nat optimization tolerance; log p(x, y) per point is exact (within Z SE). No Pyro
    warning (a plate in the local guide that the model lacks used to give one per step)."""
    x, y = m2.m2_data(LABELS), torch.tensor(LABELS)
    model, guide = m2.m2_programs(Q_Y, widen=1.5)
    pyro.set_rng_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = gaps.inference_gaps(
            model, guide, x, y, steps=150, lr=0.05, num_particles=32, num_samples=200
        )
    kl = 0.5 * 2 * (1.5 - 1 - math.log(1.5))
    for key, exact in (("approximation_gap", 0.0), ("amortization_gap", kl)):
        est = result[key]
        assert est["se"] > 0 and abs(est["mean"] - exact) < Z * est["se"] + 0.01, (key, est)
    joint = m2.m2_joint(x).gather(1, y[:, None]).squeeze(1)
    diff = torch.tensor(result["per_point"]["log_px"], dtype=torch.float64) - joint
    assert abs(float(diff.mean())) < Z * float(diff.std()) / math.sqrt(6) + 1e-6, diff


class _Encoder(torch.nn.Module):
    """A module whose ``guide`` method is the exact posterior behind an identity flow (its
    parameters cannot be read off the distribution), scaled by ``exp(log_scale)`` = 1."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def guide(self, x: torch.Tensor) -> None:
        mean, cov = LG.posterior(x)
        base = dist.MultivariateNormal(mean, covariance_matrix=cov * self.log_scale.exp())
        identity = dist.transforms.AffineTransform(0.0, 1.0, event_dim=1)
        with pyro.plate("data"):
            pyro.sample("z", dist.TransformedDistribution(base, [identity]))


def test_inference_gaps_copy_the_module_of_a_bound_method() -> None:
    """A bound method of an nn.Module is copied per point like the module. With no steps
    and the exact posterior, every weight is p(x_n): each figure is log p(x_n) to rounding."""
    encoder = _Encoder()
    assert gaps.check_inference_gaps(encoder.guide, LG.sample_x(2)) == (
        "per-point copies of the guide"
    )
    x = LG.sample_x(4)
    result = gaps.inference_gaps(LG.model, encoder.guide, x, steps=0, num_samples=6)
    exact = LG.log_px(x).tolist()
    for key in ("elbo_amortized", "elbo_optimized", "log_px"):
        assert result["per_point"][key] == pytest.approx(exact, abs=1e-9), key
    steps = gaps.inference_gaps(LG.model, encoder.guide, x, steps=2, lr=1e-4, num_samples=6)
    assert steps["per_point"]["log_px"] == pytest.approx(exact, abs=1e-3)
