"""The model and guide are ordinary Pyro programs: traces, SVI, the param store, save/load."""

from __future__ import annotations

import re
from pathlib import Path

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyro_vae import VAE, VAEConfig, elbo_terms, log_likelihood
from pyro_vae.infer.decomposition import traces
from pyro_vae.infer.objectives import TraceELBO
from pyro_vae.models.likelihoods import SupportError
from pyro_vae.training.checkpoint import CheckpointError, load, save

CONFIG = VAEConfig(data_shape=(1, 8, 8), latent_dim=3, hidden=(32, 16))


def _binary(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.4), generator=g)


def test_guide_and_model_share_latent_sites_with_right_shapes() -> None:
    vae = VAE(CONFIG)
    x = _binary(5)
    model_trace, guide_trace = traces(vae.model, vae.guide, x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    latent = {
        k for k, s in model_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]
    }
    assert latent == {k for k, s in guide_trace.nodes.items() if s["type"] == "sample"} == {"z"}
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["z"]["value"].shape == (5, 3)
    assert model_trace.nodes["x"]["value"].shape == (5, 1, 8, 8)
    assert model_trace.nodes["x"]["fn"].event_shape == (1, 8, 8)
    for tr in (model_trace, guide_trace):
        for name in ("z", "x") if tr is model_trace else ("z",):
            assert tr.nodes[name]["log_prob"].shape == (5,)
            assert [f.name for f in tr.nodes[name]["cond_indep_stack"]] == ["data"]


def test_model_without_data_generates() -> None:
    vae = VAE(CONFIG)
    x = poutine.trace(vae.model).get_trace(None, batch_size=4).nodes["x"]["value"]
    assert x.shape == (4, 1, 8, 8) and set(x.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="batch_size"):
        vae.model()


def test_unscaled_joint_is_the_sum_over_rows() -> None:
    vae = VAE(CONFIG).double()
    x = _binary(6).double()
    model_trace, _ = traces(vae.model, vae.guide, x)
    per_row = model_trace.nodes["x"]["fn"].log_prob(x)  # (6,)
    torch.testing.assert_close(
        model_trace.log_prob_sum()
        - model_trace.nodes["z"]["fn"].log_prob(model_trace.nodes["z"]["value"]).sum(),
        per_row.sum(),
    )


def _svi_steps(vae: VAE, x: torch.Tensor, steps: int) -> list[float]:
    svi = pyro.infer.SVI(
        vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss=pyro.infer.Trace_ELBO()
    )
    return [svi.step(x) for _ in range(steps)]


def test_svi_step_trains_the_pair_unchanged() -> None:
    pyro.set_rng_seed(0)
    vae = VAE(CONFIG)
    x = _binary(64)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    losses = _svi_steps(vae, x, 60)
    assert sum(losses[-10:]) < sum(losses[:10])
    changed = [k for k, v in vae.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("model.decoder") for k in changed)
    assert any(k.startswith("guide.encoder") for k in changed)


def test_two_vaes_never_share_parameters() -> None:
    pyro.set_rng_seed(1)
    a, b = VAE(CONFIG), VAE(CONFIG)
    x = _binary(32)
    b_before = {k: v.clone() for k, v in b.state_dict().items()}
    _svi_steps(a, x, 5)
    assert all(torch.equal(v, b_before[k]) for k, v in b.state_dict().items())
    names = set(pyro.get_param_store().keys())
    mine = {n for n in names if n.startswith((a.model.pyro_name, a.guide.pyro_name))}
    theirs = {n for n in names if n.startswith((b.model.pyro_name, b.guide.pyro_name))}
    assert mine and not theirs  # b never ran under SVI, and a's names are a's alone
    a_before = {k: v.clone() for k, v in a.state_dict().items()}
    _svi_steps(b, x, 2)
    assert all(torch.equal(v, a_before[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, b_before[k]) for k, v in b.state_dict().items())


def test_svi_under_module_local_params() -> None:
    pyro.set_rng_seed(2)
    with pyro.settings.context(module_local_params=True):
        vae = VAE(CONFIG)
        losses = _svi_steps(vae, _binary(64), 40)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_trace_elbo_module_with_torch_optimizer() -> None:
    """``Trace_ELBO()(model, guide)`` is an nn.Module whose parameters are the VAE's."""
    pyro.set_rng_seed(3)
    vae = VAE(CONFIG)
    loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)
    assert {id(p) for p in loss_fn.parameters()} == {id(p) for p in vae.parameters()}
    opt = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    x = _binary(64)
    losses = []
    for _ in range(60):
        loss = loss_fn(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) < sum(losses[:10])


