"""``TraceELBO`` against Pyro's ``Trace_ELBO``: value and gradient on the same draws.

``TraceELBO`` returns its estimate alone when every guide site is reparameterized (the
estimate is then its own surrogate) and the estimate with the surrogate's gradient otherwise.
These programs cover both routes and their mixture across sites, with one and two particles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.infer.elbos import TraceELBO


class _Program(nn.Module):
    """z ~ N(0, 1), b ~ Bernoulli(0.3) per point; x ~ N(w z + v b, 1). The guide's z site is
    reparameterized or not (``rsample``); its b site is sampled (a score-function term)."""

    def __init__(self, rsample: bool, discrete: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, dtype=torch.float64))
        self.v = nn.Parameter(torch.randn(3, dtype=torch.float64))
        self.enc = nn.Linear(3, 3).double()
        self.rsample, self.discrete = rsample, discrete

    def model(self, x: torch.Tensor) -> None:
        pyro.module("program", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            loc = z[:, None] * self.w
            if self.discrete:
                b = pyro.sample("b", dist.Bernoulli(x.new_tensor(0.3)))
                loc = loc + b[:, None] * self.v
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("program", self)
        h = self.enc(x)
        with pyro.plate("data", x.shape[0]):
            q = dist.Normal(h[:, 0], nn.functional.softplus(h[:, 1]) + 0.1)
            pyro.sample("z", q if self.rsample else q.has_rsample_(False))
            if self.discrete:
                pyro.sample("b", dist.Bernoulli(logits=h[:, 2]))


def _value_and_grads(
    program: _Program, loss_of: Callable[[_Program, torch.Tensor], torch.Tensor | float]
) -> tuple[float, list[torch.Tensor]]:
    x = torch.linspace(-2.0, 2.0, 15, dtype=torch.float64).reshape(5, 3)
    program.zero_grad()
    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    value = loss_of(program, x)
    grads = [
        torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in program.parameters()
    ]
    return float(value), grads


def _ours(particles: int) -> Callable[[_Program, torch.Tensor], Any]:
    def run(program: _Program, x: torch.Tensor) -> Any:
        loss = TraceELBO(num_particles=particles).differentiable_loss(
            program.model, program.guide, x
        )
        loss.backward()
        return loss.detach()

    return run


def _pyros(particles: int) -> Callable[[_Program, torch.Tensor], Any]:
    def run(program: _Program, x: torch.Tensor) -> Any:
        elbo = pyro.infer.Trace_ELBO(num_particles=particles)
        return elbo.loss_and_grads(program.model, program.guide, x)

    return run


@pytest.mark.parametrize("particles", [1, 2])
@pytest.mark.parametrize(
    ("rsample", "discrete"),
    [(True, False), (False, False), (True, True), (False, True)],
    ids=["reparameterized", "score-function", "mixed", "score-function-two-sites"],
)
def test_same_value_and_gradient_as_trace_elbo(
    rsample: bool, discrete: bool, particles: int
) -> None:
    program = _Program(rsample, discrete)
    ours = _value_and_grads(program, _ours(particles))
    theirs = _value_and_grads(program, _pyros(particles))
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12)
    for a, b in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
