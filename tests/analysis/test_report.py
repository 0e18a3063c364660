"""The diagnostics of an evaluation (pyro_vae.analysis.report) through ``pyro-vae evaluate``:
every kind of run gets them, and a failing one loses no figure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pyro_vae import load_dataset
from pyro_vae.analysis import diagnostics
from pyro_vae.analysis.evaluate import subset
from pyro_vae.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_evaluate_reports_the_diagnostics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--hidden", "16", "--latent-dim", "2", "--quiet", "--eval-num-samples", "5"]
    flags += ["--eval-num-points", "20"]
    assert main(["train", "--epochs", "1", "--out", str(run), *flags]) == 0
    args = ["--num-samples", "20", "--num-points", "25", "--psis-samples", "100", "--gaps", "2"]
    assert main(["evaluate", str(run), *args, "--mcmc", "1", "--mcmc-samples", "30"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert {"elbo", "reconstruction", "kl", "nll", "num_samples", "num_points", "split"} <= set(
        result
    )
    assert isinstance(result["active_units"], int) and 0 <= result["active_units"] <= 2
    assert len(result["kl_per_dim"]) == 2 and result["kl_per_dim_method"] == "analytic"
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], abs=1e-4)
    assert -0.05 < result["mutual_information"] <= math.log(25) + 1e-6  # MC noise around 0
    assert set(result["psis_khat"]) >= {"mean", "max", "frac_above_0.7", "frac_above_0.5"}
    assert len(result["worst_points"]) == 10
    assert result["gaps"]["num_points"] == 2
    ids = subset(len(load_dataset("digits").test), 25, 0).tolist()  # evaluate's --seed 0
    assert {w["index"] for w in result["worst_points"]} <= set(ids)
    assert result["mcmc"]["points"] == ids[:1] and len(result["mcmc"]["moments"]) == 2
    plots = {p.name for p in (run / "plots").iterdir()}
    assert "psis_khat.png" in plots
    assert f"posterior_pairs_{result['mcmc']['points'][0]}.png" in plots


def _small_run(run: Path, *flags: str) -> Path:
    train = ["--hidden", "8", "--latent-dim", "2", "--quiet", "--eval-num-samples", "2"]
    train += ["--eval-num-points", "10", "--epochs", "1", "--out", str(run), *flags]
    assert main(["train", *train]) == 0
    return run


QUICK = ["--num-samples", "5", "--num-points", "12", "--psis-samples", "100"]
QUICK += ["--gaps", "1", "--mcmc", "1", "--mcmc-samples", "10"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--guide", "iaf"],
        ["--guide", "lowrank"],
        ["--upper-latent-dims", "2"],
        ["--conditional", "true"],
    ],
    ids=["iaf", "lowrank", "two-layer", "conditional"],
)
def test_evaluate_gives_every_kind_of_run_its_diagnostics(tmp_path: Path, flags: list[str]) -> None:
    """IAF and low-rank guides, two stochastic layers and a conditional VAE (labels passed
    through): every diagnostic is computed, NUTS samples every latent site, and its
    InferenceData is saved as RUN_DIR/mcmc.nc."""
    run = _small_run(tmp_path / "run", *flags)
    assert main(["evaluate", str(run), *QUICK]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert "diagnostics_skipped" not in result and "diagnostic_errors" not in result
    sites = ["z1", "z2"] if "--upper-latent-dims" in flags else ["z"]
    assert isinstance(result["active_units"], int) and result["psis_khat"]["num_samples"] == 100
    if len(sites) == 1:
        assert result["mutual_information"] is not None
    kl_sites = {"iaf": [], "lowrank": ["z", "z"], "2": ["z1", "z1", "z2", "z2"], "true": ["z", "z"]}
    assert result["kl_per_dim_sites"] == kl_sites[flags[1]]  # an IAF's KL does not split
    assert result["kl_per_dim_marginal"] == ("lowrank" in flags)
    assert result["gaps"]["num_points"] == 1 and math.isfinite(result["gaps"]["log_px"]["mean"])
    assert {r["site"] for r in result["mcmc"]["moments"]} == set(sites)
    idata = diagnostics.arviz().from_netcdf(run / "mcmc.nc")
    assert sorted(idata.posterior.data_vars) == sites
    assert idata.posterior.coords["point"].values.tolist() == result["mcmc"]["points"]
    point = result["mcmc"]["points"][0]
    assert (run / "plots" / f"posterior_pairs_{point}.png").is_file()


def test_a_failing_diagnostic_loses_no_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One diagnostic raising: the others still run, eval.json keeps every figure with the
    error under ``diagnostic_errors``, and the exit code says so; with --debug the error
    propagates, and eval.json holds everything computed before it."""
    run = _small_run(tmp_path / "run")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(diagnostics, "inference_gaps", broken)
    assert main(["evaluate", str(run), *QUICK]) == 1
    result = json.loads((run / "eval.json").read_text())
    assert result["diagnostic_errors"] == {"gaps": "RuntimeError: broken on purpose"}
    assert {"nll", "psis_khat", "mutual_information", "mcmc"} <= set(result)
    assert "the gaps diagnostic failed" in capsys.readouterr().err
    (run / "eval.json").unlink()
    with pytest.raises(RuntimeError, match="broken on purpose"):
        main(["--debug", "evaluate", str(run), *QUICK])
    partial = json.loads((run / "eval.json").read_text())
    assert {"nll", "psis_khat", "kl_per_dim"} <= set(partial) and "mcmc" not in partial
