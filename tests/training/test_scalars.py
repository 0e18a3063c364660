"""TensorBoard scalars (pyro_vae.training.scalars): every metric of metrics.jsonl per epoch
plus the learning rate, read back from the event file; a clear error without the extra."""

from __future__ import annotations

import builtins
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.training.errors import TrainingError
from pyro_vae.training.rundir import resume_config

HAVE_TB = importlib.util.find_spec("tensorboard") is not None
NEEDS_TB = pytest.mark.skipif(
    not HAVE_TB, reason="the tensorboard package is not installed (pip install tensorboard)"
)
TINY = dict(seed=1, batch_size=400, eval_num_samples=2, eval_num_points=10)


def _config(out: Path, epochs: int, **train: Any) -> RunConfig:
    vae = VAEConfig(latent_dim=2, hidden=(16,))
    return RunConfig(
        vae, TrainConfig(epochs=epochs, out=str(out), tensorboard=True, **TINY, **train)
    )


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found


@NEEDS_TB
def test_every_metric_and_the_learning_rate_per_epoch_resumed_too(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(_config(run, 1, lr=2e-3), progress=False)
    fit(resume_config(run, epochs=2), resume=True, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(run)
    metrics = {k for r in records for k in r if k != "epoch"}
    assert metrics <= set(scalars) and "valid_elbo" in metrics and "train_kl" in metrics
    for key in metrics:
        got = sorted(scalars[key])
        want = [(r["epoch"], r[key]) for r in records]
        assert [s for s, _ in got] == [1, 2], key
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), key
    assert [v for _, v in sorted(scalars["lr"])] == pytest.approx([2e-3, 2e-3])


def test_a_missing_tensorboard_names_the_extra_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError("TensorBoard logging requires TensorBoard version 1.15 or above")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(TrainingError, match=r"pyro-vae\[tensorboard\]") as info:
        fit(_config(tmp_path / "run", 1), progress=False)
    assert "TrainConfig(tensorboard=True)" in str(info.value)
    assert not (tmp_path / "run").exists()
    # without a run directory nothing is written, so nothing is needed
    fit(_config(tmp_path / "none", 1), progress=False, write=False)
