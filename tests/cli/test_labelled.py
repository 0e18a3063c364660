"""``pyro-vae train --labelled N``: the semi-supervised VAE M2 from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.cli.main import main

FAST = ["--hidden", "16", "--latent-dim", "2", "--quiet", "--eval-num-samples", "3"]
FAST += ["--eval-num-points", "20", "--epochs", "1"]


def test_labelled_alone_trains_evaluates_and_samples_m2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "m2"
    assert main(["train", "--labelled", "20", "--out", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out
    config = json.loads((run / "config.json").read_text())
    assert config["vae"]["semi_supervised"] and not config["vae"]["conditional"]
    assert config["train"]["labelled"] == 20 and config["train"]["objective"] == "elbo-enum"
    assert 0 <= json.loads((run / "summary.json").read_text())["test_accuracy"] <= 1
    assert (run / "plots" / "samples_by_class.png").is_file()
    argv = ["evaluate", str(run), "--num-samples", "3", "--num-points", "20"]
    assert main([*argv, "--psis-samples", "100"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert 0 <= result["accuracy"] <= 1 and np.isfinite(result["nll"])
    assert (run / "plots" / "confusion.png").is_file()
    npy = tmp_path / "k.npy"
    assert main(["sample", str(run), "--label", "3", "--num", "4", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (4, 1, 8, 8)


def test_labelled_errors_name_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--out", str(tmp_path / "r"), *FAST]
    assert main([*argv, "--labelled", "20", "--conditional", "true"]) == 2
    err = capsys.readouterr().err
    assert "--labelled 20 builds the semi-supervised VAE" in err and "--conditional true" in err
    assert "TrainConfig" not in err
    with pytest.raises(SystemExit):
        main([*argv, "--labelled", "none"])
    assert "expected a positive int or all" in capsys.readouterr().err
    data = tmp_path / "plain.npz"
    x = np.random.default_rng(0).random((30, 4, 4)).astype("float32")
    np.savez(data, train=x, valid=x[:5], test=x[:5])
    assert main([*argv, "--labelled", "5", "--dataset", str(data)]) == 2
    err = capsys.readouterr().err
    assert "--labelled keeps the labels" in err and "has no labels" in err
    assert "TrainConfig" not in err
    assert not (tmp_path / "r").exists()