def test_sync_free_trace_elbo_matches_pyro_value_and_gradient() -> None:
    """Same draws (same seed): same loss and same gradients as pyro.infer.Trace_ELBO."""
    vae = VAE(CONFIG).double()
    x = _binary(16).double()
    results = []
    for elbo in (pyro.infer.Trace_ELBO(num_particles=3), TraceELBO(num_particles=3)):
        pyro.set_rng_seed(4)
        vae.zero_grad()
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in vae.parameters()]))
    (la, ga), (lb, gb) = results
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-10)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    pyro.set_rng_seed(5)
    vae = VAE(CONFIG)
    _svi_steps(vae, _binary(32), 3)
    save(vae, tmp_path / "ckpt")
    loaded = load(tmp_path / "ckpt")
    assert loaded.config == vae.config
    x = _binary(10, seed=1)
    outs = []
    for v in (vae, loaded):
        pyro.set_rng_seed(6)
        outs.append(elbo_terms(v.model, v.guide, x)["elbo"].detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.testing.assert_close(vae.sample(3).shape, loaded.sample(3).shape)


def test_load_refuses_another_architecture_and_pickles(tmp_path: Path) -> None:
    vae = VAE(CONFIG)
    save(vae, tmp_path / "a")
    other = VAE(VAEConfig(data_shape=(1, 8, 8), latent_dim=5, hidden=(32, 16)))
    save(other, tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="different model"):
        load(tmp_path / "b")
    torch.save(vae.state_dict(), tmp_path / "a" / "model.safetensors")  # a pickle in disguise
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load(tmp_path / "a")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load(tmp_path / "missing")


def test_check_data_names_shape_and_support() -> None:
    vae = VAE(CONFIG)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        vae.check_data(torch.zeros(3, 64))
    with pytest.raises(ValueError, match=re.escape("TrainConfig(binarize='dynamic')")):
        vae.check_data(torch.full((3, 1, 8, 8), 0.5))


def test_grey_data_in_the_pyro_program_gets_the_advice_not_torch_s_dump() -> None:
    """The same SupportError as check_data, through elbo_terms, log_likelihood and SVI."""
    vae = VAE(CONFIG)
    grey = torch.rand(4, 1, 8, 8)
    svi = pyro.infer.SVI(
        vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO()
    )
    calls = (
        lambda: elbo_terms(vae.model, vae.guide, grey),
        lambda: log_likelihood(vae.model, vae.guide, grey, num_samples=3),
        lambda: svi.step(grey),
    )
    for call in calls:
        with pytest.raises(SupportError, match=r"binary data.*TrainConfig\(binarize='dynamic'\)"):
            call()
    with pyro.validation_enabled(False):  # the training loop checks its data once, up front
        assert elbo_terms(vae.model, vae.guide, grey)["elbo"].shape == (4,)


@pytest.mark.parametrize(
    ("x", "kind", "message"),
    [
        (torch.zeros(4, 64), ValueError, r"shape \(N, 1, 8, 8\) for this model, got \(4, 64\)"),
        (_binary(4).long(), TypeError, r"floating-point tensor, got torch.int64"),
    ],
    ids=["shape", "dtype"],
)
def test_misshapen_or_integer_data_is_refused_at_the_program_boundary(
    x: torch.Tensor, kind: type[Exception], message: str
) -> None:
    """elbo_terms, log_likelihood, SVI and the model alone name the shape or dtype expected,
    instead of failing in a matrix product inside the encoder."""
    vae = VAE(CONFIG)
    svi = pyro.infer.SVI(
        vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO()
    )
    calls = (
        lambda: elbo_terms(vae.model, vae.guide, x),
        lambda: log_likelihood(vae.model, vae.guide, x, num_samples=3),
        lambda: svi.step(x),
        lambda: vae.model(x),
    )
    for call in calls:
        with pytest.raises(kind, match=message):
            call()


def test_grey_data_in_chunks_still_gets_the_support_error() -> None:
    vae = VAE(CONFIG)
    with pytest.raises(SupportError, match=re.escape("TrainConfig(binarize='dynamic')")):
        log_likelihood(vae.model, vae.guide, torch.rand(9, 1, 8, 8), num_samples=3, batch_size=4)
