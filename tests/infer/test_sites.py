"""The one rule for the data plate, read off plate frames, on each plate style."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from pyro_vae.infer import sites
from pyro_vae.infer.sites import DataPlate, SiteError, data_plate, per_point

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.arange(12, dtype=torch.float64).reshape(4, 3)  # 4 points, 3 pixels


def _trace(plate: Any, dim: int = -1, particles: int | None = None) -> Any:
    """x observed in the data plate (dim), its pixels in a plate of 3 (or event dims)."""

    def model(x: torch.Tensor) -> None:
        with plate:
            if dim == -1:
                pyro.sample("x", dist.Normal(torch.zeros_like(x), 1.0).to_event(1), obs=x)
            else:
                with pyro.plate("pixels", 3, dim=-1):
                    pyro.sample("x", dist.Normal(torch.zeros_like(x), 1.0), obs=x)

    nesting = -dim
    if particles is None:
        return poutine.trace(model).get_trace(X), nesting
    with pyro.plate(sites.PARTICLE_PLATE, particles, dim=dim - 1):
        return poutine.trace(model).get_trace(X), nesting


EXACT = dist.Normal(0.0, 1.0).log_prob(X).sum(-1)  # (4,): each point its own


@pytest.mark.parametrize(
    ("plate", "dim"),
    [
        (pyro.plate("data", 4), -1),
        (pyro.plate("data"), -1),  # unsized: Pyro sizes it from the site
        (pyro.plate("rows", 4), -1),  # any name
        (pyro.plate("data", 100, subsample=torch.arange(4)), -1),
        (pyro.plate("data", 4, dim=-2), -2),
        (pyro.plate("data", dim=-2), -2),
    ],
)
def test_each_plate_style_gives_each_point_its_own_value(plate: Any, dim: int) -> None:
    trace, nesting = _trace(plate, dim)
    found = data_plate(trace, n=4)
    assert (found.dim, found.size) == (dim, 4)
    torch.testing.assert_close(per_point(trace.nodes["x"], found), EXACT)
    trace, nesting = _trace(plate, dim, particles=2)
    found = data_plate(trace, n=4, max_plate_nesting=nesting)
    assert (found.dim, found.size) == (dim, 4)
    value = per_point(trace.nodes["x"], found, max_plate_nesting=nesting)
    torch.testing.assert_close(value, EXACT.expand(2, 4))


def test_the_outer_plate_is_the_data_plate_when_an_inner_one_has_the_batch_size() -> None:
    x = torch.zeros(3, 3, dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("rows", 3, dim=-2), pyro.plate("cols", 3, dim=-1):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    plate = data_plate(poutine.trace(model).get_trace(x), n=3)
    assert (plate.name, plate.dim) == ("rows", -2)


def test_mask_applies_and_scale_does_not() -> None:
    mask = torch.tensor([True, False, True, True])

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data"), poutine.scale(scale=10.0), poutine.mask(mask=mask):
            pyro.sample("x", dist.Normal(torch.zeros_like(x), 1.0).to_event(1), obs=x)

    trace = poutine.trace(model).get_trace(X)
    value = per_point(trace.nodes["x"], data_plate(trace, n=4))
    torch.testing.assert_close(value, EXACT * mask)


def test_a_global_site_is_shared_evenly_and_a_missing_plate_is_refused() -> None:
    def model(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).expand([3]).to_event(1), obs=x)

    trace = poutine.trace(model).get_trace(X)
    plate = data_plate(trace, n=4)
    mu = trace.nodes["mu"]
    torch.testing.assert_close(per_point(mu, plate).sum(), sites.log_density(mu))
    assert sites.global_sites(trace, plate) == ["mu"]
    with pytest.raises(SiteError, match=r"one element per row of x \(5 rows\).*'data'"):
        data_plate(trace, n=5)
    no_plate = poutine.trace(lambda: pyro.sample("x", dist.Normal(0.0, 1.0), obs=1.0)).get_trace()
    assert data_plate(no_plate, n=1) == DataPlate(None, None, 1)
    with pytest.raises(SiteError, match="no plate of the program"):
        data_plate(no_plate, n=2)


def test_sites_by_role() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", 4):
            y = pyro.sample(
                "y", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"}
            )
            pyro.sample("x", dist.Normal(y.double(), 1.0), obs=x[:, 0])

    model_trace, _ = sites.run_traces(model, lambda x: None, (X,), {}, nesting=1)
    assert [k for k, _ in sites.latent_sites(model_trace)] == ["y"]
    assert [k for k, _ in sites.observed_sites(model_trace)] == ["x"]
    assert [k for k, _ in sites.enumerated_sites(model_trace)] == ["y"]
    assert model_trace.nodes["y"]["value"].shape == (2, 1, 1)  # left of the particle dim
    assert sites.max_plate_nesting(model_trace) == 1


def test_per_unit_keeps_the_latent_coordinates_of_each_point() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", dim=-2), pyro.plate("group", 2, dim=-1):
            pyro.sample("z", dist.Normal(torch.zeros(4, 2, 3, dtype=x.dtype), 1.0).to_event(1))

    trace = poutine.trace(model).get_trace(X)
    site = trace.nodes["z"]
    plate = data_plate(trace, n=4)
    assert (plate.dim, plate.size) == (-2, 4)
    value = torch.arange(24, dtype=torch.float64).reshape(4, 2, 3)
    torch.testing.assert_close(sites.per_unit(site, plate, value), value.sum(1))
