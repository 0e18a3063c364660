"""The property suite: every registered prior x likelihood x guide family works together.

The registries are iterated, so a component registered later (a new likelihood, a user's
plugin) is covered automatically. Each combination takes one training step, has the right
trace shapes and survives save/load with identical outputs. Every prior x guide pair is
also run with two stochastic layers and as a conditional VAE (Bernoulli likelihood).
Networks are tiny (8 points of shape (1, 4, 4), one hidden layer of 8) to keep this fast.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae import VAE, VAEConfig, elbo_terms, load, log_likelihood, save
from pyro_vae.guides import GUIDES
from pyro_vae.infer.decomposition import traces
from pyro_vae.infer.importance import PointEstimateError, log_weights
from pyro_vae.infer.objectives import EnumELBO, TraceELBO
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.registry import Registry

N, LATENT, CLASSES = 8, 2, 3
SHAPE = (1, 4, 4)
# pairs that must be refused at build time, with the reason the message gives
REFUSED = {("vamp", "delta"): "point mass"}
# the smallest setting of each size parameter a component may declare
SMALL = {"components": "2", "layers": "1", "rank": "1"}
# further settings that build different parts, each run as one more name
VARIANTS = {"flow": ["flow:layers=1,kind=spline"]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny networks are latency-bound: one intra-op thread avoids OpenMP hand-offs (4-8x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small_spec(registry: Registry, name: str) -> str:
    params = registry.entry(name).params
    keys = [f"{k}={v}" for k, v in SMALL.items() if k in params]
    return name + (":" + ",".join(keys) if keys else "")


def _generators() -> list[Callable[[torch.Generator], torch.Tensor]]:
    """Candidate data, most general first: the first a likelihood accepts is its data."""
    size = (N, *SHAPE)
    return [
        lambda g: torch.randn(size, generator=g),  # real values
        lambda g: torch.rand(size, generator=g).clamp(0.01, 0.99),  # in (0, 1)
        lambda g: torch.randint(0, 256, size, generator=g).float() / 255,  # 8-bit grid in [0, 1]
        lambda g: torch.randint(0, 20, size, generator=g).float(),  # counts
        lambda g: torch.randint(0, 256, size, generator=g).float(),  # 8-bit integers
        lambda g: torch.bernoulli(torch.full(size, 0.4), generator=g),  # binary
    ]


def data_for(vae: VAE, seed: int = 0) -> torch.Tensor:
    """Synthetic data in the support of ``vae``'s likelihood (the first candidate it takes)."""
    for make in _generators():
        x = make(torch.Generator().manual_seed(seed))
        try:
            vae.check_data(x)
        except ValueError:
            continue
        return x
    pytest.skip(f"no synthetic data fits the likelihood {vae.config.likelihood!r}")


def _specs(registry: Registry) -> list[str]:
    """Each registered name at its small setting, then the listed variants."""
    names = registry.names()
    return [_small_spec(registry, n) for n in names] + [
        v for n in names for v in VARIANTS.get(n, [])
    ]


# the table likelihood decodes the rows of a data set's schema, not (2, 3) items: it meets
# every prior, guide family and objective in tests/models/test_tabular.py
SCHEMA_ONLY = {"table"}

CASES = [
    pytest.param(prior, guide, likelihood, "one-layer", id=f"{prior}-{guide}-{likelihood}")
    for prior, guide, likelihood in itertools.product(
        _specs(PRIORS), _specs(GUIDES), _specs(LIKELIHOODS)
    )
    if likelihood.partition(":")[0] not in SCHEMA_ONLY
] + [
    pytest.param(prior, guide, "bernoulli", structure, id=f"{prior}-{guide}-{structure}")
    for structure in ("two-layer", "conditional")
    for prior, guide in itertools.product(_specs(PRIORS), _specs(GUIDES))
]


def _config(prior: str, guide: str, likelihood: str, structure: str) -> VAEConfig:
    return VAEConfig(
        data_shape=SHAPE,
        latent_dim=LATENT,
        hidden=(8,),
        prior=prior,
        guide=guide,
        likelihood=likelihood,
        upper_latent_dims=(LATENT,) if structure == "two-layer" else (),
        upper_hidden=(8,),
        conditional=structure == "conditional",
        num_classes=CLASSES if structure == "conditional" else 0,
    )


@pytest.mark.parametrize(("prior", "guide", "likelihood", "structure"), CASES)
def test_combination(
    prior: str, guide: str, likelihood: str, structure: str, tmp_path: Path
) -> None:
    config = _config(prior, guide, likelihood, structure)
    names = (prior.partition(":")[0], guide.partition(":")[0])
    if names in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[names]):
            VAE(config)
        return
    pyro.set_rng_seed(0)
    vae = VAE(config)
    x = data_for(vae)
    args = (torch.arange(N) % CLASSES,) if config.conditional else ()
    _one_training_step(vae, x, args)
    _trace_shapes(vae, x, args)
    _round_trip(vae, x, args, tmp_path)


