"""The command line end to end on the embedded digits, and its refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pyro_vae.cli.main import build_parser, main, run_config, subset
from pyro_vae.config import ConfigError, RunConfig, TrainConfig
from pyro_vae.training.fit import resolve_device
from pyro_vae.training.rundir import prepare_run_dir

FAST = [
    "--hidden",
    "32",
    "--latent-dim",
    "2",
    "--quiet",
    "--eval-num-samples",
    "5",
    "--eval-num-points",
    "50",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_the_run_directory(run_dir: Path) -> None:
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "checkpoint.safetensors",
        "summary.json",
        "plots",
    } <= names
    assert {p.name for p in (run_dir / "plots").iterdir()} == {
        "curves.png",
        "reconstructions.png",
        "samples.png",
    }
    config = json.loads((run_dir / "config.json").read_text())
    assert config["vae"]["data_shape"] == [1, 8, 8] and config["train"]["epochs"] == 2
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert abs(r["valid_elbo"] - (r["valid_reconstruction"] - r["valid_kl"])) < 1e-4  # float32


def test_evaluate_writes_eval_json(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", str(run_dir), "--num-samples", "20", "--num-points", "40"])
    assert code == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert set(result) >= {
        "elbo",
        "reconstruction",
        "kl",
        "nll",
        "num_samples",
        "num_points",
        "split",
    }
    assert result["num_points"] == 40 and result["num_samples"] == 20
    assert result["split"] == "test"
    assert abs(result["elbo"] - (result["reconstruction"] - result["kl"])) < 1e-4
    assert result["nll"] <= -result["elbo"] + 1.0  # the IW bound is (nearly) tighter
    assert "NLL" in capsys.readouterr().out
    # the scored rows are the seeded random subset (worst_points name split rows), not x[:40]
    scored = set(subset(300, 40, seed=0).tolist())  # digits' test split has 300 rows
    named = {point["index"] for point in result["worst_points"]}
    assert named and named <= scored and max(named) >= 40


def test_subset_is_seeded_and_random() -> None:
    a, b = subset(1000, 50, seed=0), subset(1000, 50, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, torch.arange(50))
    assert len(set(a.tolist())) == 50


def test_sample_png_and_npy(run_dir: Path, tmp_path: Path) -> None:
    assert main(["sample", str(run_dir), "--num", "12", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (12, 1, 8, 8)
    assert main(["sample", str(run_dir), "--num", "12", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    means = np.load(tmp_path / "s.npy")
    assert not np.isin(means, (0.0, 1.0)).all()  # Bernoulli means: probabilities
    flags = ["--num", "12", "--draw", "--out", str(tmp_path / "d.npy")]
    assert main(["sample", str(run_dir), *flags]) == 0
    assert np.isin(np.load(tmp_path / "d.npy"), (0.0, 1.0)).all()  # draws x ~ p(x|z): binary


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prior", "nope"], "valid prior names are: flow, learned-normal, mixture, normal"),
        (["--likelihood", "normal:scale=-1"], "scale must be a positive"),
        (["--latent-dim", "0"], "latent_dim must be a positive int"),
        (["--hidden", "0,3"], "hidden must hold positive ints"),
        (["--binarize", "none"], "--binarize dynamic"),
        (["--dataset", "no-such-data"], "digits"),
    ],
)
def test_bad_input_exits_with_a_message(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--epochs", "1", "--out", str(tmp_path / "r"), *FAST, *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def _clean_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one-paragraph message of a user's error: no exception type, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: ") and "Error:" not in err, err
    assert "Traceback" not in err
    return err


def test_vamp_with_a_delta_guide_is_a_clean_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--epochs", "1", "--out", str(tmp_path / "r"), *FAST]
    assert main([*argv, "--prior", "vamp:components=3", "--guide", "delta"]) == 2
    assert "the VampPrior is a mixture of the guide's densities" in _clean_error(capsys)
    assert not (tmp_path / "r").exists()


def test_sample_label_errors_are_clean(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--label on an unconditional run, a class out of range, and the command's own checks."""
    assert main(["sample", str(run_dir), "--label", "1", "--out", str(tmp_path / "a.npy")]) == 2
    assert "--label 1: the run in" in _clean_error(capsys)
    out = tmp_path / "cond"
    assert main(["train", "--epochs", "1", "--out", str(out), *FAST, "--conditional", "true"]) == 0
    capsys.readouterr()
    flags = ["--num", "3", "--out", str(tmp_path / "s.npy")]
    assert main(["sample", str(out), "--label", "12", *flags]) == 2
    assert "--label must be a class in 0..9 for the run in" in _clean_error(capsys)
    assert main(["sample", str(out), "--label", "-1", *flags]) == 2
    assert "got -1" in _clean_error(capsys)
    assert main(["sample", str(out), "--label", "9", *flags]) == 0
    assert main(["sample", str(out), "--num", "0"]) == 2
    assert "--num must be a positive int, got 0" in _clean_error(capsys)


