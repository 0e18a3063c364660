"""``pyro-vae compare``: the t-interval, spec lists, the table, and resuming a comparison."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from pyro_vae import RunConfig, TrainConfig, VAEConfig
from pyro_vae.analysis.compare import compare, run_dir_name, split_specs, t_interval
from pyro_vae.cli import COMMANDS
from pyro_vae.cli.main import main
from pyro_vae.training.errors import TrainingInterrupted
from pyro_vae.training.loop import Loop

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_split_specs_keeps_multi_parameter_specs_whole() -> None:
    text = "elbo, iwae:k=5,renyi:alpha=0.5,k=5,beta:beta=2,warmup=3,stl"
    assert split_specs(text) == [
        "elbo",
        "iwae:k=5",
        "renyi:alpha=0.5,k=5",
        "beta:beta=2,warmup=3",
        "stl",
    ]
    assert run_dir_name("renyi:alpha=0.5,k=5") == "renyi_alpha=0.5_k=5"


def test_t_interval() -> None:
    stat = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749462 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 1
    assert stat["mean"] == 2.0
    assert stat["low"] == pytest.approx(2.0 - half, rel=1e-12)
    assert stat["high"] == pytest.approx(2.0 + half, rel=1e-12)
    single = t_interval([5.0])
    assert single["mean"] == 5.0 and math.isnan(single["low"]) and math.isnan(single["high"])


def _config(out: Path, epochs: int = 1) -> RunConfig:
    return RunConfig(
        VAEConfig(latent_dim=2, hidden=(16,)),
        TrainConfig(
            epochs=epochs, device="cpu", eval_num_samples=5, eval_num_points=20, out=str(out)
        ),
    )


def test_compare_writes_its_table_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    log: list[str] = []
    first = compare(["elbo", "iwae:k=3"], [0, 1], _config(out), out, log=log.append)
    assert [line.split(" (")[0] for line in log] == [
        "elbo seed 0: trained",
        "elbo seed 1: trained",
        "iwae:k=3 seed 0: trained",
        "iwae:k=3 seed 1: trained",
    ]
    assert {p.name for p in out.iterdir()} >= {"compare.json", "compare.md", "compare.png"}
    saved = json.loads((out / "compare.json").read_text())
    assert [r["objective"] for r in saved["rows"]] == ["elbo", "iwae:k=3"]
    row = saved["rows"][1]
    values = [r["test_nll"] for r in saved["runs"] if r["objective"] == "iwae:k=3"]
    assert row["test_nll"]["values"] == values and row["test_nll"]["mean"] == sum(values) / 2
    assert set(row) == {
        "objective",
        "test_elbo",
        "test_nll",
        "test_kl",
        "active_units",
        "seconds_per_epoch",
    }
    table = (out / "compare.md").read_text()
    assert "| `iwae:k=3` |" in table and "95% t-interval" in table

    # an interrupted comparison: one run lost its summary (it stopped after its checkpoint)
    unfinished = out / "iwae_k=3" / "seed1"
    (unfinished / "summary.json").unlink()
    (unfinished / "compare_metrics.json").unlink()
    finished = out / "elbo" / "seed0" / "model.safetensors"
    stamp = finished.stat().st_mtime_ns
    log.clear()
    second = compare(["elbo", "iwae:k=3"], [0, 1], _config(out), out, log=log.append)
    assert [line.split(": ")[1].split()[0] for line in log] == ["done", "done", "done", "resumed"]
    assert finished.stat().st_mtime_ns == stamp
    assert second["rows"] == first["rows"]  # the resumed run restores its RNG state too


def test_a_run_killed_before_its_config_json_starts_afresh(tmp_path: Path) -> None:
    """Killed between its epoch-0 checkpoint and its config.json: trained, not resumed."""
    out = tmp_path / "cmp"
    compare(["elbo"], [0], _config(out), out)
    run = out / "elbo" / "seed0"
    for path in run.iterdir():  # what a kill at that moment leaves: the checkpoint alone
        if path.name != "checkpoint.safetensors":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    log: list[str] = []
    compare(["elbo"], [0], _config(out), out, log=log.append)
    assert [line.split(": ")[1].split()[0] for line in log] == ["trained"]
    assert (run / "summary.json").is_file()


def test_compare_refuses_a_directory_made_with_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    compare(["elbo"], [0], _config(out), out)
    with pytest.raises(ValueError, match=r"train\.epochs: 1 != 2"):
        compare(["elbo"], [0], _config(out, epochs=2), out)


def test_compare_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    flags = ["--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--eval-num-samples", "5"]
    flags += ["--eval-num-points", "20", "--out", str(out), "--quiet"]
    assert main(["compare", "--objectives", "elbo,beta:beta=2", "--seeds", "1", *flags]) == 0
    assert "| `beta:beta=2` |" in capsys.readouterr().out
    assert main(["compare", "--objectives", "elbo", "--objective", "iwae", *flags]) == 2
    assert "--objectives" in capsys.readouterr().err
    assert main(["compare", "--objectives", "elbo,iwea:k=2", *flags]) == 2
    assert "valid objective names" in capsys.readouterr().err


def test_compare_reports_the_iw_nll_at_k_5000_by_default(tmp_path: Path) -> None:
    out = tmp_path / "k"
    flags = ["--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--eval-num-points", "5"]
    assert (
        main(
            [
                "compare",
                "--objectives",
                "elbo",
                "--seeds",
                "1",
                "--out",
                str(out),
                "--quiet",
                *flags,
            ]
        )
        == 0
    )
    saved = json.loads((out / "compare.json").read_text())
    assert saved["nll_num_samples"] == 5000 == saved["config"]["train"]["eval_num_samples"]
    assert "test IW NLL (k=5000)" in (out / "compare.md").read_text()


def test_compare_reports_the_points_the_runs_scored(tmp_path: Path) -> None:
    """eval_num_points 1000 (the default) on digits, whose test split has 300 points: the
    runs score 300, and compare.json and compare.md say 300. A conditional VAE, whose
    active units need the test labels."""
    out = tmp_path / "n"
    config = RunConfig(
        VAEConfig(latent_dim=2, hidden=(16,), conditional=True),
        TrainConfig(epochs=1, device="cpu", eval_num_samples=5, out=str(out)),
    )
    assert config.train.eval_num_points == 1000
    result = compare(["elbo"], [0], config, out)
    assert [r["nll_num_points"] for r in result["runs"]] == [300]
    saved = json.loads((out / "compare.json").read_text())
    assert saved["nll_num_points"] == 300 and saved["nll_num_samples"] == 5
    assert "IW NLL with k=5 on 300 test points" in (out / "compare.md").read_text()
    assert isinstance(result["runs"][0]["active_units"], int)


def test_a_comparison_stopped_mid_training_resumes_to_the_same_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in epoch 2 of 2 of its second run; rerun, it matches an unbroken comparison."""
    straight = compare(["elbo"], [0, 1], _config(tmp_path / "a", epochs=2), tmp_path / "a")
    out = tmp_path / "b"
    step, calls = Loop.train_step, []

    def ctrl_c_at_step_16_of_seed_1(loop: Any, x: Any, idx: Any) -> Any:
        if loop.tc.out.endswith("seed1"):
            calls.append(1)
            loop.stop_requested = loop.stop_requested or len(calls) == 16  # epoch 2, step 3
        return step(loop, x, idx)

    monkeypatch.setattr(Loop, "train_step", ctrl_c_at_step_16_of_seed_1)
    with pytest.raises(TrainingInterrupted):
        compare(["elbo"], [0, 1], _config(out, epochs=2), out)
    monkeypatch.undo()
    assert not (out / "elbo" / "seed1" / "summary.json").exists()
    log: list[str] = []
    resumed = compare(["elbo"], [0, 1], _config(out, epochs=2), out, log=log.append)
    assert [line.split(": ")[1].split()[0] for line in log] == ["done", "resumed"]

    def timeless(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "seconds_per_epoch"} for row in rows]

    assert timeless(resumed["rows"]) == timeless(straight["rows"])


