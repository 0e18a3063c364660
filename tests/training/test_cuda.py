"""The CUDA path: checkpoint and resume, the replayed step, the NaN guard, no host sync in
a step, and mixed devices refused clearly.

The tests marked ``cuda`` skip without a CUDA device; ``benchmarks/gpu_check`` runs them
(``pytest -m cuda``) on a GPU. The device checks that need no GPU run here on the CPU, with
the ``meta`` device standing in for a second one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faulty
import pyro
import pytest
import torch
from cuda_helpers import steps_raise_on_host_sync
from safetensors.torch import load_file

from pyro_vae import VAE, RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.data import load_dataset
from pyro_vae.training.checkpoint import read_tensors
from pyro_vae.training.devices import check_devices
from pyro_vae.training.errors import NonFiniteError, TrainingError
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.loop import Loop
from pyro_vae.training.rundir import resume_config

HAVE_CUDA = torch.cuda.is_available()
TINY = dict(seed=5, eval_num_samples=2, eval_num_points=10)


def _config(out: Path, epochs: int, device: str = "cuda", **train: Any) -> RunConfig:
    vae = VAEConfig(latent_dim=2, hidden=(16,), network=train.pop("network", "mlp"))
    tc = TrainConfig(epochs=epochs, out=str(out), device=device, **TINY, **train)
    return RunConfig(vae, tc)


def _loop(device: str, **train: Any) -> Loop:
    pyro.set_rng_seed(0)
    vae = VAE(VAEConfig(latent_dim=2, hidden=(8,), data_shape=(1, 8, 8))).to(device)
    tc = TrainConfig(epochs=2, batch_size=50, binarize="dynamic", **train)
    x = load_dataset("digits").train[:250].to(device)  # (250, 1, 8, 8)
    opt = fused_adam(list(vae.parameters()), tc.lr)
    gen = torch.Generator(device=device).manual_seed(0)
    return Loop(vae, opt, gen, tc, x, progress=False)


@pytest.fixture
def faulty_net() -> Iterator[str]:
    with faulty.registered() as name:
        yield name


# --------------------------------------------------------------------- mixed devices (CPU)


def test_parameters_on_two_devices_are_refused_by_name() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).to("meta"))
    with pytest.raises(TrainingError, match=r"on 2 devices \(cpu: 0.weight.*meta: 1.weight"):
        check_devices(net)
    assert check_devices(torch.nn.Linear(2, 2), x=torch.ones(1), y=None) == torch.device("cpu")


def test_data_on_another_device_than_the_vae_are_refused() -> None:
    pyro.set_rng_seed(0)
    vae = VAE(VAEConfig(latent_dim=2, hidden=(8,), data_shape=(1, 8, 8)))
    x = torch.zeros(4, 1, 8, 8, device="meta")
    with pytest.raises(TrainingError, match="train_x is on meta, but the VAE is on cpu"):
        Loop(
            vae,
            fused_adam(list(vae.parameters()), 1e-3),
            torch.Generator(),
            TrainConfig(),
            x,
            False,
        )


# --------------------------------------------------------------------- on a GPU


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
def test_checkpoint_and_resume_on_cuda(tmp_path: Path) -> None:
    whole = fit(_config(tmp_path / "whole", 2), progress=False)
    run = tmp_path / "pieces"
    fit(_config(run, 1), progress=False)
    tensors, meta = read_tensors(run / "checkpoint.safetensors")
    assert "rng.cuda" in tensors and meta["epoch"] == 1
    resumed = fit(resume_config(run, epochs=2), resume=True, progress=False)
    assert next(resumed.vae.parameters()).is_cuda
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:  # bit-identical where cuBLAS is deterministic; close in any case
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    for x, y in zip(whole.history, resumed.history, strict=True):
        assert x["epoch"] == y["epoch"] and x["valid_elbo"] == pytest.approx(y["valid_elbo"])
    # a run checkpointed on a GPU resumes on the CPU (TrainConfig.device may change)
    on_cpu = fit(resume_config(run, epochs=3, device="cpu"), resume=True, progress=False)
    assert len(on_cpu.history) == 3 and not next(on_cpu.vae.parameters()).is_cuda
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("objective", ["elbo", "iwae:k=5"])
def test_the_replayed_step_matches_the_pyro_program_on_cuda(objective: str) -> None:
    losses = {}
    for replay in (True, False):
        loop = _loop("cuda", replay=replay, objective=objective)
        record, _ = loop.train_epoch(1) or ({}, {})
        losses[replay] = record["train_loss"]
        if replay:
            assert loop.loss_fn.recorded, "the step was not replayed on CUDA"  # type: ignore[union-attr]
        loop.close()
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
def test_a_step_makes_no_host_sync_on_cuda() -> None:
    """torch's sync debug mode raises on any synchronising call inside the steps."""
    loop = _loop("cuda")
    loop.train_epoch(1)  # records the replay
    steps_raise_on_host_sync(loop)
    loop.close()


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
def test_the_nan_guard_on_cuda(faulty_net: str, tmp_path: Path) -> None:
    # digits: 13 steps an epoch at batch 100; decoder call 20 is epoch 2, step 6
    config = _config(tmp_path / "run", 2, network=f"{faulty_net}:first=20,count=3")
    with pytest.raises(NonFiniteError) as info:
        fit(config, progress=False)
    message = str(info.value)
    assert "epoch 2, step 6 of 13" in message and "reconstruction term at site 'x'" in message
    assert "after epoch 1" in message and "intact" in message
    result = fit(resume_config(tmp_path / "run", on_nan="skip"), resume=True, progress=False)
    assert [r["skipped_steps"] for r in result.history] == [0, 3]
    params = torch.cat([p.detach().flatten() for p in result.vae.parameters()])
    assert params.is_cuda and bool(torch.isfinite(params).all())


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
def test_mixed_devices_are_refused_clearly_on_cuda(tmp_path: Path) -> None:
    pyro.set_rng_seed(0)
    vae = VAE(VAEConfig(latent_dim=2, hidden=(8,), data_shape=(1, 8, 8)))
    next(vae.children()).to("cuda")  # part of the VAE on the GPU
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(TrainingError, match="on 2 devices"):
        Loop(
            vae,
            fused_adam(list(vae.parameters()), 1e-3),
            torch.Generator(),
            TrainConfig(),
            x,
            False,
        )
    # data in host memory are fine: each batch is copied to the GPU
    result = fit(_config(tmp_path / "host", 1, data_on_device="no"), progress=False)
    assert next(result.vae.parameters()).is_cuda and len(result.history) == 1