def test_existing_run_is_left_alone(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(run_dir)
    assert main(["train", "--epochs", "1", "--out", str(run_dir), *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _snapshot(run_dir) == before


def test_resume_needs_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", "--out", str(tmp_path), *FAST]) == 2
    assert "not a pyro-vae run directory" in capsys.readouterr().err


def test_toml_config_and_unknown_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vae]\nlatent_dimm = 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "unknown key(s) ['latent_dimm']" in capsys.readouterr().err


def _trained_binarize(tmp_path: Path, name: str, *flags: str) -> str:
    """``binarize`` as recorded in the config.json of a one-epoch run with ``flags``."""
    out = tmp_path / name
    assert main(["train", "--epochs", "1", "--out", str(out), *FAST, *flags]) == 0
    return str(json.loads((out / "config.json").read_text())["train"]["binarize"])


def test_binarize_auto_is_settled_by_the_final_likelihood(tmp_path: Path) -> None:
    """``auto`` waits for the merged config: flags over the TOML file over the defaults."""
    assert _trained_binarize(tmp_path, "normal", "--likelihood", "normal") == "none"
    toml = tmp_path / "cb.toml"
    toml.write_text('[vae]\nlikelihood = "continuous-bernoulli"\n')
    assert _trained_binarize(tmp_path, "cb", "--config", str(toml)) == "none"
    flags = ("--config", str(toml), "--likelihood", "bernoulli")
    assert _trained_binarize(tmp_path, "b", *flags) == "dynamic"


@pytest.mark.parametrize(
    ("layers", "binarize"),
    [
        ([], "dynamic"),
        (["--likelihood", "normal", "--binarize", "dynamic"], "dynamic"),  # explicit wins
        (["--likelihood", "beta"], "none"),
        (["--config", "{toml}"], "dynamic"),  # the file's explicit binarize
        (["--config", "{toml}", "--likelihood", "laplace"], "dynamic"),
        (["--config", "{toml}", "--binarize", "auto", "--likelihood", "laplace"], "none"),
        (["--config", "{run}", "--likelihood", "normal"], "none"),  # the run's was auto's
    ],
)
def test_binarize_layers(layers: list[str], binarize: str, run_dir: Path, tmp_path: Path) -> None:
    toml = tmp_path / "d.toml"
    toml.write_text('[vae]\nlikelihood = "normal"\n[train]\nbinarize = "dynamic"\n')
    argv = ["train", *(a.format(toml=toml, run=run_dir) for a in layers)]
    assert run_config(build_parser().parse_args(argv)).train.binarize == binarize


def test_poisson_on_grey_digits_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not binarized behind the user's back: the digits are grey levels, not counts."""
    argv = ["train", "--epochs", "1", "--out", str(tmp_path / "r"), *FAST]
    assert main([*argv, "--likelihood", "poisson"]) == 2
    err = capsys.readouterr().err
    assert "the Poisson likelihood needs counts" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_resume_continues_bit_identically(tmp_path: Path) -> None:
    flags = [*FAST, "--seed", "3"]
    assert main(["train", "--epochs", "3", "--out", str(tmp_path / "full"), *flags]) == 0
    assert main(["train", "--epochs", "2", "--out", str(tmp_path / "part"), *flags]) == 0
    assert (
        main(["train", "--epochs", "3", "--resume", "--out", str(tmp_path / "part"), "--quiet"])
        == 0
    )
    for name in ("metrics.jsonl",):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "part" / name).read_text()
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_console_script_runs(tmp_path: Path) -> None:
    """The installed ``pyro-vae`` script (next to this Python) and ``python -m pyro_vae``."""
    script = Path(sys.executable).parent / "pyro-vae"
    found = script if script.is_file() else shutil.which("pyro-vae")
    assert found, "the console script pyro-vae is not installed: pip install -e ."
    for command in ([str(found)], [sys.executable, "-m", "pyro_vae"]):
        out = subprocess.run(
            [*command, "train", "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "--latent-dim" in out and "(default: 8)" in out


def test_a_run_is_rebuilt_from_its_config_json(run_dir: Path, tmp_path: Path) -> None:
    """``--config RUN_DIR`` (or its config.json) trains the same run again, bit for bit."""
    saved = json.loads((run_dir / "config.json").read_text())
    for given in (run_dir, run_dir / "config.json"):
        out = tmp_path / given.name
        assert main(["train", "--config", str(given), "--out", str(out), "--quiet"]) == 0
        again = json.loads((out / "config.json").read_text())
        assert again["vae"] == saved["vae"]
        assert {**again["train"], "out": None} == {**saved["train"], "out": None}
        assert (out / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(ConfigError, match=r"must be a run's config\.json"):
        main(["train", "--config", str(other), "--debug"])


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda0"])
def test_a_bad_device_is_refused_by_every_command(
    device: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """resolve_device itself checks the name, so evaluate (not only train) says what is valid."""
    before = _snapshot(run_dir)
    assert main(["evaluate", str(run_dir), "--device", device, "--num-points", "5"]) == 2
    err = _clean_error(capsys)
    assert f"--device must be auto, cpu, cuda or cuda:N (N the GPU's index), got {device!r}" in err
    assert _snapshot(run_dir) == before
    with pytest.raises(ConfigError, match=r"TrainConfig\.device must be auto, cpu, cuda or cuda:N"):
        resolve_device(device)
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        TrainConfig(device=device)  # train's flag, checked with the other settings


@pytest.mark.parametrize(
    ("argv", "first"),
    [
        (["train", "--latent-dim", "abc"], "pyro-vae train: error: argument --latent-dim: invalid"),
        (["sample", "RUN", "--device", "tpu"], "pyro-vae sample: error: unrecognized arguments"),
        (["evaluate"], "pyro-vae evaluate: error: the following arguments are required: run_dir"),
        ([], "pyro-vae: error: the following arguments are required: command"),
    ],
)
def test_argument_errors_are_one_paragraph(
    argv: list[str], first: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No 20-line usage block: the error, and which --help lists the flags; exit 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(first), lines
    command = first.split(":")[0]
    assert lines[1] == f"(run {command} --help for the flags)"


HUGE = str(2**62)  # torch: "Storage size calculation overflowed" for a layer this wide


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--latent-dim", HUGE], "latent_dim must be at most 16777216 (2**24)"),
        (["--hidden", HUGE], "hidden must be at most 16777216 (2**24)"),
        (["--guide", f"iaf:hidden={HUGE}"], f"guide 'iaf:hidden={HUGE}' is too large to build"),
        # built past the config's checks: torch's own overflow, said as the user's error
        (["--prior", f"vamp:components={HUGE}"], "the model (or a batch) is too large"),
        (["--objective", f"iwae:k={HUGE}"], "the model (or a batch) is too large"),
    ],
)
def test_sizes_too_large_for_torch_are_a_clean_error(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet", *flags]) == 2
    err = _clean_error(capsys)
    assert message in err
    if "model (or a batch)" in message:
        assert "Lower the sizes that make it: --latent-dim, --hidden" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("vae", "message"),
    [
        ({"latent_dim": 2**62}, "latent_dim must be at most 16777216"),
        ({"guide": f"iaf:hidden={HUGE}"}, "is too large to build"),
        ({"prior": f"vamp:components={HUGE}"}, "the model (or a batch) is too large"),
    ],
)
def test_a_run_with_sizes_too_large_for_torch_is_refused(
    vae: dict[str, object],
    message: str,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hostile config.json: sample and evaluate refuse it in one paragraph, exit 2."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    config["vae"].update(vae)
    (run / "config.json").write_text(json.dumps(config))
    before = _snapshot(run)
    for argv in (["sample", str(run)], ["evaluate", str(run), "--num-points", "5"]):
        assert main(argv) == 2
        assert message in _clean_error(capsys)
    assert _snapshot(run) == before


def test_config_from_a_run_ignores_its_out(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A (foreign) config.json whose train.out points elsewhere: nothing is written there;
    the new run goes to --out, or the default under the current directory."""
    victim, foreign = tmp_path / "victim", tmp_path / "foreign"
    shutil.copytree(run_dir, foreign)
    config = json.loads((foreign / "config.json").read_text())
    config["train"].update(out=str(victim), epochs=1)
    config["vae"].update(num_classes=7)  # unconditional: no classes, whatever it says
    (foreign / "config.json").write_text(json.dumps(config))
    for given in (foreign, foreign / "config.json"):
        args = build_parser().parse_args(["train", "--config", str(given)])
        assert run_config(args).train.out == "runs/latest"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(foreign), "--quiet"]) == 0
    assert not victim.exists()
    saved = json.loads((tmp_path / "runs" / "latest" / "config.json").read_text())
    assert saved["train"]["out"] == "runs/latest" and saved["vae"]["num_classes"] == 0


def test_a_folder_that_is_not_a_run_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a folder with the user's files (no config.json): refused, untouched; an
    empty folder, or one where a new run was stopped before its config.json, is used."""
    mine = tmp_path / "mine"
    (mine / "plots").mkdir(parents=True)
    for name in ("notes.txt", "metrics.jsonl", "summary.json", "timing.jsonl", "plots/a.png"):
        (mine / name).write_text(name)
    before = _snapshot(mine)
    assert main(["train", "--epochs", "1", "--out", str(mine), *FAST]) == 2
    err = _clean_error(capsys)
    assert "holds other files (metrics.jsonl, notes.txt, plots, summary.json, timing" in err
    assert "needs an empty or new folder" in err and "--resume RUN_DIR" in err
    assert _snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == [
        "metrics.jsonl",
        "notes.txt",
        "plots",
        "summary.json",
        "timing.jsonl",
    ]
    stopped = tmp_path / "stopped"  # killed after its epoch-0 checkpoint, before config.json
    stopped.mkdir()
    for name in ("checkpoint.safetensors", ".config.json.abc123.tmp"):
        (stopped / name).write_bytes(b"")
    prepare_run_dir(RunConfig(train=TrainConfig(out=str(stopped))), resume=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--epochs", "1", "--out", str(empty), *FAST]) == 0
    assert (empty / "config.json").is_file()


def test_a_file_where_the_run_has_a_folder_fails_before_training(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``plots`` replaced by a file: resume, evaluate and sample say so up front, and the
    run is left as it was (no epoch trained, no eval.json)."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "plots")
    (run / "plots").write_text("my notes")
    (run / "eval.json").unlink(missing_ok=True)
    before = _snapshot(run)
    for argv in (
        ["train", "--resume", str(run), "--epochs", "3", "--quiet"],
        ["evaluate", str(run), "--num-points", "5"],
        ["sample", str(run)],
    ):
        assert main(argv) == 2
        err = _clean_error(capsys)
        assert f"{str(run / 'plots')!r} is a file, but pyro-vae writes the run's plots" in err
    assert _snapshot(run) == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--latent-dim", "0"], "--latent-dim 0: latent_dim must be a positive int, got 0. Pass"),
        (["--hidden", "0,3"], "--hidden 0,3: hidden must hold positive ints, got (0, 3). Pass"),
        (["--lr", "-1"], "--lr -1.0: lr must be a positive finite number, got -1.0. Pass --lr"),
        (["--config", "{toml}", "--epochs", "0"], "--epochs 0: epochs must be a positive int"),
    ],
)
def test_a_refused_setting_names_the_flag_typed(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nepochs = 3\n")
    argv = ["train", "--out", str(tmp_path / "r"), *(f.format(toml=toml) for f in flags)]
    assert main(argv) == 2
    err = _clean_error(capsys)
    assert message in err and "(pyro-vae train --help describes each flag" in err
    assert "error: --" in err and " vae: " not in err and " train: " not in err


def test_a_refused_resume_flag_names_the_flag(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--epochs", "0", "--quiet"]) == 2
    assert "--epochs 0: epochs must be a positive int, got 0. Pass --epochs" in _clean_error(capsys)
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[vae]\nlatent_dim = "3"\n',
            "c2.toml: vae.latent_dim must be int, got '3' (a string; write the number without "
            "quotes: 3)",
        ),
        ("[vae]\nlatent_dim = 0\n", "c2.toml: vae.latent_dim must be a positive int, got 0"),
        ("[train]\nlr = -1\n", "c2.toml: train.lr must be a positive finite number, got -1.0"),
        ("[vae]\nlatent = 2\n", "c2.toml: unknown key(s) ['latent'] in [vae]; valid keys"),
    ],
)
def test_toml_errors_name_the_file_then_the_key(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c2.toml").write_text(text)
    argv = ["train", "--config", str(tmp_path / "c2.toml"), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = _clean_error(capsys)
    assert f"{tmp_path / message}" in err and ".toml.vae" not in err
    assert not (tmp_path / "r").exists()


def test_renyi_with_alpha_one_points_to_the_elbo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused at the spec, in this package's words (not Pyro's 'use Trace_ELBO class')."""
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--objective", "renyi:alpha=1", *FAST]) == 2
    err = _clean_error(capsys)
    assert "objective 'renyi:alpha=1': alpha=1 is the ELBO" in err
    assert "use --objective elbo" in err and "Trace_ELBO" not in err
    assert not out.exists()


def test_a_missing_data_root_gives_the_command_line_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Offline, with PYRO_VAE_DATA naming a folder without the files: the advice includes
    what to run in a shell, not only Python calls, and survives the one-paragraph cut."""
    root = tmp_path / "nodata"
    monkeypatch.setenv("PYRO_VAE_DATA", str(root))
    assert main(["train", "--out", str(tmp_path / "r"), "--dataset", "mnist", *FAST]) == 2
    err = " ".join(_clean_error(capsys).split())
    assert f"not found in {root / 'mnist'}" in err
    call = f"load_dataset('mnist', root='{root}', download=True)"
    assert f'from the command line, python -c "from pyro_vae import load_dataset; {call}"' in err
    assert "env -u PYRO_VAE_DATA pyro-vae train --dataset mnist." in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("line", "what"),
    [("num_classes = 7", "the number of classes"), ("data_shape = [1, 2, 3]", "the shape of")],
)
def test_settings_of_the_data_are_refused_in_a_toml_file(
    line: str, what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """data_shape and num_classes come from the data set: a TOML [vae] may not set them
    (they used to be overridden, or saved as given). --config RUN keeps its own."""
    (tmp_path / "c.toml").write_text(f"[vae]\nlatent_dim = 2\n{line}\n")
    argv = ["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")]
    assert main([*argv, "--epochs", "1", *FAST]) == 2
    key = line.split(" ")[0]
    err = _clean_error(capsys)
    assert f"c.toml: vae.{key} is set from the data set ({what}" in err
    assert "Remove it" in err and not (tmp_path / "r").exists()
