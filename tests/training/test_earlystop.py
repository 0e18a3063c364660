"""Early stopping on the validation ELBO (pyro_vae.training.earlystop): the rule, the best
weights kept, what summary.json says, and a resumed run that continues the patience count
exactly as an uninterrupted one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.cli.parser import build_parser
from pyro_vae.cli.settings import run_config
from pyro_vae.config import ConfigError
from pyro_vae.data import Dataset, load_dataset
from pyro_vae.training.checkpoint import read_tensors
from pyro_vae.training.earlystop import BEST_FILE, EarlyStop
from pyro_vae.training.fit import FitResult
from pyro_vae.training.rundir import resume_config

# 40 rows of digits trained on in one step an epoch, scored on 200 others: the model
# overfits at once; the valid ELBO reads -43.4, -38.3, -35.3, -33.1, -32.0 (best, epoch 5),
# -32.2, -31.3 (best, epoch 7), -31.8, -31.5, -32.0: patience 3 stops it after epoch 10
FAST = dict(seed=5, lr=0.03, batch_size=40, eval_num_samples=2, eval_num_points=10)


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    full = load_dataset("digits", progress=False)
    return Dataset("tiny", full.train[:40], full.valid[:200], full.test[:50])


def _fit(config: RunConfig, data: Dataset, resume: bool = False) -> FitResult:
    return fit(config, dataset=data, resume=resume, progress=False)


def _config(out: Path, epochs: int, patience: int) -> RunConfig:
    vae = VAEConfig(latent_dim=8, hidden=(64,))
    return RunConfig(vae, TrainConfig(epochs=epochs, out=str(out), early_stop=patience, **FAST))  # type: ignore[arg-type]


def _history(*values: float) -> list[dict[str, float]]:
    return [{"epoch": i, "valid_elbo": v} for i, v in enumerate(values, 1)]


def test_the_rule_counts_epochs_since_the_first_best_one() -> None:
    state = EarlyStop.from_history(2, _history(-30, -29, -29.5, -29))  # a tie is no gain
    assert (state.best_epoch, state.best_valid_elbo, state.stale) == (2, -29, 2)
    assert state.exhausted
    assert not EarlyStop.from_history(3, _history(-30, -29, -29.5, -29)).exhausted
    assert not EarlyStop.from_history(0, _history(-30, -31, -32)).exhausted  # 0: off
    nan = EarlyStop.from_history(1, _history(math.nan, math.nan))
    assert nan.best_epoch == 0 and nan.exhausted  # a NaN never improves
    assert nan.summary(10)["best_valid_elbo"] is None  # JSON has no -inf
    assert not EarlyStop.from_history(1, []).exhausted  # nothing trained yet


def test_early_stop_is_a_flag_and_a_checked_field(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["train", "--early-stop", "3", "--tensorboard", "true"])
    config = run_config(args)
    assert config.train.early_stop == 3 and config.train.tensorboard is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "--early-stop PATIENCE" in capsys.readouterr().out
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="early_stop must be an int >= 0"):
            TrainConfig(early_stop=bad)  # type: ignore[arg-type]


def test_stops_keeps_the_best_weights_and_says_why(tmp_path: Path, tiny: Dataset) -> None:
    result = _fit(_config(tmp_path / "run", 30, 3), tiny)
    history, summary = result.history, result.summary
    valid = [h["valid_elbo"] for h in history]
    best = max(range(len(valid)), key=lambda i: (valid[i], -i)) + 1
    assert len(history) < 30 and max(valid[best:]) <= valid[best - 1]
    assert summary["stopped_early"] is True and summary["stopped_epoch"] == len(history)
    assert summary["best_epoch"] == best == len(history) - 3
    assert summary["best_valid_elbo"] == valid[best - 1]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["best_epoch"] == best and saved["stopped_early"] is True
    tensors, meta = read_tensors(tmp_path / "run" / BEST_FILE)
    assert meta == {"epoch": best, "valid_elbo": valid[best - 1]}
    # the best weights are those a run of exactly `best` epochs ends with
    short = _fit(_config(tmp_path / "short", best, 3), tiny)
    model = short.vae.state_dict()
    assert tensors.keys() == model.keys()
    assert all(torch.equal(tensors[k], model[k]) for k in tensors)
    assert "stopped_early" not in _fit(_config(tmp_path / "off", 1, 0), tiny).summary
    assert not (tmp_path / "off" / BEST_FILE).exists()


FILES = ("metrics.jsonl", "model.safetensors", "checkpoint.safetensors", BEST_FILE, "summary.json")


def test_a_resumed_run_continues_the_patience_count_exactly(tmp_path: Path, tiny: Dataset) -> None:
    """Stopped and resumed mid-count, a run writes the same bytes as one that ran through:
    the same epochs, best weights and summary."""
    whole = _fit(_config(tmp_path / "whole", 30, 3), tiny)
    stopped = whole.summary["stopped_epoch"]
    assert whole.summary["stopped_early"] and stopped < 30
    run = tmp_path / "pieces"
    _fit(_config(run, 1, 3), tiny)
    for epochs in (6, stopped - 1, 30):  # 6: stale 1 after epoch 5; stopped - 1: stale 2
        _fit(resume_config(run, epochs=epochs), tiny, resume=True)
    for name in FILES:
        assert (run / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    # resumed once more, a run that stopped early trains nothing
    again = _fit(resume_config(run, epochs=30), tiny, resume=True)
    assert len(again.history) == stopped and again.summary == whole.summary
