"""fit: where the training data live, binarization, building and checking a run, notes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import faulty
import pytest
import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.cli.main import main
from pyro_vae.config import ConfigError
from pyro_vae.models import LIKELIHOODS
from pyro_vae.models.likelihoods import Bernoulli
from pyro_vae.training.checkpoint import write_json, write_tensors
from pyro_vae.training.fit import data_home
from pyro_vae.training.rundir import resume_config

GPU = torch.device("cuda")  # a device object only: nothing here touches a GPU
CPU = torch.device("cpu")


def test_data_stay_on_the_gpu_only_when_they_fit_in_half_its_free_memory() -> None:
    assert data_home(500, GPU, free=1000) == GPU
    assert data_home(501, GPU, free=1000) == CPU
    assert data_home(10**12, GPU, "yes", free=1000) == GPU
    assert data_home(1, GPU, "no", free=1000) == CPU
    assert data_home(10**12, CPU, free=0) == CPU  # on the CPU the two places are one
    with pytest.raises(ConfigError, match="data_on_device must be 'auto', 'yes' or 'no'"):
        TrainConfig(data_on_device="sometimes")


def test_resume_may_change_where_the_data_live(tmp_path: Path) -> None:
    vae = VAEConfig(latent_dim=2, hidden=(16,))
    tiny = dict(eval_num_samples=2, eval_num_points=10, seed=5)
    straight = tmp_path / "straight"
    fit(RunConfig(vae, TrainConfig(epochs=2, out=str(straight), **tiny)), progress=False)  # type: ignore[arg-type]
    run = tmp_path / "run"
    fit(RunConfig(vae, TrainConfig(epochs=1, out=str(run), **tiny)), progress=False)  # type: ignore[arg-type]
    fit(resume_config(run, epochs=2, data_on_device="no"), resume=True, progress=False)
    assert (run / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()


@pytest.mark.parametrize(
    ("likelihood", "given", "used"),
    [
        ("bernoulli", "auto", "dynamic"),
        ("continuous-bernoulli", "auto", "none"),
        ("normal:scale=0.1", "auto", "none"),
        ("categorical256", "auto", "none"),
        ("bernoulli", "none", "none"),
        ("normal", "dynamic", "dynamic"),
    ],
)
def test_binarize_auto_binarizes_only_for_a_bernoulli_likelihood(
    likelihood: str, given: str, used: str
) -> None:
    config = RunConfig(VAEConfig(likelihood=likelihood), TrainConfig(binarize=given))
    assert config.train.binarize == used  # and so config.json says what the run did


def test_binarize_auto_follows_a_users_binary_likelihood(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin's Bernoulli-like likelihood (binary_data = True) is binarized for too."""
    monkeypatch.setattr(LIKELIHOODS, "_entries", dict(LIKELIHOODS._entries))  # test-local

    class Binary(Bernoulli):
        """A Bernoulli registered under another name, as a user's plugin would."""

    class Grey(Bernoulli):
        """The same, declaring grey-level data."""

        binary_data = False

    LIKELIHOODS.register("test-binary")(Binary)
    LIKELIHOODS.register("test-grey")(Grey)
    for name, used in (("test-binary", "dynamic"), ("test-grey", "none")):
        config = RunConfig(VAEConfig(likelihood=name), TrainConfig(binarize="auto"))
        assert config.train.binarize == used


def test_a_continuous_likelihood_trains_on_the_grey_levels_by_default(tmp_path: Path) -> None:
    vae = VAEConfig(latent_dim=2, hidden=(8,), likelihood="continuous-bernoulli")
    tc = TrainConfig(epochs=1, out=str(tmp_path / "run"), eval_num_samples=2, eval_num_points=5)
    result = fit(RunConfig(vae, tc), progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["binarize"] == "none" == result.config.train.binarize


def test_an_objective_that_cannot_score_the_model_fails_before_any_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    vae = VAEConfig(latent_dim=2, hidden=(8,), prior="vamp:components=3")
    tc = TrainConfig(epochs=1, out=str(run), objective="free-bits:lambda=0.5")
    with pytest.raises(ValueError, match="per-dimension KL needs factorized Normal"):
        fit(RunConfig(vae, tc), progress=False)
    assert not run.exists()


def test_skipped_steps_are_totalled_and_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--on-nan skip: the run's total goes in summary.json and a note at the end; past the
    limit, the advice is to raise --max-skipped-steps (not to pass --on-nan skip again)."""
    flags = ["--latent-dim", "2", "--hidden", "16", "--epochs", "2", "--seed", "5", "--quiet"]
    flags += ["--eval-num-samples", "2", "--eval-num-points", "10", "--on-nan", "skip"]
    with faulty.registered() as name:  # NaN on decoder calls 20..22: epoch 2, steps 6..8
        net = ["--network", f"{name}:first=20,count=3"]
        assert main(["train", "--out", str(tmp_path / "a"), *net, *flags]) == 0
        err = capsys.readouterr().err
        assert "pyro-vae: note: 3 step(s) were skipped for a non-finite loss or gradient" in err
        summary = json.loads((tmp_path / "a" / "summary.json").read_text())
        assert summary["skipped_steps"] == 3
        argv = ["train", "--out", str(tmp_path / "b"), *net, *flags, "--max-skipped-steps", "2"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "3 steps were skipped" in err and "Raise --max-skipped-steps to allow more" in err
        assert "pass --on-nan skip" not in err
    clean = fit(
        RunConfig(
            VAEConfig(latent_dim=2, hidden=(8,)),
            TrainConfig(epochs=1, out=str(tmp_path / "c"), eval_num_samples=2, eval_num_points=5),
        ),
        progress=False,
    )
    assert "skipped_steps" not in clean.summary  # nothing skipped, nothing said


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_run_files_get_the_mode_a_plain_open_gives(umask: int, tmp_path: Path) -> None:
    """Atomic writes (mkstemp, then rename) respect the umask: 0o666 & ~umask, not 0o600."""
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_tensors(tmp_path / "t.safetensors", {"w": torch.zeros(2)})
        write_json(tmp_path / "a.json", {"x": 2})  # replacing a file: the same mode
        (tmp_path / "plain.txt").write_text("open()")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for name in ("a.json", "t.safetensors", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
