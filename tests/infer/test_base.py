"""Every objective trains one gradient on every route, and says what it measured.

The three routes are ``pyro.infer.SVI.step`` (which calls ``loss_and_grads``),
``differentiable_loss`` and the ``nn.Module`` loss ``objective(model, guide)``. On the same
draws (seeded) and in float64 their values and gradients agree to rounding, and each sets
``last_terms``. Before, ``beta``, ``free-bits`` and ``warmup`` trained the plain ELBO under
SVI (``loss_and_grads`` was Pyro's ``Trace_ELBO``'s), which this test catches.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from pyro.infer import config_enumerate

from pyro_vae import VAE, VAEConfig
from pyro_vae.infer.objectives import build_objective, objective_names

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,))
SPECS = [
    "elbo",
    "elbo-analytic",
    "iwae:k=3",
    "renyi:alpha=0.5,k=3",
    "tracegraph",
    "beta:beta=2",
    "warmup:epochs=3",
    "free-bits:lambda=0.5",
    "dreg:k=3",
    "stl",
    "elbo-enum",
]


def test_every_registered_objective_is_covered() -> None:
    assert {s.split(":")[0] for s in SPECS} == set(objective_names())


class _Capture(pyro.optim.PyroOptim):
    """An optimizer that records the gradients SVI hands it and changes nothing."""

    def __init__(self) -> None:
        super().__init__(torch.optim.SGD, {"lr": 0.0})
        self.grads: dict[int, torch.Tensor] = {}

    def __call__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.grads = {id(p): p.grad.clone() for p in params if p.grad is not None}


def _setup() -> tuple[VAE, torch.Tensor]:
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(CONFIG).double()
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4, dtype=torch.float64))
    return vae, x


def _route(spec: str, route: str) -> tuple[float, list[torch.Tensor], dict[str, Any]]:
    vae, x = _setup()
    objective = build_objective(spec)
    params = list(vae.parameters())
    pyro.set_rng_seed(7)
    if route == "svi":
        optim = _Capture()
        loss = pyro.infer.SVI(vae.model, vae.guide, optim, objective).step(x)
        grads = [optim.grads[id(p)] for p in params]
    elif route == "differentiable_loss":
        value = objective.differentiable_loss(vae.model, vae.guide, x)
        grads = list(torch.autograd.grad(value, params))
        loss = float(value.detach())
    else:
        value = objective(vae.model, vae.guide)(x)  # Pyro's ELBOModule
        value.backward()
        grads = [p.grad.clone() for p in params]
        loss = float(value.detach())
    return loss, grads, dict(objective.last_terms)


@pytest.mark.parametrize("spec", SPECS)
def test_svi_differentiable_loss_and_module_train_the_same_gradient(spec: str) -> None:
    routes = {r: _route(spec, r) for r in ("svi", "differentiable_loss", "module")}
    loss, grads, terms = routes["differentiable_loss"]
    assert sum(float(g.abs().sum()) for g in grads) > 0
    for name, (other_loss, other_grads, other_terms) in routes.items():
        assert other_loss == pytest.approx(loss, rel=1e-12), name
        for a, b in zip(grads, other_grads, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=f"{spec} {name}")
        assert set(other_terms) == {"reconstruction", "kl"}, name
        for key in terms:
            torch.testing.assert_close(other_terms[key], terms[key], rtol=1e-12, atol=1e-12)


def test_beta_under_svi_is_not_the_plain_elbo() -> None:
    beta = _route("beta:beta=2", "svi")
    plain = _route("elbo", "svi")
    assert beta[0] != pytest.approx(plain[0], rel=1e-6)


@pytest.mark.parametrize("spec", ["elbo", "iwae:k=2", "tracegraph", "beta:beta=2"])
def test_a_guide_marked_for_enumeration_is_refused_not_sampled(spec: str) -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(torch.ones(3, dtype=x.dtype) / 3))
            pyro.sample("x", dist.Normal(y.to(x.dtype), 1.0), obs=x)

    @config_enumerate
    def guide(x: torch.Tensor) -> None:
        probs = pyro.param("probs", torch.ones(3, dtype=x.dtype) / 3)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(probs))

    pyro.clear_param_store()
    x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"site 'y' is marked for enumeration.*TraceEnum_ELBO"):
        build_objective(spec).loss(model, guide, x)
