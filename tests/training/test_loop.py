"""The training loop (pyro_vae.training.loop): an epoch is its steps, and a stopped epoch goes on.

Small and on the CPU: 250 rows of the embedded digits in batches of 100 (3 steps an epoch).
"""

from __future__ import annotations

import pyro
import pytest
import torch

import pyro_vae.training.loop as loop_module
from pyro_vae import VAE, TrainConfig, VAEConfig
from pyro_vae.data import load_dataset
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.loop import Loop

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _loop(**train: object) -> Loop:
    pyro.set_rng_seed(0)
    vae = VAE(VAEConfig(latent_dim=2, hidden=(8,), data_shape=(1, 8, 8)))
    tc = TrainConfig(epochs=2, batch_size=100, binarize="dynamic", **train)  # type: ignore[arg-type]
    x = load_dataset("digits").train[:250]  # (250, 1, 8, 8)
    opt = fused_adam(list(vae.parameters()), tc.lr)
    return Loop(vae, opt, torch.Generator().manual_seed(0), tc, x, progress=False)


def test_an_epoch_is_its_steps() -> None:
    loop = _loop()
    result = loop.train_epoch(1)
    assert result is not None
    record, timing = result
    assert loop.steps_per_epoch == 3 and record["step"] == 3 and record["skipped_steps"] == 0
    assert record["train_elbo"] == pytest.approx(
        record["train_reconstruction"] - record["train_kl"]
    )
    assert record["train_objective"] == -record["train_loss"]
    assert timing["epoch"] == 1 and timing["images_per_s"] > 0
    assert loop.position.epochs_done == 1 and loop.position.partial is None
    loop.close()


def test_a_stopped_epoch_goes_on_from_its_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after step 1 keeps a partial epoch; the next call ends it as if never stopped."""
    straight = _loop().train_epoch(1)
    loop, step = _loop(), Loop.train_step

    def stop_after_the_first(self: Loop, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.stop_requested = True
        return step(self, x, idx)

    monkeypatch.setattr(Loop, "train_step", stop_after_the_first)
    assert loop.train_epoch(1) is None
    assert loop.position.partial is not None and loop.position.partial.steps_done == 1
    monkeypatch.undo()
    loop.stop_requested = False
    loop.gen.set_state(loop.gen_start)  # as a checkpoint of the partial epoch restores it
    resumed = loop.train_epoch(1)
    assert straight is not None and resumed is not None
    assert resumed[0] == straight[0]


def test_the_rate_of_each_epoch_comes_from_the_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def rate(lr: float, schedule: str, epoch: int, stage_scale: float = 1.0) -> float:
        seen.append(epoch)
        return lr / epoch

    monkeypatch.setattr(loop_module, "learning_rate", rate)  # where the loop looks it up
    loop = _loop(lr=0.01)
    for epoch in (1, 2):
        loop.train_epoch(epoch)
        assert all(g["lr"] == 0.01 / epoch for g in loop.opt.param_groups)
    assert seen == [1, 2]
