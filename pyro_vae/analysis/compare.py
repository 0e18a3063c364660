r"""Compare training objectives on equal terms: same model, data, budget and seeds.

:func:`compare` trains one run per (objective, seed) with :func:`pyro_vae.fit`, each in its
own run directory ``OUT/<objective>/seed<S>``, and scores every run the same way: the test
ELBO, reconstruction and KL over the whole test split, the importance-weighted NLL with
``eval_num_samples`` draws on ``eval_num_points`` test points (the training config's
settings, the same for every run; at most the whole test split, and compare.json's
``nll_num_points`` is the number the runs used), active units on the test split (with
its labels for a conditional VAE), and the mean seconds
per training epoch. Everything reported is the true ELBO (or IW bound), whatever objective
trained the model.

For each objective and metric the table gives the mean over seeds and a 95% t-interval,
:math:`\bar m \pm t_{0.975,\,n-1}\, s / \sqrt n` with the sample standard deviation s
over the n seeds (no interval for a single seed). The seeds fix the initial weights, the
data order and the noise, and run i of every objective uses the same seed.

It is resumable: a run with ``summary.json`` is finished and only read back; a run with
a checkpoint is continued with ``fit(resume=True)``; the others start. Interrupt it and
run the same command again. While it runs it holds the lock of ``out``
(:func:`~pyro_vae.training.lock.run_lock`), so a second compare into the same folder is
refused at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyro_vae.analysis.figures import plot_comparison
from pyro_vae.analysis.latent import active_units
from pyro_vae.analysis.rate_distortion import plot_rate_distortion, rate_distortion_points
from pyro_vae.config import RunConfig, to_dict
from pyro_vae.data import Dataset, evaluation_split, load_dataset
from pyro_vae.infer.objectives import build_objective
from pyro_vae.training.checkpoint import atomic_write, load, write_json
from pyro_vae.training.fit import fit, resolve_device, split_labels
from pyro_vae.training.lock import run_lock

__all__ = ["METRICS", "compare", "markdown_table", "run_dir_name", "split_specs", "t_interval"]

# key, column title, decimals
METRICS = (
    ("test_elbo", "test ELBO", 2),
    ("test_nll", "test IW NLL", 2),
    ("test_kl", "test KL", 2),
    ("active_units", "active units", 1),
    ("seconds_per_epoch", "s / epoch", 2),
)


def split_specs(text: str) -> list[str]:
    """Split ``"elbo,iwae:k=5,renyi:alpha=0.5,k=5"`` into specs.

    A comma-separated piece that is ``key=value`` (no ``:`` before its ``=``) continues the
    spec before it, so specs with several parameters need no quoting.
    """
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        head = piece.split("=", 1)[0]
        if "=" in piece and ":" not in head and specs:
            specs[-1] += "," + piece
        elif piece:
            specs.append(piece)
    return specs


def run_dir_name(objective: str) -> str:
    """A folder name for an objective spec: ``iwae:k=5`` -> ``iwae_k=5``."""
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", objective.strip())


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    r"""Mean and two-sided t-interval :math:`\bar m \pm t_{(1+level)/2,\,n-1}\,s/\sqrt n`."""
    from scipy.stats import t  # scipy comes with scikit-learn and arviz

    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        raise ValueError("values must hold at least one number")
    mean = sum(v) / n
    if n == 1:
        return {"mean": mean, "low": math.nan, "high": math.nan, "values": v}
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = float(t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "values": v}


def _seconds_per_epoch(run_dir: Path) -> float:
    lines = (run_dir / "timing.jsonl").read_text().splitlines()
    seconds = [json.loads(line)["seconds"] for line in lines if line.strip()]
    return sum(seconds) / len(seconds)


def _score(run_dir: Path, dataset: Dataset, config: RunConfig) -> dict[str, Any]:
    """The metrics of a finished run, cached in ``compare_metrics.json``."""
    cache = run_dir / "compare_metrics.json"
    if cache.is_file():  # JSON holds no NaN: a figure that was not finite reads back as null
        saved = json.loads(cache.read_text())
        return {k: math.nan if v is None and k.startswith("test_") else v for k, v in saved.items()}
    summary = json.loads((run_dir / "summary.json").read_text())
    device = resolve_device(config.train.device)
    vae = load(run_dir, map_location=device)
    test_x = evaluation_split(dataset, "test", config.train.binarize).to(device)
    test_y = split_labels(vae, dataset, "test")
    labels = () if test_y is None else (test_y.to(device),)
    metrics = {
        "test_elbo": summary["test_elbo"],
        "test_reconstruction": summary["test_reconstruction"],
        "test_kl": summary["test_kl"],
        "test_nll": summary.get("test_nll", math.nan),
        "nll_num_samples": summary.get("nll_num_samples"),
        "nll_num_points": summary.get("nll_num_points"),
        "active_units": active_units(vae.guide, test_x, *labels).count,
        "seconds_per_epoch": _seconds_per_epoch(run_dir),
    }
    write_json(cache, metrics)
    return metrics


def _check_same_config(run_dir: Path, config: RunConfig) -> None:
    """Refuse to reuse a run directory made with other settings (epochs, lr, model, ...)."""
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    wanted = to_dict(config)
    ignore = {"out", "device", "data_shape"}  # set per run / per machine / from the data
    diff = [
        f"{section}.{key}: {saved.get(section, {}).get(key)!r} != {value!r}"
        for section in ("vae", "train")
        for key, value in wanted[section].items()
        if key not in ignore and saved.get(section, {}).get(key) != value
    ]
    if diff:
        raise ValueError(
            f"{str(run_dir)!r} holds a run made with other settings ({'; '.join(diff)}). Use "
            "the same settings to continue the comparison, or another out directory for a "
            "new one."
        )


def _train(config: RunConfig, dataset: Dataset, progress: bool) -> str:
    run_dir = Path(config.train.out)
    if (run_dir / "config.json").is_file():
        _check_same_config(run_dir, config)
    if (run_dir / "summary.json").is_file():
        return "done"
    # a run killed after its epoch-0 checkpoint but before its config.json is not a run yet:
    # it starts afresh (fit accepts that folder), since there is nothing to resume from
    resume = (run_dir / "checkpoint.safetensors").is_file() and (run_dir / "config.json").is_file()
    fit(config, dataset=dataset, resume=resume, progress=progress)
    return "resumed" if resume else "trained"


def compare(
    objectives: Sequence[str],
    seeds: Sequence[int],
    config: RunConfig,
    out: str | Path,
    *,
    dataset: Dataset | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and score every (objective, seed); write compare.json, compare.md, compare.png.

    ``config`` is the shared model and training configuration; its ``objective``, ``seed``
    and ``out`` are replaced per run. Returns what compare.json holds: ``rows`` (one per
    objective, each metric as ``{"mean", "low", "high", "values"}``), ``runs`` (one per
    run) and the settings. When two or more objectives are β-ELBOs (``beta:beta=B``;
    ``elbo`` is β = 1) it also draws ``rate_distortion.png`` and puts its points in
    compare.json's ``rate_distortion`` (:mod:`pyro_vae.analysis.rate_distortion`).
    """
    objectives = [o.strip() for o in objectives]
    if not objectives or len(set(objectives)) != len(objectives) or not all(objectives):
        raise ValueError(f"objectives must be distinct non-empty specs, got {objectives}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    for spec in objectives:
        build_objective(spec)  # every spec is checked before any training
    with run_lock(out):  # one compare per folder at a time (each run has its own lock too)
        return _compare(objectives, seeds, config, Path(out), dataset, progress, log)


def _compare(
    objectives: Sequence[str],
    seeds: Sequence[int],
    config: RunConfig,
    out: Path,
    dataset: Dataset | None,
    progress: bool,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    dataset = dataset or load_dataset(
        config.train.dataset, progress=progress, schema=config.train.schema
    )
    runs = []
    for spec in objectives:
        for seed in seeds:
            run_dir = out / run_dir_name(spec) / f"seed{seed}"
            train = dataclasses.replace(config.train, objective=spec, seed=seed, out=str(run_dir))
            run_config = dataclasses.replace(config, train=train)
            status = _train(run_config, dataset, progress)
            if log is not None:
                log(f"{spec} seed {seed}: {status} ({run_dir})")
            metrics = _score(run_dir, dataset, run_config)
            runs.append({"objective": spec, "seed": seed, "run_dir": str(run_dir), **metrics})
    rows = [
        {
            "objective": spec,
            **{
                key: t_interval([r[key] for r in runs if r["objective"] == spec])
                for key, _, _ in METRICS
            },
        }
        for spec in objectives
    ]
    result = {
        "objectives": objectives,
        "seeds": list(seeds),
        "interval": "95% t-interval over seeds: mean +- t(0.975, n-1) * sd / sqrt(n)",
        # what the runs did: eval_num_points is capped by the test split (digits: 300)
        "nll_num_samples": _runs_setting(runs, "nll_num_samples"),
        "nll_num_points": _runs_setting(runs, "nll_num_points"),
        "config": to_dict(config),
        "rows": rows,
        "runs": runs,
    }
    curve = rate_distortion_points(runs)  # the beta sweep's lossy view, if there is one
    if len(curve) >= 2:
        result["rate_distortion"] = curve
    write_json(out / "compare.json", result)
    table = markdown_table(result).encode("utf-8")
    atomic_write(out / "compare.md", lambda f: f.write(table), nbytes=len(table))
    plot_comparison(rows, out / "compare.png")
    if len(curve) >= 2:
        plot_rate_distortion(curve, out / "rate_distortion.png")
    return result


def _runs_setting(runs: list[dict[str, Any]], key: str) -> Any:
    """The runs' common value of ``key`` (a sorted list if they differ; None if none has it)."""
    values = sorted({r[key] for r in runs if r.get(key) is not None})
    return values[0] if len(values) == 1 else (values or None)


def markdown_table(result: dict[str, Any]) -> str:
    """compare.md: one row per objective, each metric as mean [95% interval]."""
    k = result["nll_num_samples"]
    titles = [t if key != "test_nll" else f"{t} (k={k})" for key, t, _ in METRICS]
    lines = [
        "| objective | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for row in result["rows"]:
        cells = [_cell(row[key], digits) for key, _, digits in METRICS]
        lines.append(f"| `{row['objective']}` | " + " | ".join(cells) + " |")
    seeds = result["seeds"]
    lines += [
        "",
        f"Mean over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}) with a 95% t-interval "
        "in brackets. Nats per test point; ELBO and KL over the whole test split, IW NLL with "
        f"k={k} on {result['nll_num_points']} test points; active units: "
        "Cov_x E_q[z_j] > 0.01 on the test split.",
    ]
    return "\n".join(lines) + "\n"


def _cell(stat: dict[str, Any], digits: int) -> str:
    mean, low, high = stat["mean"], stat["low"], stat["high"]
    if not math.isfinite(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
