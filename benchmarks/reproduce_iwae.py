r"""Reproduce Burda, Grosse & Salakhutdinov (2015), Table 1 (MNIST): test NLL and active units.

Run from the repository root, one or more rows by config name (``configs/NAME.toml``)::

    PYRO_VAE_DATA=/path/to/data python -m benchmarks.reproduce_iwae iwae-two-layer-k5
    python -m benchmarks.reproduce_iwae all                       # the 12 rows, full schedule
    python -m benchmarks.reproduce_iwae vae-one-layer-k5 iwae-one-layer-k5 \
        --stage-scale 0.0004 --train-points 5000 --eval-points 1000     # a CPU-sized record

Each row trains through :func:`pyro_vae.fit` (the code path of ``pyro-vae train --config
configs/NAME.toml``) with the paper's setup: dynamic binarization, the 60,000 MNIST training
images (``train_on = "train+valid"``), batch 20, Adam with beta = (0.9, 0.999) and eps =
1e-4, and the schedule of 3^i epochs at 1e-3 * 10^(-i/7), i = 0..7 (3280 epochs;
:mod:`pyro_vae.training.schedules`). ``--stage-scale s`` shortens it: stage i lasts ceil(s * 3^i)
epochs, at least one, so any s <= 1/2187 is 8 epochs, one per rate.

Then it scores the test set, binarized once with a fixed seed
(:func:`pyro_vae.training.fit.evaluation_split`):

- NLL: minus the mean IW bound :math:`\mathcal{L}_{5000}` (eq. 8 of the paper) over the test
  set, or over a seeded subset of ``--eval-points`` points, with its standard error over
  the points;
- active units (section 5.2): unit u is active when
  :math:`\mathrm{Cov}_x(\mathbb{E}_{u \sim q(u|x)}[u]) > 10^{-2}`, counted per stochastic
  layer ("16+5" for two layers). For the upper layer the expectation is over
  :math:`q(z_1|x)` too, by averaging :math:`\mathbb{E}[z_2|z_1]` over ``--au-draws`` draws of
  :math:`z_1`.

It prints our figures beside the paper's and writes ``--out`` (JSON) and a markdown table
beside it. Rows already in ``--out`` are kept (a row run again replaces its entry; the file is
read again before each write, so processes scoring different rows can share it), each
with its own budget, command and timings, so rows can be run one after another.
``--resume`` continues interrupted training runs in ``--runs-dir``. ``--smoke`` checks the
whole path in seconds on the small ``digits`` data set (no figure of it means anything).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import pyro.poutine as poutine
import torch

from benchmarks.quality import machine
from pyro_vae import VAE, Dataset, fit, load_dataset
from pyro_vae.cli.main import subset
from pyro_vae.config import RunConfig, load_toml
from pyro_vae.infer.importance import log_likelihood
from pyro_vae.structure import latent_site_names
from pyro_vae.training.fit import evaluation_split, mean_terms, training_split
from pyro_vae.training.schedules import burda_stage_epochs, schedule_epochs

__all__ = [
    "PAPER_ACTIVE_UNITS",
    "PAPER_NLL",
    "ROWS",
    "layer_active_units",
    "learning_curve",
    "main",
    "markdown",
    "ordering",
    "row_config",
]

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEFAULT_OUT = Path("benchmarks/results/iwae_table.json")
DEFAULT_RUNS = Path("runs/iwae-table")

# Burda et al. (2015), Table 1, MNIST with dynamic binarization, test NLL in nats (k = 1/5/50).
PAPER_NLL: dict[tuple[str, str], tuple[float, float, float]] = {
    ("vae", "one-layer"): (86.76, 86.47, 86.35),
    ("iwae", "one-layer"): (86.76, 85.54, 84.78),
    ("vae", "two-layer"): (85.33, 85.01, 84.78),
    ("iwae", "two-layer"): (85.33, 83.89, 82.90),
}
# Active units of the same table, as recalled from the paper (not re-checked against it).
PAPER_ACTIVE_UNITS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("vae", "one-layer"): ("19", "20", "20"),
    ("iwae", "one-layer"): ("19", "22", "25"),
    ("vae", "two-layer"): ("16+5", "17+5", "17+5"),
    ("iwae", "two-layer"): ("16+5", "21+5", "26+7"),
}
KS = (1, 5, 50)
ROWS = tuple(
    f"{model}-{layers}-k{k}" for model, layers in PAPER_NLL for k in KS
)  # the config names of Table 1
THRESHOLD = 1e-2  # the paper's activity threshold
EVAL_SEED = 0  # the test subset and the evaluation's noise
SMOKE_ROWS = ("vae-two-layer-k5", "iwae-one-layer-k5")


def _row_key(name: str) -> tuple[str, str, int]:
    """("iwae", "two-layer", 5) of the row name "iwae-two-layer-k5"."""
    model, rest = Path(name).stem.split("-", 1)
    layers, k = rest.rsplit("-k", 1)
    return model, layers, int(k)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.reproduce_iwae",
        description="Burda et al. (2015) Table 1 (MNIST): our test NLL and active units "
        "beside the paper's.",
    )
    p.add_argument(
        "rows", nargs="*", help=f"config names in configs/ (or 'all'): {', '.join(ROWS)}"
    )
    p.add_argument(
        "--stage-scale",
        type=float,
        default=None,
        help="shorten the schedule: stage i lasts ceil(S * 3**i) epochs (default: the "
        "config's, 1 = the paper's 3280 epochs)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="stop after N epochs (default: the schedule's)"
    )
    p.add_argument(
        "--train-points",
        type=int,
        default=None,
        help="train on a seeded subset of N of the training images (default: all)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="minibatch size (default: the config's, the paper's 20)",
    )
    p.add_argument("--eval-samples", type=int, default=5000, help="k of the IW bound")
    p.add_argument(
        "--eval-points",
        type=int,
        default=None,
        help="score a seeded subset of N test points (default: the whole test set)",
    )
    p.add_argument("--au-draws", type=int, default=100, help="draws of z1 for E_q[z2] (AU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="training runs go here (default: runs/iwae-table; with --smoke a temporary one)",
    )
    p.add_argument("--resume", action="store_true", help="continue runs in --runs-dir")
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train (or continue) the rows and stop; a later run with --resume scores them",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (rows are merged); the markdown table goes beside it as .md "
        "(default: benchmarks/results/iwae_table.json; with --smoke a temporary file)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: 1 epoch on 200 digits images, k=20 on 30 test points, into a temporary "
        "runs dir (checks the path, measures nothing)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.rows = args.rows or list(SMOKE_ROWS)
        args.stage_scale, args.epochs = 1e-6, args.epochs or 1
        args.train_points = args.train_points or 200
        args.eval_samples, args.eval_points, args.au_draws = 20, 30, 5
    if args.rows == ["all"]:
        args.rows = list(ROWS)
    if not args.rows:
        p.error("name at least one row (a config in configs/) or 'all'")
    for name, value in (
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--train-points", args.train_points),
        ("--eval-points", args.eval_points),
    ):
        if value is not None and value < 1:
            p.error(f"{name} must be a positive int, got {value}")
    if args.eval_samples < 1 or args.au_draws < 1:
        p.error("--eval-samples and --au-draws must be positive")
    if args.stage_scale is not None and not 0 < args.stage_scale < math.inf:
        p.error(f"--stage-scale must be a positive number, got {args.stage_scale}")
    return args


def row_config(
    name: str,
    *,
    stage_scale: float | None = None,
    epochs: int | None = None,
    out: Path | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> RunConfig:
    """The row's TOML config with the schedule shortened and the run directory set.

    The epochs are the (shortened) schedule's unless ``epochs`` is given; the IW NLL of
    ``fit``'s own summary is switched off (this script scores the test set itself).
    """
    path = Path(name) if name.endswith(".toml") else CONFIGS / f"{name}.toml"
    config = load_toml(path)
    tc = config.train
    scale = tc.lr_stage_scale if stage_scale is None else stage_scale
    total = schedule_epochs(tc.lr_schedule, scale)
    changes: dict[str, Any] = {
        "lr_stage_scale": scale,
        "epochs": epochs or total or tc.epochs,
        "eval_num_points": 0,
    }
    if out is not None:
        changes["out"] = str(out)
    if device is not None:
        changes["device"] = device
    if batch_size is not None:
        changes["batch_size"] = batch_size
    return dataclasses.replace(config, train=dataclasses.replace(tc, **changes))


def _dataset(config: RunConfig, train_points: int | None, smoke: bool) -> tuple[Dataset, str]:
    """The data set and a description of the rows trained on."""
    ds = load_dataset("digits" if smoke else config.train.dataset, progress=False)
    rows = training_split(ds, config.train.train_on)
    what = f"{config.train.train_on} of {ds.name} ({rows.shape[0]} images)"
    if train_points is None or train_points >= rows.shape[0]:
        return ds, what
    idx = subset(rows.shape[0], train_points, config.train.seed)
    # the subset is the train split and train_on is set to "train" by the caller
    sub = Dataset(ds.name, rows[idx], ds.valid, ds.test)
    return sub, f"a seeded subset of {train_points} of the {what}"


@torch.no_grad()
def layer_active_units(
    vae: VAE, x: torch.Tensor, draws: int = 100, batch_size: int = 100, threshold: float = 1e-2
) -> tuple[list[int], list[list[float]]]:
    r"""Active units per stochastic layer (bottom up) and the variances they come from.

    .. math::

        A_u = \mathrm{Cov}_x\big(\mathbb{E}_{u \sim q(u|x)}[u]\big) > \text{threshold}

    (Burda et al. 2015, eq. 19). For the bottom layer :math:`\mathbb{E}_q[z_1]` is the
    guide's mean; for a layer above it is :math:`\mathbb{E}_{q(z_1|x)} \mathbb{E}[z_2|z_1]`,
    averaged over ``draws`` draws of the layers below. The guide families must have a
    closed-form ``mean`` (normal, lowrank, full).
    """
    if vae.model.num_classes:
        raise ValueError("layer_active_units: a conditional VAE is not supported")
    names = latent_site_names(1 + len(vae.config.upper_latent_dims))
    dims = (vae.config.latent_dim, *vae.config.upper_latent_dims)
    draws = draws if len(dims) > 1 else 1  # E_q[z] of one layer is the guide's mean: no draws
    means = []
    for xb in x.split(batch_size):
        b = xb.shape[0]
        reps = xb.repeat(draws, *([1] * (xb.dim() - 1)))  # (draws * B, ...)
        trace = poutine.trace(vae.guide).get_trace(reps)
        parts = []
        for name, dim in zip(names, dims, strict=True):
            fn: Any = trace.nodes[name]["fn"]  # the guide's distribution at the site
            mean = fn.mean.reshape(draws, b, dim)  # (draws, B, dim)
            parts.append(mean.double().mean(0))  # (B, dim)
        means.append(torch.cat(parts, dim=1))
    variances = torch.cat(means).var(0, correction=1)  # (units,)
    per_layer = list(variances.split(list(dims)))
    counts = [int((v > threshold).sum()) for v in per_layer]
    return counts, [v.tolist() for v in per_layer]


def run_row(name: str, args: argparse.Namespace, runs_dir: Path) -> dict[str, Any] | None:
    """Train and score one row; the result record of :func:`main`'s JSON."""
    model, layers, k = _row_key(name)
    config = row_config(
        name,
        stage_scale=args.stage_scale,
        epochs=args.epochs,
        out=runs_dir / name,
        device=args.device,
        batch_size=args.batch_size,
    )
    dataset, trained_on = _dataset(config, args.train_points, args.smoke)
    if args.train_points is not None or args.smoke:
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, train_on="train", dataset=dataset.name)
        )
    # a row is "resumed" when its run directory already held a checkpoint to continue from
    checkpoint = Path(config.train.out) / "checkpoint.safetensors"
    done_before = _epochs_done(Path(config.train.out)) if checkpoint.is_file() else 0
    starts = _log_session(runs_dir / f"{name}.sessions.jsonl", done_before, args)
    resumed_at = [e for e in starts if 0 < e < config.train.epochs]  # training continued
    wall = time.perf_counter()
    # --resume continues a row that has a checkpoint and starts one that has none
    resume = bool(args.resume) and checkpoint.is_file()
    result = fit(config, dataset=dataset, resume=resume, progress=not args.smoke)
    train_seconds = time.perf_counter() - wall
    if args.train_only:
        return None
    vae, device = result.vae.eval(), next(result.vae.parameters()).device
    start = time.perf_counter()
    test_x = evaluation_split(dataset, "test", config.train.binarize).to(device)
    n = test_x.shape[0] if args.eval_points is None else min(args.eval_points, test_x.shape[0])
    idx = subset(test_x.shape[0], n, EVAL_SEED).to(device)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        pyro.set_rng_seed(EVAL_SEED)
        terms = mean_terms(vae, test_x)
        ll = log_likelihood(
            vae.model,
            vae.guide,
            test_x[idx],
            num_samples=args.eval_samples,
            progress=not args.smoke,
        ).double()  # (n,)
        counts, variances = layer_active_units(vae, test_x, draws=args.au_draws)
    eval_seconds = time.perf_counter() - start
    paper_i = KS.index(k) if k in KS else None
    return {
        "row": name,
        "model": model,
        "layers": layers,
        "k": k,
        "objective": config.train.objective,
        "num_particles": config.train.num_particles,
        "test_nll": -float(ll.mean()),
        "test_nll_se": float(ll.std() / math.sqrt(n)) if n > 1 else math.nan,
        "test_elbo": terms["elbo"],
        "paper_nll": None if paper_i is None else PAPER_NLL[(model, layers)][paper_i],
        "active_units": "+".join(map(str, counts)),
        "active_units_per_layer": counts,
        "paper_active_units": None
        if paper_i is None
        else PAPER_ACTIVE_UNITS[(model, layers)][paper_i],
        "budget": {
            "epochs": config.train.epochs,
            "lr_schedule": config.train.lr_schedule,
            "lr_stage_scale": config.train.lr_stage_scale,
            "stage_epochs": burda_stage_epochs(config.train.lr_stage_scale)
            if config.train.lr_schedule == "burda"
            else None,
            "steps": result.history[-1]["step"] if result.history else 0,
            "trained_on": trained_on,
            "batch_size": config.train.batch_size,
            "eval_num_samples": args.eval_samples,
            "eval_num_points": n,
            "au_draws": args.au_draws,
        },
        "final_train_elbo": result.history[-1]["train_elbo"] if result.history else None,
        "learning_curve": learning_curve(
            [h["train_elbo"] for h in result.history],
            burda_stage_epochs(config.train.lr_stage_scale)
            if config.train.lr_schedule == "burda"
            else None,
        ),
        "resumed": bool(resumed_at),
        "resumed_after_epochs": resumed_at,
        "train_seconds_total": round(_train_seconds(Path(config.train.out)), 1),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "wall_seconds": round(train_seconds + eval_seconds, 1),
        "device": str(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": _command(args.argv),
        "sessions": _sessions(runs_dir / f"{name}.sessions.jsonl"),
        "smoke": bool(args.smoke),
        "per_point_ll": [round(v, 4) for v in ll.tolist()],  # pairs rows point by point
        "eval_points_seed": EVAL_SEED,
        "active_unit_variances": [[round(v, 5) for v in layer] for layer in variances],
    }


def learning_curve(elbos: Sequence[float], stage_epochs: Sequence[int] | None) -> dict[str, Any]:
    r"""What the training curve says about a longer run.

    ``elbos`` are the per-epoch training ELBOs (the running mean over each epoch, nats).
    Returned: the ELBO at the end of each stage of the schedule, and the slope of a
    least-squares line of the ELBO against :math:`\log_2` of the epoch over the last stage
    (nats per doubling of the epochs, at that stage's learning rate), with the gain over
    that stage. A slope near zero says the schedule's last rate has converged; a positive
    one estimates what more epochs at that rate would add to the training ELBO.
    """
    if not elbos:
        return {}
    ends = list(itertools.accumulate(stage_epochs or [len(elbos)]))
    out: dict[str, Any] = {
        "stage_end_train_elbo": [round(elbos[min(e, len(elbos)) - 1], 3) for e in ends]
    }
    first = ends[-2] if len(ends) > 1 else 0  # the last stage's epochs: first+1 .. end
    tail = torch.tensor(elbos[first:], dtype=torch.float64)
    if tail.numel() >= 3:
        t = torch.log2(torch.arange(first + 1, first + 1 + tail.numel(), dtype=torch.float64))
        t = t - t.mean()
        slope = float((t * (tail - tail.mean())).sum() / (t * t).sum())
        out["last_stage_epochs"] = int(tail.numel())
        out["last_stage_nats_per_doubling"] = round(slope, 3)
        out["last_stage_gain"] = round(float(tail[-1] - tail[0]), 3)
    return out


def _log_session(path: Path, start_epoch: int, args: argparse.Namespace) -> list[int]:
    """Append this session's starting epoch to the row's session log (beside its run
    directory, which takes no foreign files); every session's starting epoch so far."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"start_epoch": start_epoch, "command": _command(args.argv)}
    entry["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    return [json.loads(line)["start_epoch"] for line in path.read_text().splitlines() if line]


def _sessions(path: Path) -> list[dict[str, Any]]:
    """The row's session log: each session's command, date and starting epoch."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _epochs_done(run_dir: Path) -> int:
    """Epochs already in a run directory's ``metrics.jsonl`` (0 when there is none)."""
    path = run_dir / "metrics.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


def _train_seconds(run_dir: Path) -> float:
    """Training wall time summed over all sessions of a run, from ``timing.jsonl``'s
    per-epoch ``seconds`` (so a resumed row reports its whole cost)."""
    path = run_dir / "timing.jsonl"
    if not path.exists():
        return math.nan
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return float(sum(r["seconds"] for r in records))


def _command(argv: Sequence[str]) -> str:
    data = os.environ.get("PYRO_VAE_DATA")
    prefix = f"PYRO_VAE_DATA={shlex.quote(data)} " if data else ""
    return f"{prefix}python -m benchmarks.reproduce_iwae {shlex.join(argv)}".rstrip()


def _difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, bool]:
    """NLL(a) - NLL(b) and its standard error: paired over points where both were scored."""
    diff = a["test_nll"] - b["test_nll"]
    pa, pb = a.get("per_point_ll"), b.get("per_point_ll")
    same = a["budget"]["eval_num_points"] == b["budget"]["eval_num_points"]
    if pa and pb and same and len(pa) == len(pb) > 1:
        d = torch.tensor(pb, dtype=torch.float64) - torch.tensor(pa, dtype=torch.float64)
        return diff, float(d.std() / math.sqrt(d.numel())), True
    return diff, math.hypot(a["test_nll_se"], b["test_nll_se"]), False


