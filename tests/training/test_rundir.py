"""Run directories (pyro_vae.training.rundir): which folder a run may use, resuming, JSONL logs.

These call the library, so its messages name config fields and ``fit(..., resume=True)``,
never a command-line flag (the CLI translates them; tests/cli see the flags).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pyro_vae import VAE, RunConfig, TrainConfig, VAEConfig
from pyro_vae.config import ConfigError
from pyro_vae.training.checkpoint import CheckpointError, save
from pyro_vae.training.errors import TrainingError
from pyro_vae.training.rundir import (
    RESUME_OVERRIDES,
    append_jsonl,
    check_run_paths,
    merge_resumed,
    prepare_run_dir,
    read_jsonl,
    resume_config,
    write_jsonl,
)


def _config(out: Path, **train: object) -> RunConfig:
    vae = VAEConfig(latent_dim=2, hidden=(8,), data_shape=(1, 8, 8))
    return RunConfig(vae, TrainConfig(epochs=3, out=str(out), **train))  # type: ignore[arg-type]


def _run(tmp_path: Path) -> Path:
    """A run directory as resuming sees it: config.json and a checkpoint file."""
    run = tmp_path / "run"
    config = _config(run)
    save(VAE(config.vae), run, run_config=config)
    (run / "checkpoint.safetensors").write_bytes(b"")
    return run


def _refused(error: type[Exception], config: RunConfig, resume: bool, *said: str) -> str:
    with pytest.raises(error) as info:
        prepare_run_dir(config, resume)
    message = str(info.value)
    assert all(s in message for s in said), message
    assert "--" not in message, message  # the library speaks Python
    return message


def test_a_new_run_takes_a_new_an_empty_or_a_stopped_folder(tmp_path: Path) -> None:
    for name in ("new", "empty", "stopped"):
        config = _config(tmp_path / name)
        if name != "new":
            (tmp_path / name).mkdir()
        if name == "stopped":  # a new run killed before its config.json
            (tmp_path / name / "checkpoint.safetensors").write_bytes(b"")
        assert prepare_run_dir(config, resume=False) == (tmp_path / name, config)


def test_a_folder_in_the_way_is_refused_in_python_terms(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _refused(TrainingError, _config(tmp_path / "file"), False, "TrainConfig.out", "is a file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    said = _refused(TrainingError, _config(mine), False, "holds other files (notes.txt)")
    assert "fit(resume_config(RUN_DIR), resume=True)" in said
    run = _run(tmp_path)
    _refused(TrainingError, _config(run), False, "already holds a run", "fit(..., resume=True)")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_resuming_needs_a_run_with_a_checkpoint(tmp_path: Path) -> None:
    said = "fit(..., resume=True)", "not a pyro-vae run directory"
    _refused(CheckpointError, _config(tmp_path), True, *said)
    run = _run(tmp_path)
    (run / "checkpoint.safetensors").unlink()
    _refused(CheckpointError, _config(run), True, "no checkpoint.safetensors")


def test_a_file_pyro_vae_writes_may_not_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "eval.json").mkdir()
    with pytest.raises(CheckpointError, match=r"eval\.json' is a folder"):
        check_run_paths(tmp_path)
    (tmp_path / "eval.json").rmdir()
    (tmp_path / "plots").write_text("x")
    with pytest.raises(CheckpointError, match="plots' is a file"):
        check_run_paths(tmp_path)


def test_resume_keeps_the_saved_settings_but_the_overridable_ones(tmp_path: Path) -> None:
    run = _run(tmp_path)
    resumed = resume_config(run, epochs=7, on_nan="skip")
    assert resumed.train.epochs == 7 and resumed.train.on_nan == "skip"
    _, merged = prepare_run_dir(resumed, resume=True)
    assert merged.train.epochs == 7 and merged.train.out == str(run)
    other = dataclasses.replace(resumed, train=dataclasses.replace(resumed.train, lr=0.5))
    with pytest.raises(ConfigError, match=r"these differ: lr \(run: 0.001, given: 0.5\)") as info:
        merge_resumed(resumed, other, run)
    assert ", ".join(RESUME_OVERRIDES) in str(info.value) and "--" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        resume_config(run, colour="red")


def test_jsonl_logs_round_trip_and_are_cut_back_to_an_epoch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path, 5) == []
    write_jsonl(path, [{"epoch": 1, "x": 0.5}])
    append_jsonl(path, {"epoch": 2, "x": 0.25})
    append_jsonl(path, {"epoch": 3, "x": 0.125})
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert read_jsonl(path, 2) == [{"epoch": 1, "x": 0.5}, {"epoch": 2, "x": 0.25}]
    path.write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(CheckpointError, match="not a pyro-vae log of one JSON record per epoch"):
        read_jsonl(path, 2)
