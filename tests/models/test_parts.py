"""Priors, guide families and structures against exact references, in float64.

Statistical checks use fixed seeds and tolerances of Z Monte Carlo standard errors computed
from the draws themselves; densities are checked by quadrature on a 2-D grid.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

from pyro_vae import (
    VAE,
    DataError,
    Dataset,
    RunConfig,
    TrainConfig,
    VAEConfig,
    elbo_terms,
    fit,
    load_dataset,
)
from pyro_vae.cli.main import build_parser, main, run_config
from pyro_vae.guides import GUIDES, is_point_mass
from pyro_vae.infer.importance import PointEstimateError, log_likelihood
from pyro_vae.models import PRIORS

Z = 4.5  # two-sided z-score bound: a correct estimator fails with probability < 1e-5
SHAPE = (1, 4, 4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny networks are latency-bound: one intra-op thread avoids OpenMP hand-offs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vae(prior: str = "normal", guide: str = "normal", latent: int = 2, **kw: object) -> VAE:
    config = VAEConfig(
        data_shape=SHAPE, latent_dim=latent, hidden=(8,), prior=prior, guide=guide, **kw
    )  # type: ignore[arg-type]
    return VAE(config).double()


def _binary(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *SHAPE), 0.4, dtype=torch.float64), generator=g)


@torch.no_grad()
def _perturb(module: torch.nn.Module, scale: float, seed: int) -> None:
    """Move every parameter off its initial value, so no density is a trivial default."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _small(name: str) -> str:
    params = PRIORS.entry(name).params if name in PRIORS else GUIDES.entry(name).params
    keys = [f"{k}={v}" for k, v in {"components": 3, "layers": 2, "rank": 1}.items() if k in params]
    return name + (":" + ",".join(keys) if keys else "")


def _assert_mean_close(draws: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    """``draws`` (M, ...) average to ``reference`` (...) within Z standard errors."""
    se = draws.std(0) / math.sqrt(draws.shape[0])
    err = (draws.mean(0) - reference).abs()
    assert bool((err < Z * se + 1e-12).all()), f"{what}: error {err} vs {Z} SE {Z * se}"


# ---- KL: analytic against Monte Carlo ---------------------------------------------------


def test_every_analytic_kl_agrees_with_monte_carlo() -> None:
    """For every (guide, prior) pair whose KL elbo_terms takes as analytic."""
    checked = []
    x = _binary(4)
    for guide, prior in itertools.product(GUIDES.names(), PRIORS.names()):
        try:
            vae = _vae(_small(prior), _small(guide))
        except ValueError:  # refused pairs (vamp x delta) are tested elsewhere
            continue
        _perturb(vae.model.prior, 0.5, seed=1)
        terms = elbo_terms(vae.model, vae.guide, x)
        if terms.kl_method["z"] != "analytic":
            continue
        with torch.no_grad():
            q = vae.guide.posterior(vae.guide.features(x))  # batch (4,)
            p = vae.model.prior()
            z = q.sample((4000,))  # (M, 4, L)
            mc = q.log_prob(z) - p.log_prob(z)  # (M, 4)
        _assert_mean_close(mc, terms["kl"].detach(), f"KL({guide} || {prior})")
        checked.append((guide, prior))
    assert sorted(checked) == sorted(ANALYTIC_KL_PAIRS)  # a lost registration fails here


# (guide, prior) pairs with a closed-form KL: torch's Normal-Normal, and guides/kl.py's
# full-covariance and low-rank Normals against a diagonal Normal prior
ANALYTIC_KL_PAIRS = [
    (guide, prior)
    for guide in ("normal", "lowrank", "full")
    for prior in ("normal", "learned-normal")
]


@pytest.mark.parametrize("guide", ["lowrank", "full"])
def test_correlated_guide_kl_is_the_gaussian_closed_form(guide: str) -> None:
    """The registered KL equals torch's KL(MVN || MVN) with the prior as a diagonal MVN."""
    vae = _vae("learned-normal", _small(guide))
    _perturb(vae, 0.5, seed=2)
    with torch.no_grad():
        q = vae.guide.posterior(vae.guide.features(_binary(6)))  # batch (6,)
        p = vae.model.prior()
        base = p.base_dist
        as_mvn = dist.MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale))
        torch.testing.assert_close(kl_divergence(q, p), kl_divergence(q, as_mvn))


