"""The IWAE paper's optimisation (Adam betas/eps, the burda schedule, train+valid), the
Table 1 configs in configs/, and benchmarks/reproduce_iwae.py in smoke mode."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pyro
import pyro.poutine as poutine
import pytest
import torch

from benchmarks.reproduce_iwae import (
    PAPER_NLL,
    ROWS,
    _row_key,
    layer_active_units,
    learning_curve,
    main,
    ordering,
    row_config,
)
from pyro_vae import VAE, Dataset, fit, load_dataset
from pyro_vae.analysis.diagnostics import active_units
from pyro_vae.cli.main import build_parser, run_config
from pyro_vae.config import ConfigError, RunConfig, TrainConfig, VAEConfig, load_toml
from pyro_vae.infer.objectives import build_objective
from pyro_vae.training.checkpoint import read_tensors
from pyro_vae.training.fit import resume_config, training_labels, training_split
from pyro_vae.training.schedules import burda_stage_epochs, learning_rate, schedule_epochs

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


# ------------------------------------------------------------------ the schedule


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (1, 1e-3),  # stage 0: epoch 1
        (2, 1e-3 * 10 ** (-1 / 7)),  # stage 1: epochs 2..4
        (4, 1e-3 * 10 ** (-1 / 7)),
        (5, 1e-3 * 10 ** (-2 / 7)),  # stage 2: epochs 5..13
        (13, 1e-3 * 10 ** (-2 / 7)),
        (14, 1e-3 * 10 ** (-3 / 7)),  # stage 3: epochs 14..40
        (1093, 1e-3 * 10 ** (-6 / 7)),  # stage 6 ends at 1 + 3 + ... + 729 = 1093
        (1094, 1e-4),  # stage 7: epochs 1094..3280 at 1e-3 * 10**-1
        (3280, 1e-4),
        (5000, 1e-4),  # past the end: the last rate
    ],
)
def test_burda_learning_rate_at_hand_computed_epochs(epoch: int, expected: float) -> None:
    assert learning_rate(1e-3, "burda", epoch) == pytest.approx(expected, rel=1e-12)
    assert learning_rate(1e-3, "constant", epoch) == 1e-3


def test_burda_stage_lengths() -> None:
    assert burda_stage_epochs(1.0) == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert schedule_epochs("burda") == 3280
    assert burda_stage_epochs(1 / 27) == [1, 1, 1, 1, 3, 9, 27, 81]
    assert burda_stage_epochs(1 / 3) == [1, 1, 3, 9, 27, 81, 243, 729]  # no 3 * (1/3) -> 2
    assert burda_stage_epochs(1 / 2187) == [1] * 8
    assert schedule_epochs("constant") is None
    # a shortened schedule keeps the paper's eight rates, one per stage
    rates = [learning_rate(1e-3, "burda", e, 1e-6) for e in range(1, 9)]
    assert rates == pytest.approx([1e-3 * 10 ** (-i / 7) for i in range(8)], rel=1e-12)
    with pytest.raises(ValueError, match="stage_scale"):
        burda_stage_epochs(0.0)
    with pytest.raises(ValueError, match="epoch must be"):
        learning_rate(1e-3, "burda", 0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        learning_rate(1e-3, "cosine", 1)


# ------------------------------------------------------------------ the config


def test_defaults_keep_torch_adam() -> None:
    tc = TrainConfig()
    assert (tc.adam_beta1, tc.adam_beta2, tc.adam_eps) == (0.9, 0.999, 1e-8)
    assert (tc.lr_schedule, tc.lr_stage_scale, tc.train_on) == ("constant", 1.0, "train")
    defaults = torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults
    assert defaults["betas"] == (tc.adam_beta1, tc.adam_beta2) and defaults["eps"] == tc.adam_eps


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adam_beta1": 1.0}, "adam_beta1 must be a number in"),
        ({"adam_beta2": -0.1}, "adam_beta2 must be a number in"),
        ({"adam_eps": 0.0}, "adam_eps must be a positive"),
        ({"adam_eps": math.inf}, "adam_eps must be a positive"),
        ({"lr_schedule": "cosine"}, "lr_schedule must be 'constant' or 'burda'"),
        ({"lr_stage_scale": 0.0}, "lr_stage_scale must be a positive"),
        ({"train_on": "all"}, "train_on must be 'train' or 'train\\+valid'"),
    ],
)
def test_bad_optimisation_settings_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change)  # type: ignore[arg-type]


def test_cli_flags_exist() -> None:
    args = build_parser().parse_args(
        [
            *("train", "--adam-eps", "1e-4", "--adam-beta1", "0.5", "--lr-schedule", "burda"),
            *("--lr-stage-scale", "0.01", "--train-on", "train+valid"),
        ]
    )
    tc = run_config(args).train
    assert (tc.adam_eps, tc.adam_beta1, tc.lr_schedule) == (1e-4, 0.5, "burda")
    assert (tc.lr_stage_scale, tc.train_on) == (0.01, "train+valid")


# ------------------------------------------------------------------ training


def _tiny(tmp_path: Path, **train: object) -> RunConfig:
    base = {
        "dataset": "digits",
        "epochs": 2,
        "batch_size": 100,
        "eval_num_points": 0,
        "out": str(tmp_path / "run"),
    }
    return RunConfig(VAEConfig(latent_dim=2, hidden=(16,)), TrainConfig(**{**base, **train}))  # type: ignore[arg-type]


def _small() -> Dataset:
    """300 digits to train on, 50 to validate and 50 to test: a few steps per epoch."""
    ds = load_dataset("digits")
    return Dataset(ds.name, ds.train[:300], ds.valid[:50], ds.test[:50])


def _param_groups(run_dir: Path) -> list[dict[str, object]]:
    _, meta = read_tensors(run_dir / "checkpoint.safetensors")
    groups: list[dict[str, object]] = meta["param_groups"]
    return groups


def test_betas_eps_and_scheduled_lr_reach_the_optimizer(tmp_path: Path) -> None:
    config = _tiny(
        tmp_path,
        adam_beta1=0.8,
        adam_beta2=0.99,
        adam_eps=1e-4,
        lr_schedule="burda",
        lr_stage_scale=1e-6,
        lr=1e-2,
    )
    fit(config, dataset=_small(), progress=False)
    (group,) = _param_groups(tmp_path / "run")
    assert group["betas"] == [0.8, 0.99] and group["eps"] == 1e-4
    assert group["lr"] == pytest.approx(1e-2 * 10 ** (-1 / 7), rel=1e-12)  # epoch 2 = stage 1


def test_schedule_changes_training_from_its_second_epoch(tmp_path: Path) -> None:
    ds = _small()
    constant = fit(_tiny(tmp_path), dataset=ds, progress=False, write=False)
    burda = fit(
        _tiny(tmp_path, lr_schedule="burda", lr_stage_scale=1e-6),
        dataset=ds,
        progress=False,
        write=False,
    )
    assert constant.history[0]["train_loss"] == burda.history[0]["train_loss"]  # same lr
    assert constant.history[1]["train_loss"] != burda.history[1]["train_loss"]


def test_resume_mid_schedule_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    schedule = {"lr_schedule": "burda", "lr_stage_scale": 1e-6, "epochs": 4}
    ds = _small()
    whole = fit(
        _tiny(tmp_path, out=str(tmp_path / "whole"), **schedule), dataset=ds, progress=False
    )
    first = _tiny(tmp_path, out=str(tmp_path / "parts"), **{**schedule, "epochs": 2})
    fit(first, dataset=ds, progress=False)
    again = resume_config(tmp_path / "parts", epochs=4)
    resumed = fit(again, dataset=ds, resume=True, progress=False)
    assert resumed.history == whole.history
    for run in ("whole", "parts"):
        (group,) = _param_groups(tmp_path / run)
        assert group["lr"] == pytest.approx(1e-3 * 10 ** (-3 / 7), rel=1e-12)  # epoch 4


def test_train_on_train_and_valid(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    rows = training_split(ds, "train+valid")
    assert torch.equal(rows, torch.cat([ds.train, ds.valid]))
    assert torch.equal(training_split(ds, "train"), ds.train)
    vae = VAE(VAEConfig(data_shape=ds.data_shape, latent_dim=2, hidden=(8,)))
    assert training_labels(vae, ds, "train+valid") is None
    result = fit(_tiny(tmp_path, train_on="train+valid", epochs=1), progress=False, write=False)
    n = ds.train.shape[0] + ds.valid.shape[0]
    assert result.history[0]["step"] == math.ceil(n / 100)  # one epoch over train + valid


# ------------------------------------------------------------------ the configs


def test_configs_are_the_rows_of_table_1() -> None:
    assert sorted(p.stem for p in CONFIGS) == sorted(ROWS) and len(ROWS) == 12


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_config_loads_and_has_the_papers_setup(path: Path) -> None:
    args = build_parser().parse_args(["train", "--config", str(path)])
    config = run_config(args)
    assert config == load_toml(path)
    tc = config.train
    model, layers, k = _row_key(path.stem)
    assert (tc.dataset, tc.binarize, tc.train_on, tc.batch_size) == (
        "mnist",
        "dynamic",
        "train+valid",
        20,
    )
    assert (tc.lr, tc.adam_beta1, tc.adam_beta2, tc.adam_eps) == (1e-3, 0.9, 0.999, 1e-4)
    assert (tc.lr_schedule, tc.lr_stage_scale, tc.epochs) == ("burda", 1.0, 3280)
    assert (tc.eval_num_samples, tc.eval_num_points) == (5000, 10000)
    if model == "vae":
        assert (tc.objective, tc.num_particles) == ("elbo", k)
    else:
        assert (tc.objective, tc.num_particles) == (f"iwae:k={k}", 1)
        assert build_objective(tc.objective).num_particles == k  # type: ignore[attr-defined]
    vae = VAE(dataclasses.replace(config.vae, data_shape=(1, 28, 28)))
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    trace = poutine.trace(vae.guide).get_trace(x)
    latents = {n: s["value"].shape for n, s in trace.nodes.items() if n.startswith("z")}
    if layers == "one-layer":
        assert latents == {"z": (3, 50)}
    else:
        assert latents == {"z1": (3, 100), "z2": (3, 50)}


def _linears(module: torch.nn.Module) -> list[tuple[int, int]]:
    return [
        (m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)
    ]


def test_two_layer_architecture_is_the_papers() -> None:
    config = load_toml(ROOT / "configs" / "iwae-two-layer-k5.toml")
    vae = VAE(dataclasses.replace(config.vae, data_shape=(1, 28, 28)))
    # q: x -> 200 -> 200 -> z1 (100: loc and scale) -> 100 -> 100 -> z2 (50: loc and scale)
    assert _linears(vae.guide) == [
        (784, 200),
        (200, 200),
        (200, 200),
        (100, 100),
        (100, 100),
        (100, 100),
    ]
    # p: z2 (50) -> 100 -> 100 -> z1 (loc and scale) ; z1 (100) -> 200 -> 200 -> x (784 logits)
    assert sorted(_linears(vae.model)) == sorted(
        [(100, 200), (200, 200), (200, 784), (50, 100), (100, 100), (100, 200)]
    )
    assert sum(isinstance(m, torch.nn.Tanh) for m in vae.modules()) == 8
    assert vae.model.prior().event_shape == (50,)


def test_one_layer_architecture_is_the_papers() -> None:
    config = load_toml(ROOT / "configs" / "vae-one-layer-k50.toml")
    vae = VAE(dataclasses.replace(config.vae, data_shape=(1, 28, 28)))
    assert _linears(vae.guide) == [(784, 200), (200, 200), (200, 100)]
    assert _linears(vae.model) == [(50, 200), (200, 200), (200, 784)]


def test_row_config_shortens_the_schedule() -> None:
    config = row_config("iwae-one-layer-k5", stage_scale=1 / 27)
    assert config.train.epochs == 124 and config.train.lr_stage_scale == 1 / 27
    assert row_config("iwae-one-layer-k5").train.epochs == 3280


# ------------------------------------------------------------------ the benchmark


def _trained(two_layer: bool) -> tuple[VAE, torch.Tensor]:
    pyro.set_rng_seed(0)
    upper = (3,) if two_layer else ()
    config = VAEConfig(data_shape=(1, 8, 8), latent_dim=4, hidden=(16,), upper_latent_dims=upper)
    vae = VAE(config)
    x = torch.bernoulli(load_dataset("digits").test[:200])
    return vae, x


def test_layer_active_units_agree_with_diagnostics_for_one_layer() -> None:
    vae, x = _trained(two_layer=False)
    counts, variances = layer_active_units(vae, x, draws=3, threshold=1e-4)
    reference = active_units(vae.guide, x, threshold=1e-4)
    assert counts == [reference.count]
    assert variances[0] == pytest.approx(reference.variances, rel=1e-9)


def test_layer_active_units_split_the_layers() -> None:
    vae, x = _trained(two_layer=True)
    pyro.set_rng_seed(1)
    counts, variances = layer_active_units(vae, x, draws=1, batch_size=x.shape[0], threshold=1e-4)
    pyro.set_rng_seed(1)
    reference = active_units(vae.guide, x, threshold=1e-4, batch_size=x.shape[0])
    assert [len(v) for v in variances] == [4, 3]
    assert variances[0] + variances[1] == pytest.approx(reference.variances, rel=1e-9)
    assert sum(counts) == reference.count
    # more draws of z1 average the noise of E[z2 | z1] out: the upper variances shrink
    _, averaged = layer_active_units(vae, x, draws=50, threshold=1e-4)
    assert sum(averaged[1]) < sum(variances[1])


def test_ordering_checks() -> None:
    def row(model: str, layers: str, nll: float) -> dict[str, object]:
        return {
            "row": f"{model}-{layers}-k5",
            "model": model,
            "layers": layers,
            "k": 5,
            "test_nll": nll,
            "test_nll_se": 0.1,
            "per_point_ll": None,
            "budget": {"eval_num_points": 10},
        }

    rows = [row("vae", "one-layer", 90.0), row("iwae", "one-layer", 89.0)]
    rows += [row("vae", "two-layer", 91.0), row("iwae", "two-layer", 88.0)]
    checks = {(c["better"], c["worse"]): c["holds"] for c in ordering(rows)}
    assert checks == {
        ("iwae-one-layer-k5", "vae-one-layer-k5"): True,
        ("iwae-two-layer-k5", "vae-two-layer-k5"): True,
        ("vae-two-layer-k5", "vae-one-layer-k5"): False,
        ("iwae-two-layer-k5", "iwae-one-layer-k5"): True,
    }


def test_ordering_larger_k_against_the_k1_vae() -> None:
    """IWAE at k = 1 is the VAE at k = 1: it stands in for the missing iwae k1 row."""

    def row(model: str, k: int, nll: float) -> dict[str, object]:
        return {
            "row": f"{model}-one-layer-k{k}",
            "model": model,
            "layers": "one-layer",
            "k": k,
            "test_nll": nll,
            "test_nll_se": 0.1,
            "per_point_ll": None,
            "budget": {"eval_num_points": 10},
        }

    rows = [row("vae", 1, 91.0), row("iwae", 5, 89.0), row("vae", 5, 91.5)]
    checks = {(c["claim"], c["better"], c["worse"]): c["holds"] for c in ordering(rows)}
    assert checks == {
        ("IWAE beats VAE", "iwae-one-layer-k5", "vae-one-layer-k5"): True,
        ("larger k beats smaller k", "vae-one-layer-k5", "vae-one-layer-k1"): False,
        ("larger k beats smaller k", "iwae-one-layer-k5", "vae-one-layer-k1"): True,
    }


def test_reproduce_iwae_smoke(tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    assert main(["--smoke", "--out", str(out), "vae-two-layer-k5", "iwae-two-layer-k5"]) == 0
    result = json.loads(out.read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"vae-two-layer-k5", "iwae-two-layer-k5"}
    for name, r in rows.items():
        assert r["paper_nll"] == PAPER_NLL[(r["model"], "two-layer")][1]
        assert math.isfinite(r["test_nll"]) and r["test_nll"] > 0
        assert r["active_units"] == "+".join(map(str, r["active_units_per_layer"]))
        assert len(r["active_units_per_layer"]) == 2 and r["budget"]["eval_num_points"] == 30
        assert r["smoke"] and "--smoke" in r["command"] and name in r["command"]
    assert len(result["ordering"]) == 1 and result["ordering"][0]["paired"]
    assert "| iwae-two-layer-k5 (smoke) |" in out.with_suffix(".md").read_text()


def test_reproduce_iwae_records_a_resumed_row(tmp_path: Path) -> None:
    """A row trained with --train-only, then continued and scored with --resume, says so
    (and after which epoch), with the batch size it ran at."""
    out, runs = tmp_path / "table.json", tmp_path / "runs"
    common = ["--smoke", "--out", str(out), "--runs-dir", str(runs), "--batch-size", "50"]
    assert main([*common, "--train-only", "--epochs", "1", "iwae-one-layer-k5"]) == 0
    assert not out.exists()  # trained, not scored
    assert main([*common, "--resume", "--epochs", "2", "iwae-one-layer-k5"]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["resumed"] and row["resumed_after_epochs"] == [1]
    assert row["budget"]["batch_size"] == 50 and row["budget"]["epochs"] == 2
    history = (runs / "iwae-one-layer-k5" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]
    assert "| yes, after epoch 1 |" in out.with_suffix(".md").read_text()


def test_learning_curve_slope_per_doubling() -> None:
    """On a curve that is exactly a + b log2(epoch) over the last stage the slope is b."""
    stages = [1, 1, 3, 8]
    elbos = [-200.0 + 3.0 * math.log2(e) for e in range(1, 14)]
    curve = learning_curve(elbos, stages)
    assert curve["last_stage_epochs"] == 8
    assert curve["last_stage_nats_per_doubling"] == pytest.approx(3.0, abs=1e-3)
    assert curve["stage_end_train_elbo"] == [round(elbos[i - 1], 3) for i in (1, 2, 5, 13)]
    assert curve["last_stage_gain"] == pytest.approx(elbos[-1] - elbos[5], abs=1e-3)
    flat = learning_curve([-100.0] * 13, stages)
    assert flat["last_stage_nats_per_doubling"] == 0.0