def test_compare_json_is_standard_json_with_one_seed(tmp_path: Path) -> None:
    """No interval for one seed: null, not NaN (which strict JSON readers refuse)."""
    out = tmp_path / "one"
    compare(["elbo"], [0], _config(out), out)

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    saved = json.loads((out / "compare.json").read_text(), parse_constant=refuse)
    assert saved["rows"][0]["test_elbo"]["low"] is None
    again = compare(["elbo"], [0], _config(out), out)  # read back from the cache
    assert math.isfinite(again["rows"][0]["test_nll"]["mean"])


@pytest.mark.parametrize("error", [KeyboardInterrupt, TrainingInterrupted])
def test_ctrl_c_in_compare_says_interrupted_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: type
) -> None:
    """Ctrl-C outside a run (KeyboardInterrupt) or inside one (TrainingInterrupted)."""

    def stop(args: object) -> int:
        raise error("interrupted at epoch 1, step 2 of 5")

    monkeypatch.setitem(COMMANDS, "compare", stop)  # the dict main() reads
    assert main(["compare", "--objectives", "elbo", "--out", "somewhere"]) == 130
    err = capsys.readouterr().err
    assert err.count("interrupted") == 1, err
    assert "every run's last checkpoint in somewhere is kept" in err
    assert "Run the same pyro-vae compare command again" in err
