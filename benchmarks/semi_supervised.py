"""Benchmark: the semi-supervised VAE M2 on MNIST, 100 and 3000 labels, and the ceiling.

Trains M2 (Kingma, Rezende, Mohamed & Welling 2014; ``TrainConfig.labelled``, the class
summed out by ``TraceEnum_ELBO``) on MNIST with N labels kept (balanced, chosen by the
seed) for several seeds, and the conditional VAE (``TrainConfig(labelled='all')``) for the
same number of epochs as the fully supervised ceiling. It records the test accuracy of
q(y|x) and the IW NLL :math:`-\\log p(x)`, with y summed out exactly, against the paper's
Table 1 (M2 alone; test error 11.97% ± 1.71 with 100 labels, 4.94% with 600, 3.60% with
1000, 3.92% with 3000).

The conditional VAE has no classifier; its accuracy is that of the generative classifier
:math:`\\arg\\max_y p(x|y)` (uniform p(y)), and its NLL :math:`-\\log \\frac1C \\sum_y
p(x|y)`, each :math:`p(x|y)` by importance sampling, on the same IW subset.

    PYRO_VAE_DATA=/work/shared/data python -m benchmarks.semi_supervised --budget-minutes 60

writes every run directory under ``--out`` and the table ``--results``.{json,md}. It is
resumable: a run stopped by the budget wrote a checkpoint of its exact state (as Ctrl-C
does), and the next invocation continues it (``fit(resume_config(dir), resume=True)``);
finished runs are read back. ``--first-seed S --seeds 1`` runs seed S alone, so that seeds
can train side by side in separate processes (each with its own ``--results``); one more
invocation with ``--seeds N`` then reads them all back into one table. To train finished
runs further, copy their directories to a new ``--out`` without ``summary.json`` and give a
larger ``--epochs``: each continues from its checkpoint. ``--smoke`` runs the whole path
on the embedded digits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from pyro_vae import Dataset, RunConfig, TrainConfig, VAEConfig, fit, load_dataset
from pyro_vae.data import evaluation_split
from pyro_vae.infer.importance import log_likelihood
from pyro_vae.training.errors import TrainingInterrupted
from pyro_vae.training.rundir import resume_config

HERE = Path(__file__).resolve().parent
PAPER_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}  # Kingma et al. 2014, Table 1


def main() -> None:
    args = _parser().parse_args()
    if args.smoke:
        args.dataset, args.labels, args.seeds = "digits", "20", 1
        args.hidden, args.latent_dim, args.iw_samples, args.iw_points = "16", 2, 5, 20
    if args.epochs is None:  # a given --epochs holds in --smoke too (a run trained on)
        args.epochs = 1 if args.smoke else 50
    data = _data(args)
    deadline = time.monotonic() + 60 * args.budget_minutes
    start = time.perf_counter()
    rows = []
    settings: list[int | str] = [int(n) for n in args.labels.split(",")]
    settings += [] if args.no_ceiling else ["all"]
    for labelled in settings:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows.append(_run(args, data, labelled, seed, deadline))
    summary = _summary(args, rows, time.perf_counter() - start)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    results.with_suffix(".md").write_text(_markdown(summary))
    print(_markdown(summary))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.semi_supervised", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--labels", default="100,3000", help="numbers of labelled points")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run: first, first+1, ... (0)")
    p.add_argument("--epochs", type=int, default=None, help="50 (1 with --smoke)")
    p.add_argument("--hidden", default="500", help="hidden widths, e.g. 500 (the paper's)")
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--activation", default="softplus")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--train-points", type=int, default=None, help="a seeded subset (all)")
    p.add_argument("--iw-samples", type=int, default=1000)
    p.add_argument("--iw-points", type=int, default=1000)
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of the labelled points' log q(y|x), summed over them (TrainConfig.alpha); "
        "default Kingma et al.'s 0.1 N",
    )
    p.add_argument("--no-ceiling", action="store_true", help="skip the --labelled all row")
    p.add_argument("--budget-minutes", type=float, default=math.inf)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (TrainConfig.device)")
    p.add_argument("--out", type=Path, default=Path("runs/semi_supervised"))
    p.add_argument("--results", default=str(HERE / "results" / "semi_supervised"))
    p.add_argument("--smoke", action="store_true", help="the embedded digits, a tiny net")
    return p


def _data(args: argparse.Namespace) -> Dataset:
    full = load_dataset(args.dataset, progress=False)
    if args.train_points is None or args.train_points >= full.train.shape[0]:
        return full
    idx = torch.randperm(full.train.shape[0], generator=torch.Generator().manual_seed(0))
    idx = idx[: args.train_points]
    assert full.train_labels is not None
    return Dataset(
        f"{full.name} (train: {args.train_points} of {full.train.shape[0]})",
        full.train[idx],
        full.valid,
        full.test,
        full.train_labels[idx],
        full.valid_labels,
        full.test_labels,
        full.num_classes,
    )


def _config(args: argparse.Namespace, labelled: int | str, seed: int, out: Path) -> RunConfig:
    hidden = tuple(int(h) for h in args.hidden.split(","))
    return RunConfig(
        VAEConfig(latent_dim=args.latent_dim, hidden=hidden, activation=args.activation),
        TrainConfig(
            dataset=args.dataset,
            labelled=labelled,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            device=args.device,
            out=str(out),
            eval_num_samples=args.iw_samples,
            eval_num_points=args.iw_points,
            alpha=_alpha(args, labelled),
        ),
    )


def _alpha(args: argparse.Namespace, labelled: int | str) -> float | None:
    """``--alpha`` for an M2 run; None (the paper's 0.1 N) when not given, and for the
    ceiling, which has no classifier."""
    return None if labelled == "all" else args.alpha


def _run(
    args: argparse.Namespace, data: Dataset, labelled: int | str, seed: int, deadline: float
) -> dict[str, Any]:
    """Train (or continue, or read back) one run; its row of the table."""
    alpha = _alpha(args, labelled)
    tag = "" if alpha is None else f"-alpha-{alpha:g}"
    out = args.out / f"labelled-{labelled}{tag}" / f"seed-{seed}"
    row: dict[str, Any] = {"labelled": labelled, "seed": seed, "run_dir": str(out)}
    row["alpha"] = "-" if labelled == "all" else "0.1 N" if alpha is None else alpha
    if (out / "summary.json").exists():
        return {**row, **_scores(args, data, out, labelled), "status": "complete"}
    if time.monotonic() >= deadline:
        return {**row, "status": "not started (budget)", **_progress(out)}
    resume = (out / "config.json").exists()
    # an unfinished run continues to --epochs: a copy of a finished run without its
    # summary.json is trained further (its metrics.jsonl keeps every epoch)
    config = (
        resume_config(out, epochs=args.epochs) if resume else _config(args, labelled, seed, out)
    )
    left = deadline - time.monotonic()
    timer = threading.Timer(min(left, 1e7), os.kill, (os.getpid(), signal.SIGINT))
    if math.isfinite(left):
        timer.start()  # at the deadline: a Ctrl-C, which fit answers with an exact checkpoint
    try:
        fit(config, dataset=data, resume=resume, progress=not args.smoke)
    except (TrainingInterrupted, KeyboardInterrupt):
        return {**row, "status": "stopped by the budget", **_progress(out)}
    finally:
        timer.cancel()
    return {**row, **_scores(args, data, out, labelled), "status": "complete"}


def _progress(out: Path) -> dict[str, Any]:
    """How far an unfinished run got (epochs with a metrics line)."""
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {"epochs_done": len(lines)}


def _scores(args: argparse.Namespace, data: Dataset, out: Path, labelled: int | str) -> dict:
    """Accuracy (%, error) and IW NLL of a finished run."""
    summary = json.loads((out / "summary.json").read_text())
    epochs = len((out / "metrics.jsonl").read_text().splitlines())
    timing = [json.loads(s) for s in (out / "timing.jsonl").read_text().splitlines()]
    row = {"epochs_done": epochs, "train_seconds": sum(t["seconds"] for t in timing)}
    if labelled != "all":
        acc = summary["test_accuracy"]
        row.update(_valid_curve(out))
        return {**row, "test_error_pct": 100 * (1 - acc), "test_nll": summary["test_nll"]}
    cached = out / "ceiling.json"
    if not cached.exists():
        cached.write_text(json.dumps(_ceiling(args, data, out)) + "\n")
    return {**row, **json.loads(cached.read_text())}


def _valid_curve(out: Path) -> dict[str, Any]:
    """The classifier's validation error (%) after each epoch, where the run logged it."""
    records = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [100 * (1 - r["valid_accuracy"]) for r in records if "valid_accuracy" in r]
    return {"valid_error_pct_by_epoch": curve} if curve else {}


def _ceiling(args: argparse.Namespace, data: Dataset, out: Path) -> dict[str, Any]:
    """The conditional VAE: generative accuracy and log p(x) with y summed, on the IW subset."""
    from pyro_vae import load

    vae = load(out)
    config = json.loads((out / "config.json").read_text())
    x = evaluation_split(data, "test", config["train"]["binarize"])
    y = data.labels("test")
    assert y is not None
    n = min(args.iw_points, x.shape[0])
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    x, y = x[idx], y[idx]
    classes = vae.config.num_classes
    torch.manual_seed(0)
    with torch.no_grad():
        per_class = torch.stack(
            [
                log_likelihood(
                    vae.model, vae.guide, x, torch.full_like(y, c), num_samples=args.iw_samples
                )
                for c in range(classes)
            ]
        )  # (C, n): log p(x|y=c)
    log_px = per_class.logsumexp(0) - math.log(classes)
    error = float((per_class.argmax(0) != y).double().mean())
    return {"test_error_pct": 100 * error, "test_nll": -float(log_px.mean()), "scored_points": n}


def _summary(args: argparse.Namespace, rows: list[dict[str, Any]], wall: float) -> dict:
    given = {k: v for k, v in vars(args).items() if k not in ("out", "results", "smoke")}
    flags = " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        for k, v in given.items()
        if v is not None and v is not False
    )
    return {
        "command": "PYRO_VAE_DATA=/work/shared/data python -m benchmarks.semi_supervised "
        + flags
        + (" --smoke" if args.smoke else ""),
        "budget": {"minutes": args.budget_minutes, "device": args.device, "wall_seconds": wall},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "paper_m2_test_error_pct": PAPER_ERROR,
        "rows": rows,
    }


