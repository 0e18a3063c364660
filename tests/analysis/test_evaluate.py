"""pyro_vae.evaluate_run: what ``pyro-vae evaluate`` does, from Python, on a tiny fit of the
embedded digits; its errors name its arguments, and the command line names its flags."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

import pyro_vae
from pyro_vae import FitResult, RunConfig, TrainConfig, VAEConfig, evaluate_run, fit
from pyro_vae.analysis import report
from pyro_vae.analysis.report import ArgumentError
from pyro_vae.cli import build_parser
from pyro_vae.cli.main import main
from pyro_vae.cli.messages import to_flags
from pyro_vae.config import ConfigError, EvaluateConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

QUICK = {"num_samples": 5, "num_points": 12, "psis_samples": 100, "progress": False}
QUICK_FLAGS = ["--num-samples", "5", "--num-points", "12", "--psis-samples", "100"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> FitResult:
    """One epoch of a tiny VAE on the embedded digits, its run directory written."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    tc = TrainConfig(epochs=1, out=str(out), eval_num_samples=2, eval_num_points=5)
    return fit(RunConfig(VAEConfig(latent_dim=2, hidden=(8,)), tc), progress=False)


def _eval_json(run: Path) -> dict[str, object]:
    return json.loads((run / "eval.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_evaluate_run_returns_what_it_writes(fitted: FitResult) -> None:
    assert fitted.run_dir is not None
    result = evaluate_run(fitted.run_dir, **QUICK)  # type: ignore[arg-type]
    assert result == _eval_json(fitted.run_dir)
    assert result["num_points"] == 12 and result["num_samples"] == 5 and result["split"] == "test"
    assert result["psis_khat"]["num_samples"] == 100  # type: ignore[index]
    assert (
        isinstance(result["psis_interpretation"], str) and "k-hat" in result["psis_interpretation"]
    )
    assert (fitted.run_dir / "plots" / "psis_khat.png").is_file()
    assert "diagnostic_errors" not in result


def test_evaluate_run_of_a_fit_result_is_that_of_its_run_directory(fitted: FitResult) -> None:
    """The FitResult's own VAE, scored in memory: the same figures as its saved run (the
    same seed draws the same subset and the same noise), and nothing written without write."""
    assert fitted.run_dir is not None
    from_dir = evaluate_run(str(fitted.run_dir), write=False, **QUICK)  # type: ignore[arg-type]
    (fitted.run_dir / "eval.json").unlink(missing_ok=True)
    in_memory = evaluate_run(fitted, write=False, **QUICK)  # type: ignore[arg-type]
    assert not (fitted.run_dir / "eval.json").exists()
    assert in_memory == from_dir
    written = evaluate_run(fitted, **QUICK)  # type: ignore[arg-type]
    assert written == _eval_json(fitted.run_dir)


def test_evaluate_run_of_an_unwritten_fit_writes_nothing(tmp_path: Path) -> None:
    tc = TrainConfig(epochs=1, out=str(tmp_path / "run"), eval_num_samples=2, eval_num_points=5)
    result = fit(RunConfig(VAEConfig(latent_dim=2, hidden=(8,)), tc), write=False, progress=False)
    scores = evaluate_run(result, num_samples=3, num_points=5, psis_samples=100, progress=False)
    assert scores["num_points"] == 5 and scores["nll"] is not None
    assert not (tmp_path / "run").exists()


def test_the_command_is_evaluate_run(fitted: FitResult, capsys: pytest.CaptureFixture[str]) -> None:
    """``pyro-vae evaluate`` writes exactly what evaluate_run returns for the same settings,
    and prints the PSIS figures with one line that interprets them."""
    assert fitted.run_dir is not None
    assert main(["evaluate", str(fitted.run_dir), *QUICK_FLAGS]) == 0
    out = capsys.readouterr().out
    expected = evaluate_run(fitted.run_dir, write=False, **QUICK)  # type: ignore[arg-type]
    assert _eval_json(fitted.run_dir) == expected
    assert "PSIS k-hat" in out and f"PSIS: {expected['psis_interpretation']}" in out


def test_the_defaults_are_the_commands() -> None:
    """evaluate_run's defaults, EvaluateConfig's and the flags' are one set of values."""
    params = inspect.signature(evaluate_run).parameters
    defaults = EvaluateConfig()
    flags = build_parser().parse_args(["evaluate", "RUN"])
    for name in EvaluateConfig.__dataclass_fields__:
        assert params[name].default == getattr(defaults, name) == getattr(flags, name), name
    assert params["dataset"].default is None and params["strict"].default is False
    assert "evaluate_run" in pyro_vae.__all__


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_points": 0}, "num_points must be in 1..300 for this split, got 0"),
        ({"num_points": 1.5}, "num_points must be an int or None"),
        ({"num_samples": 0}, "num_samples must be a positive int, got 0"),
        ({"num_samples": True}, "num_samples must be a positive int, got True"),
        ({"psis_samples": 50}, "psis_samples must be at least 100, got 50"),
        ({"gaps": 13, "num_points": 12}, "gaps can use at most the 12 evaluated points, got 13"),
        ({"mcmc": -1}, "mcmc must be a non-negative int, got -1"),
        ({"mcmc": 20, "num_points": 12}, "mcmc can use at most the 12 evaluated points"),
        ({"mcmc_samples": 0}, "mcmc_samples must be a positive int, got 0"),
        ({"split": "train"}, "split must be 'test' or 'valid', got 'train'"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N (N the GPU's index)"),
    ],
)
def test_arguments_are_refused_by_name(
    fitted: FitResult, settings: dict[str, object], message: str
) -> None:
    """Each bad argument is a ValueError (a ConfigError whose field is the argument) whose
    message starts with the argument's name, raised before anything slow or written."""
    assert fitted.run_dir is not None
    (fitted.run_dir / "eval.json").unlink(missing_ok=True)
    with pytest.raises(ArgumentError) as err:
        evaluate_run(fitted.run_dir, progress=False, **settings)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)
    assert isinstance(err.value, ValueError) and isinstance(err.value, ConfigError)
    assert err.value.field == err.value.argument == message.split()[0]
    assert not (fitted.run_dir / "eval.json").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-points", "0"], "--num-points must be in 1..300 for this split, got 0"),
        (["--num-samples", "0"], "--num-samples must be a positive int, got 0"),
        (["--psis-samples", "10"], "--psis-samples must be at least 100, got 10"),
        (["--num-points", "5", "--gaps", "6"], "--gaps can use at most the 5 evaluated points"),
        (["--num-points", "5", "--mcmc", "6"], "--mcmc can use at most the 5 evaluated points"),
        (["--mcmc-samples", "0"], "--mcmc-samples must be a positive int, got 0"),
    ],
)
def test_the_command_names_the_flags(
    fitted: FitResult, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(fitted.run_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert f"pyro-vae: error: {message}" in err, err


def test_data_of_another_shape_is_refused_in_each_callers_terms(
    fitted: FitResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "small.npy"
    np.save(data, np.random.default_rng(0).random((30, 1, 4, 4)).astype(np.float32))
    with pytest.raises(ValueError, match=r"evaluate_run\(\.\.\., dataset='digits'\)"):
        evaluate_run(fitted, dataset=str(data), progress=False)
    assert main(["evaluate", str(fitted.run_dir), "--dataset", str(data)]) == 2
    err = capsys.readouterr().err
    assert "items of shape (1, 4, 4)" in err and "e.g. --dataset digits" in err
    assert "evaluate_run" not in err


def test_to_flags_translates_evaluate_runs_arguments() -> None:
    assert to_flags("e.g. evaluate_run(..., dataset='mnist').") == "e.g. --dataset mnist."
    assert to_flags("gaps can use at most 5") == "--gaps can use at most 5"
    assert to_flags("the gaps diagnostic failed") == "the gaps diagnostic failed"
    assert to_flags("x must be a tensor") == "x must be a tensor"


def test_report_runs_its_diagnostics_under_their_new_name() -> None:
    """report.diagnose (taken for the NaN-step report) is run_diagnostics; the old name works."""
    assert "run_diagnostics" in report.__all__ and "diagnose" not in report.__all__
    assert report.diagnose is report.run_diagnostics