def _one_training_step(vae: VAE, x: torch.Tensor, args: tuple[torch.Tensor, ...]) -> None:
    loss_fn = TraceELBO()(vae.model, vae.guide)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    before = {k: v.detach().clone() for k, v in vae.named_parameters()}
    loss = loss_fn(x, *args) / N
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = {k for k, v in vae.named_parameters() if not torch.equal(v, before[k])}
    assert any(k.startswith("model.decoder.") for k in changed)
    assert any(k.startswith("guide.encoder.") for k in changed)
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def _trace_shapes(vae: VAE, x: torch.Tensor, args: tuple[torch.Tensor, ...]) -> None:
    model_trace, guide_trace = traces(vae.model, vae.guide, x, *args)
    dims = dict(zip(vae.model.site_names, (LATENT, *vae.config.upper_latent_dims), strict=True))
    latent = [k for k, s in model_trace.nodes.items() if s["type"] == "sample" and k != "x"]
    assert latent == list(reversed(vae.model.site_names))  # top-down in the model
    assert [
        k for k, s in guide_trace.nodes.items() if s["type"] == "sample"
    ] == vae.guide.site_names
    for name, size in dims.items():
        for tr in (model_trace, guide_trace):
            site = tr.nodes[name]
            assert site["value"].shape == (N, size)
            assert site["fn"].batch_shape == (N,) and site["fn"].event_shape == (size,)
            assert site["fn"].log_prob(site["value"]).shape == (N,)
            assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    site = model_trace.nodes["x"]
    assert site["value"].shape == (N, *SHAPE) and site["fn"].event_shape == SHAPE
    assert site["fn"].log_prob(site["value"]).shape == (N,)
    terms = elbo_terms(vae.model, vae.guide, x, *args)
    assert all(v.shape == (N,) and bool(torch.isfinite(v).all()) for v in terms.values())
    assert set(terms.kl_method) == set(dims)
    if vae.config.guide.startswith("delta"):
        assert set(terms.kl_method.values()) == {"delta"}
        with pytest.raises(PointEstimateError, match="point mass"):
            log_likelihood(vae.model, vae.guide, x, *args, num_samples=2)
    else:  # a particle plate (K, N) left of the data plate
        lw = log_weights(vae.model, vae.guide, x, 3, *args)
        assert lw.shape == (3, N) and bool(torch.isfinite(lw).all())


def _round_trip(vae: VAE, x: torch.Tensor, args: tuple[torch.Tensor, ...], tmp: Path) -> None:
    save(vae, tmp / "run")
    loaded = load(tmp / "run")
    assert loaded.config == vae.config
    outputs = []
    for v in (vae, loaded):
        pyro.set_rng_seed(1)
        terms = elbo_terms(v.model, v.guide, x, *args)
        outputs.append([terms[k].detach() for k in sorted(terms)] + [v.sample(2)])
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------- the semi-supervised VAE

# M2 (VAEConfig(semi_supervised=True)): every prior x guide family with the Bernoulli
# likelihood, every likelihood with the normal prior and guide, and every network
SEMI_CASES = (
    [
        pytest.param(prior, guide, "bernoulli", "mlp", id=f"m2-{prior}-{guide}")
        for prior, guide in itertools.product(_specs(PRIORS), _specs(GUIDES))
    ]
    + [
        pytest.param("normal", "normal", likelihood, "mlp", id=f"m2-{likelihood}")
        for likelihood in _specs(LIKELIHOODS)
        if likelihood != "bernoulli" and likelihood.partition(":")[0] not in SCHEMA_ONLY
    ]
    + [pytest.param("normal", "normal", "bernoulli", "conv:channels=2,layers=1", id="m2-conv")]
)


@pytest.mark.parametrize(("prior", "guide", "likelihood", "network"), SEMI_CASES)
def test_semi_supervised_combination(
    prior: str, guide: str, likelihood: str, network: str, tmp_path: Path
) -> None:
    config = VAEConfig(
        data_shape=SHAPE if network == "mlp" else (1, 8, 8),
        latent_dim=LATENT,
        hidden=(8,),
        prior=prior,
        guide=guide,
        likelihood=likelihood,
        network=network,
        semi_supervised=True,
        num_classes=CLASSES,
    )
    names = (prior.partition(":")[0], guide.partition(":")[0])
    if names in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[names]):
            VAE(config)
        return
    pyro.set_rng_seed(0)
    vae = VAE(config)
    x = data_for(vae) if network == "mlp" else torch.bernoulli(torch.full((N, 1, 8, 8), 0.4))
    y = torch.where(torch.arange(N) % 2 == 0, torch.arange(N) % CLASSES, -1)  # half hidden
    _enumerated_training_step(vae, x, y)
    terms = elbo_terms(vae.model, vae.guide, x, y)
    assert all(v.shape == (N,) and bool(torch.isfinite(v).all()) for v in terms.values())
    assert terms.kl_method["y"] == "enumerated"
    if not guide.startswith("delta"):
        ll = log_likelihood(vae.model, vae.guide, x, num_samples=2)  # y summed out
        assert ll.shape == (N,) and bool(torch.isfinite(ll).all())
    assert vae.classify(x).shape == (N, CLASSES)
    _round_trip(vae, x, (y,), tmp_path)


def _enumerated_training_step(vae: VAE, x: torch.Tensor, y: torch.Tensor) -> None:
    loss_fn = EnumELBO(classifier_weight=1.0)(vae.model, vae.guide)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    before = {k: v.detach().clone() for k, v in vae.named_parameters()}
    loss = loss_fn(x, y) / N
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = {k for k, v in vae.named_parameters() if not torch.equal(v, before[k])}
    for part in ("model.decoder.", "guide.encoder.", "guide.classifier."):
        assert any(k.startswith(part) for k in changed), part
    assert all(torch.isfinite(p).all() for p in vae.parameters())