def _markdown(summary: dict[str, Any]) -> str:
    machine = summary["machine"]
    lines = [
        "# The semi-supervised VAE M2 on MNIST",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"Budget: {summary['budget']['minutes']} minutes on {summary['budget']['device']} "
        f"({machine['cpu_count']} cores, load {machine['load_average_at_end'][0]:.1f}); "
        f"this invocation ran {summary['budget']['wall_seconds']:.0f} s (finished runs are "
        "read back; each row's training time is its own).",
        "",
        "| labels | alpha | seed | epochs | test error % | paper M2 error % | IW NLL | status "
        "| train min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        paper = PAPER_ERROR.get(r["labelled"], "-") if r["labelled"] != "all" else "ceiling"
        err = f"{r['test_error_pct']:.2f}" if "test_error_pct" in r else "-"
        nll = f"{r['test_nll']:.2f}" if "test_nll" in r else "-"
        minutes = f"{r['train_seconds'] / 60:.1f}" if "train_seconds" in r else "-"
        lines.append(
            f"| {r['labelled']} | {r.get('alpha', '0.1 N')} | {r['seed']} "
            f"| {r.get('epochs_done', 0)} | {err} | {paper} "
            f"| {nll} | {r['status']} | {minutes} |"
        )
    curves = [r for r in summary["rows"] if r.get("valid_error_pct_by_epoch")]
    if curves:
        lines += ["", "Validation error (%) of q(y|x) after epochs 1, 5, 10, 20, ..., last:", ""]
    for r in curves:
        c = r["valid_error_pct_by_epoch"]
        at = sorted({1, 5, *range(10, len(c), 10), len(c)} & set(range(1, len(c) + 1)))
        points = ", ".join(f"{c[e - 1]:.2f}" for e in at)
        lines.append(
            f"- {r['labelled']} labels, alpha {r.get('alpha')}, seed {r['seed']}: {points}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