def test_two_layers_use_monte_carlo_for_z1_and_analytic_for_z2() -> None:
    """Trace order: the model draws z2 before z1, the guide z1 before z2 (Burda et al. 2015)."""
    pyro.set_rng_seed(0)
    vae = _vae(latent=3, upper_latent_dims=(2,), upper_hidden=(8,))
    x = _binary(5)
    assert elbo_terms(vae.model, vae.guide, x).kl_method == {"z2": "analytic", "z1": "monte-carlo"}
    with torch.no_grad():
        draws = {
            flag: torch.stack(
                [elbo_terms(vae.model, vae.guide, x, analytic_kl=flag)["elbo"] for _ in range(400)]
            )
            for flag in (True, False)
        }  # (M, 5) each
    diff = draws[True].mean(0) - draws[False].mean(0)
    se = torch.hypot(draws[True].std(0), draws[False].std(0)) / math.sqrt(400)
    assert bool((diff.abs() < Z * se).all()), (diff, se)


# ---- prior moments and normalization ------------------------------------------------------


def _mixture_moments(
    weights: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (L,) and covariance (L, L) of sum_k w_k N(mu_k, diag sigma_k^2)."""
    mean = weights @ locs  # (L,)
    second = torch.einsum("k,ki,kj->ij", weights, locs, locs) + torch.diag(weights @ scales**2)
    return mean, second - torch.outer(mean, mean)


def _reference_moments(vae: VAE) -> tuple[torch.Tensor, torch.Tensor]:
    prior = vae.model.prior
    if isinstance(prior, PRIORS.entry("mixture").cls):
        weights = prior.logits.softmax(-1)
        return _mixture_moments(weights, prior.locs, prior.scales)
    if isinstance(prior, PRIORS.entry("vamp").cls):
        q = vae.guide.posterior_at(prior.pseudo_inputs).base_dist  # Normal, batch (K, L)
        weights = torch.full((q.loc.shape[0],), 1 / q.loc.shape[0], dtype=q.loc.dtype)
        return _mixture_moments(weights, q.loc, q.scale)
    return prior.loc, torch.diag(prior.scale**2)  # normal and learned-normal


@pytest.mark.parametrize("name", ["normal", "learned-normal", "mixture", "vamp"])
def test_prior_samples_have_the_moments_of_its_parameters(name: str) -> None:
    pyro.set_rng_seed(0)
    vae = _vae(_small(name), latent=3)
    _perturb(vae, 0.5, seed=2)
    with torch.no_grad():
        mean, cov = _reference_moments(vae)
        z = vae.model.prior().sample((20000,))  # (M, L)
    assert z.shape == (20000, 3)
    _assert_mean_close(z, mean, f"{name} mean")
    centred = z - mean
    products = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # (M, L, L)
    _assert_mean_close(products, cov, f"{name} covariance")


def _grid(radius: float = 9.0, n: int = 721) -> tuple[torch.Tensor, float]:
    xs = torch.linspace(-radius, radius, n, dtype=torch.float64)
    return torch.cartesian_prod(xs, xs), float(xs[1] - xs[0]) ** 2  # (n^2, 2), cell area


def _check_density_and_samples(d: dist.TorchDistribution, what: str) -> None:
    """``d`` over R^2 integrates to 1 on a grid, and its draws have the grid's moments."""
    z, area = _grid()
    with torch.no_grad():
        density = d.log_prob(z).exp().reshape(-1)  # (n^2,)
        draws = d.sample((20000,)).reshape(20000, 2)  # (M, 2)
    total = float(density.sum()) * area
    assert abs(total - 1) < 2e-3, f"{what} integrates to {total}"
    features = torch.cat([z, z**2, z.prod(-1, keepdim=True)], -1)  # (n^2, 5)
    reference = (density.unsqueeze(-1) * features).sum(0) * area / total
    sampled = torch.cat([draws, draws**2, draws.prod(-1, keepdim=True)], -1)
    _assert_mean_close(sampled, reference, f"{what} moments")


@pytest.mark.parametrize("spec", [*(_small(n) for n in PRIORS.names()), "flow:kind=spline"])
def test_every_prior_is_a_normalized_density_with_matching_samples(spec: str) -> None:
    pyro.set_rng_seed(1)
    vae = _vae(spec)
    # spline bins start far from the identity already (peak density ~2 vs 0.16), and
    # perturbed ones grow spikes narrower than the grid: only the other priors are moved
    _perturb(vae, 0.0 if "spline" in spec else 0.3, seed=3)
    _check_density_and_samples(vae.model.prior(), f"prior {spec}")


@pytest.mark.parametrize("name", GUIDES.names())
def test_every_guide_family_is_a_normalized_density_with_matching_samples(name: str) -> None:
    pyro.set_rng_seed(2)
    posterior = GUIDES.build(_small(name), feature_dim=5, latent_dim=2).double()
    _perturb(posterior, 0.3, seed=4)
    h = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    q = posterior(h)  # batch (1,)
    if is_point_mass(q):
        assert name == "delta"
        return
    _check_density_and_samples(q, f"guide {name}")


def test_scales_are_bounded_away_from_zero_by_construction() -> None:
    h = torch.full((3, 5), -1e4, dtype=torch.float64)  # drives every raw scale to -inf
    for name in ("normal", "lowrank", "full", "iaf"):
        posterior = GUIDES.build(name, feature_dim=5, latent_dim=2, min_scale=0.01).double()
        with torch.no_grad():
            for p in posterior.parameters():
                p.fill_(1.0)
            q = posterior(h)
            base = q.base_dist if isinstance(q, dist.TransformedDistribution) else q
            var = base.variance if hasattr(base, "variance") else None
        assert var is not None and bool((var >= 0.01**2 - 1e-12).all()), name


# ---- the VampPrior ---------------------------------------------------------------------


def _manual_vamp_log_prob(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """log (1/M) sum_m q(z | u_m, y_m), one component at a time; z (N, L) -> (N,)."""
    guide, u = vae.guide, vae.model.prior.pseudo_inputs
    parts = []
    for k in range(u.shape[0]):
        labels = range(guide.num_classes) if guide.num_classes else [None]
        for c in labels:
            y = None if c is None else torch.tensor([c])
            if guide.upper_encoders:
                q = guide.upper_posteriors[-1](guide.upper_encoders[-1](u[k : k + 1]))
            else:
                q = guide.posterior(guide.features(u[k : k + 1], y))
            parts.append(q.log_prob(z))  # (N,)
    return torch.stack(parts).logsumexp(0) - math.log(len(parts))


@pytest.mark.parametrize(
    "setting",
    [
        {},
        {"guide": "iaf:layers=2"},
        {"guide": "full"},
        {"conditional": True, "num_classes": 3},
        {"upper_latent_dims": (2,), "upper_hidden": (8,)},
    ],
    ids=["normal", "iaf", "full", "conditional", "two-layer"],
)
def test_vamp_prior_is_the_mixture_it_claims(setting: dict[str, object]) -> None:
    pyro.set_rng_seed(3)
    vae = _vae("vamp:components=4", latent=3, **setting)  # type: ignore[arg-type]
    _perturb(vae, 0.3, seed=6)
    top = (3, *vae.config.upper_latent_dims)[-1]
    z = torch.randn(7, top, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = vae.model.prior().log_prob(z)  # (7,)
        want = _manual_vamp_log_prob(vae, z)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    classes = vae.guide.num_classes or 1
    assert vae.model.prior().mixture_distribution.logits.shape == (4 * classes,)


def _svi_losses(vae: VAE, x: torch.Tensor, steps: int) -> list[float]:
    svi = pyro.infer.SVI(
        vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss=pyro.infer.Trace_ELBO()
    )
    return [svi.step(x) for _ in range(steps)]


@pytest.mark.parametrize("local", [False, True], ids=["global-params", "module-local-params"])
def test_svi_trains_a_vamp_prior_whose_encoder_is_the_guides(local: bool) -> None:
    """The encoder is registered once (by the guide), yet both of its uses are trained."""
    x = _binary(64).float()
    with pyro.settings.context(module_local_params=local):
        pyro.set_rng_seed(4)
        vae = VAE(
            VAEConfig(data_shape=SHAPE, latent_dim=2, hidden=(16,), prior="vamp:components=5")
        )
        before = {k: v.clone() for k, v in vae.state_dict().items()}
        losses = _svi_losses(vae, x, 80)
    assert sum(losses[-10:]) < sum(losses[:10])
    changed = {k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])}
    assert {"model.prior.pseudo_inputs", "guide.encoder.net.0.weight"} <= changed
    assert not any(k.startswith("model.prior.") and "encoder" in k for k in vae.state_dict())
    names = [n for n in pyro.get_param_store() if n.startswith(vae.model.pyro_name)]
    assert names and not any("encoder" in n for n in names)  # the model does not re-register it
    loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
    assert sorted(id(p) for p in loss_fn.parameters()) == sorted(id(p) for p in vae.parameters())


def test_vamp_prior_refuses_a_point_mass_guide() -> None:
    with pytest.raises(ValueError, match="point mass"):
        _vae("vamp:components=2", "delta")


# ---- the Delta guide ---------------------------------------------------------------------


def test_delta_guide_reports_reconstruction_and_log_prior_at_a_point() -> None:
    pyro.set_rng_seed(5)
    vae = _vae("mixture:components=2", "delta")
    x = _binary(6)
    terms = elbo_terms(vae.model, vae.guide, x)
    assert terms.kl_method == {"z": "delta"}
    with torch.no_grad():
        z = vae.guide.posterior.head(vae.guide.encoder(x))  # (6, 2): the point
        log_prior = vae.model.prior().log_prob(z)  # (6,)
        log_lik = vae.model.likelihood(vae.model.decoder(z)).log_prob(x)  # (6,)
    torch.testing.assert_close(terms["kl"], -log_prior, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms["elbo"], log_lik + log_prior, rtol=1e-12, atol=1e-12)
    with pytest.raises(PointEstimateError, match="point mass"):
        log_likelihood(vae.model, vae.guide, x, num_samples=3)
    torch.testing.assert_close(vae.reconstruct(x), vae.model.likelihood(vae.model.decoder(z)).mean)


# ---- structures: two stochastic layers, conditional VAE ---------------------------------


def test_two_layer_vae_is_the_iwae_papers_architecture() -> None:
    """784-200-200 -> z1 (100) -> 100-100 -> z2 (50), and the mirror image in the model."""
    config = VAEConfig(
        data_shape=(1, 28, 28), latent_dim=100, hidden=(200, 200), upper_latent_dims=(50,)
    )
    vae = VAE(config)
    shapes = {k: tuple(v.shape) for k, v in vae.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "guide.encoder.net.0.weight": (200, 784),
        "guide.encoder.net.2.weight": (200, 200),
        "guide.posterior.head.weight": (200, 200),  # loc and scale of z1
        "guide.upper_encoders.0.net.0.weight": (100, 100),
        "guide.upper_encoders.0.net.2.weight": (100, 100),
        "guide.upper_posteriors.0.head.weight": (100, 100),  # loc and scale of z2
        "model.layers.0.net.net.0.weight": (100, 50),
        "model.layers.0.net.net.2.weight": (100, 100),
        "model.layers.0.net.net.4.weight": (200, 100),  # loc and scale of z1
        "model.decoder.net.0.weight": (200, 100),
        "model.decoder.net.2.weight": (200, 200),
        "model.decoder.net.4.weight": (784, 200),
    }
    assert vae.model.site_names == vae.guide.site_names == ["z1", "z2"]
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    assert vae.sample(4).shape == (4, 1, 28, 28)
    assert vae.reconstruct(x).shape == (3, 1, 28, 28)
    generated = prune_subsample_sites(pyro.poutine.trace(vae.model).get_trace(None, batch_size=5))
    assert [k for k, s in generated.nodes.items() if s["type"] == "sample"] == ["z2", "z1", "x"]


def test_conditional_programs_take_labels_and_refuse_their_absence() -> None:
    vae = _vae(conditional=True, num_classes=3)
    x = _binary(4)
    y = torch.tensor([0, 1, 2, 1])
    terms = elbo_terms(vae.model, vae.guide, x, y)
    assert terms["elbo"].shape == (4,)
    with pytest.raises(ValueError, match="conditional: pass the class labels"):
        elbo_terms(vae.model, vae.guide, x)
    with pytest.raises(ValueError, match="integer tensor of shape"):
        elbo_terms(vae.model, vae.guide, x, y.double())
    with pytest.raises(ValueError, match="not conditional"):
        _vae().sample(2, label=1)
    with pytest.raises(ValueError, match=r"class in 0\.\.2"):
        vae.sample(2, label=3)
    with pytest.raises(ValueError, match="one class or 2 classes"):
        vae.sample(2, label=torch.tensor([0, 1, 2]))
    assert vae.sample(3, label=torch.tensor([0, 2, 1])).shape == (3, *SHAPE)
    with pytest.raises(ValueError, match="num_classes"):
        VAE(VAEConfig(conditional=True))
    # the label changes what is decoded, and only through the decoder's input
    with torch.no_grad():
        pyro.set_rng_seed(0)
        a = vae.sample(5, label=0)
        pyro.set_rng_seed(0)
        b = vae.sample(5, label=2)
    assert not torch.allclose(a, b)
    ll = log_likelihood(vae.model, vae.guide, x, y, num_samples=5, batch_size=3)  # chunked y
    assert ll.shape == (4,) and bool(torch.isfinite(ll).all())


def _class_accuracy(vae: VAE, means: torch.Tensor, per_class: int = 50) -> float:
    """Share of samples drawn for class k whose nearest class mean (pixel space) is k's."""
    correct = 0
    for k in range(means.shape[0]):
        s = vae.sample(per_class, label=k)  # (n, 1, 8, 8)
        d = ((s.unsqueeze(1) - means.unsqueeze(0)) ** 2).flatten(2).sum(-1)  # (n, C)
        correct += int((d.argmin(1) == k).sum())
    return correct / (per_class * means.shape[0])


def test_conditional_vae_generates_the_class_it_is_asked_for() -> None:
    """Trained briefly on the 8x8 digits, samples for label k look like the digit k.

    Chance is 0.1; a conditional VAE reaches about 0.98 here, an unconditional one ~0.1.
    """
    dataset = load_dataset("digits")
    run = RunConfig(
        VAEConfig(latent_dim=2, hidden=(64,), conditional=True),
        TrainConfig(epochs=10, lr=3e-3, eval_num_samples=5, eval_num_points=50),
    )
    result = fit(run, dataset=dataset, write=False, progress=False)
    assert result.vae.config.num_classes == 10 and math.isfinite(result.summary["test_nll"])
    labels = dataset.train_labels
    assert labels is not None
    means = torch.stack([dataset.train[labels == k].mean(0) for k in range(10)])  # (10, 1, 8, 8)
    pyro.set_rng_seed(0)
    assert _class_accuracy(result.vae, means) > 0.8


def test_conditional_needs_a_data_set_with_labels() -> None:
    dataset = load_dataset("digits")
    unlabeled = Dataset("plain", dataset.train, dataset.valid, dataset.test)
    run = RunConfig(VAEConfig(conditional=True), TrainConfig(epochs=1))
    with pytest.raises(DataError, match="needs class labels, but data set 'plain' has none"):
        fit(run, dataset=unlabeled, write=False, progress=False)


def test_cli_trains_samples_by_class_and_evaluates_a_conditional_two_layer_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    flags = ["--hidden", "16", "--latent-dim", "3", "--upper-latent-dims", "2", "--quiet"]
    flags += ["--upper-hidden", "8", "--conditional", "true", "--prior", "vamp:components=3"]
    flags += ["--guide", "iaf:layers=1", "--eval-num-samples", "3", "--eval-num-points", "20"]
    assert main(["train", "--epochs", "1", "--out", str(out), *flags]) == 0
    config = json.loads((out / "config.json").read_text())["vae"]
    assert config["conditional"] is True and config["num_classes"] == 10
    assert config["upper_latent_dims"] == [2] and config["prior"] == "vamp:components=3"
    npy = tmp_path / "s.npy"
    assert main(["sample", str(out), "--num", "6", "--label", "3", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (6, 1, 8, 8)
    assert main(["evaluate", str(out), "--num-samples", "4", "--num-points", "30"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert math.isfinite(result["nll"]) and result["num_points"] == 30
    capsys.readouterr()
    assert main(["sample", str(out), "--label", "10", "--out", str(npy)]) == 2
    assert "class in 0..9" in capsys.readouterr().err


def test_cli_bool_flags_parse_words_and_refuse_others(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["train", "--conditional", "false"])
    assert run_config(args).vae.conditional is False
    assert run_config(build_parser().parse_args(["train", "--conditional", "yes"])).vae.conditional
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--conditional", "maybe"])
    assert "expected true or false" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--num-classes", "3"])  # set from the data set


def test_delta_run_reports_no_nll(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    flags = ["--hidden", "16", "--latent-dim", "2", "--guide", "delta", "--quiet"]
    assert main(["train", "--epochs", "1", "--out", str(out), *flags]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "test_nll" not in summary and math.isfinite(summary["test_elbo"])
    assert summary["point_estimate"] is True
    train_out = capsys.readouterr().out
    assert main(["evaluate", str(out), "--num-samples", "4", "--num-points", "30"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["nll"] is None and report["point_estimate"] is True
    evaluate_out = capsys.readouterr().out
    assert "not defined: a Delta guide" in evaluate_out
    for printed in (train_out, evaluate_out):  # the terms read as what they are at a point
        assert "log p(x|z*) + log p(z*)" in printed and "-log p(z*)" in printed
        assert "ELBO" not in printed and "KL(q(z|x)" not in printed
    assert "NLL" not in train_out