def ordering(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's ordering, checked on the rows present: IWAE < VAE (NLL) for k > 1, two
    layers < one layer, and a larger k < a smaller one for the same model (IWAE at k = 1
    is the VAE at k = 1, and stands in for it); each with the difference and its standard
    error."""
    by = {(r["model"], r["layers"], r["k"]): r for r in rows}
    checks = []
    pairs = []
    for layers in ("one-layer", "two-layer"):
        for k in sorted({r["k"] for r in rows if r["k"] > 1}):
            pairs.append((("iwae", layers, k), ("vae", layers, k), "IWAE beats VAE"))
    for model in ("vae", "iwae"):
        for k in sorted({r["k"] for r in rows}):
            pairs.append(((model, "two-layer", k), (model, "one-layer", k), "two layers beat one"))
    ks = sorted({r["k"] for r in rows})
    for model in ("vae", "iwae"):
        for layers in ("one-layer", "two-layer"):
            for small, big in itertools.combinations(ks, 2):
                worse = (model, layers, small)
                if small == 1 and worse not in by:  # IWAE with k = 1 is the VAE with k = 1
                    worse = ("vae", layers, 1)
                pairs.append(((model, layers, big), worse, "larger k beats smaller k"))
    for better, worse, claim in pairs:
        if better in by and worse in by:
            diff, se, paired = _difference(by[better], by[worse])
            checks.append(
                {
                    "claim": claim,
                    "better": by[better]["row"],
                    "worse": by[worse]["row"],
                    "nll_difference": diff,
                    "se": se,
                    "paired": paired,
                    "holds": diff < 0,
                }
            )
    return checks


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table with the paper's figures beside ours."""
    m = result["machine"]
    lines = [
        "# Burda et al. (2015), Table 1 (MNIST): reproduction",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, pyro {m['pyro']}, "
        f"pyro-vae {m['pyro_vae']} (commit {m['git_commit']}), Python {m['python']}.",
        "",
        "NLL = minus the mean IW bound (k = eval k) on the test set binarized once; "
        "± one standard error over the test points. Paper's active units are recalled "
        "from the paper, not re-checked.",
        "",
        "| row | NLL (ours) | NLL (paper) | gap (nats) | AU (ours) | AU (paper) | "
        "epochs (stages) | batch | trained on | eval k / points | train min | eval s | "
        "resumed | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        b = r["budget"]
        stages = "+".join(map(str, b["stage_epochs"])) if b["stage_epochs"] else "constant"
        gap = "" if r["paper_nll"] is None else f"{r['test_nll'] - r['paper_nll']:+.2f}"
        train_s = r.get("train_seconds_total", r["train_seconds"])
        after = ", ".join(map(str, r.get("resumed_after_epochs", [])))
        resumed = f"yes, after epoch {after}" if r.get("resumed") else "no"
        lines.append(
            f"| {r['row']}{' (smoke)' if r['smoke'] else ''} | {r['test_nll']:.2f} ± "
            f"{r['test_nll_se']:.2f} | {r['paper_nll']} | {gap} | {r['active_units']} | "
            f"{r['paper_active_units']} | {b['epochs']} ({stages}) | {b['batch_size']} | "
            f"{b['trained_on']} | {b['eval_num_samples']} / {b['eval_num_points']} | "
            f"{train_s / 60:.1f} | {r['eval_seconds']} | {resumed} | {r['date'][:10]} |"
        )
    curves = [(r["row"], r.get("learning_curve") or {}) for r in result["rows"]]
    if any("last_stage_nats_per_doubling" in c for _, c in curves):
        lines += ["", "Learning curves (training ELBO, the running mean over an epoch, nats):", ""]
        for name, c in curves:
            if "last_stage_nats_per_doubling" in c:
                ends = ", ".join(f"{v:.2f}" for v in c["stage_end_train_elbo"])
                lines.append(
                    f"- {name}: at the stages' ends {ends}; over the last stage "
                    f"({c['last_stage_epochs']} epochs) {c['last_stage_gain']:+.2f} nats, "
                    f"{c['last_stage_nats_per_doubling']:+.2f} nats per doubling of the epochs"
                )
    lines += ["", "Commands:", ""]
    for r in result["rows"]:  # every session of every row: training, resumed, scored
        for session in r.get("sessions") or [{"command": r["command"]}]:
            start = session.get("start_epoch")
            when = "" if start is None else f"  # {session['date'][:16]}, from epoch {start}"
            lines.append(f"    {session['command']}{when}")
    checks = result["ordering"]
    if checks:
        lines += ["", "The paper's ordering on these rows (NLL difference, better − worse):", ""]
        for c in checks:
            kind = "paired over the same test points" if c["paired"] else "unpaired"
            lines.append(
                f"- {c['claim']}: {c['better']} − {c['worse']} = {c['nll_difference']:+.2f} ± "
                f"{c['se']:.2f} nats ({kind}): {'holds' if c['holds'] else 'does NOT hold'}"
            )
    return "\n".join(lines) + "\n"


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir or (Path(tmp) if args.smoke else DEFAULT_RUNS)
        if args.out is None:
            args.out = Path(tmp) / "iwae_table.json" if args.smoke else DEFAULT_OUT
        rows = _load(args.out)
        for name in args.rows:
            record = run_row(name, args, runs_dir)
            if record is None:  # --train-only
                print(f"{name}: trained; score it with --resume", flush=True)
                continue
            # read again: another process may have scored other rows into --out meanwhile
            rows = [r for r in _load(args.out) if r["row"] != name] + [record]
            rows.sort(key=lambda r: ROWS.index(r["row"]) if r["row"] in ROWS else len(ROWS))
            result = {"machine": machine(), "rows": rows, "ordering": ordering(rows)}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
            args.out.with_suffix(".md").write_text(markdown(result))
            print(
                f"{name}: NLL {record['test_nll']:.2f} ± {record['test_nll_se']:.2f} (paper "
                f"{record['paper_nll']}), active units {record['active_units']} (paper "
                f"{record['paper_active_units']}), {record['wall_seconds']} s",
                flush=True,
            )
    for c in ordering(rows):
        print(
            f"{c['claim']}: {c['better']} - {c['worse']} = {c['nll_difference']:+.2f} ± "
            f"{c['se']:.2f}: {'holds' if c['holds'] else 'does NOT hold'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
