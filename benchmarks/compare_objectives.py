"""Benchmark: ELBO against IWAE (k = 5, 50) on binarized MNIST at a fixed CPU budget.

Runs :func:`pyro_vae.analysis.compare.compare` (what ``pyro-vae compare`` runs) on Larochelle's
statically binarized MNIST with the IWAE paper's one-stochastic-layer architecture
(784-200-200-50, tanh; Burda et al. 2015), on a seeded random subset of the training
split so that the whole comparison fits a shared 2-core machine, and checks the paper's
two qualitative findings: the IW NLL improves with k, and IWAE keeps more active units.

    PYRO_VAE_DATA=/work/shared/data python -m benchmarks.compare_objectives

writes the comparison's run directories and compare.{json,md,png} under ``--out`` and the
summary ``benchmarks/compare_objectives.{json,md}``. It is resumable: run it again after an
interruption and finished runs are read back, unfinished ones continued.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from pyro_vae import Dataset, RunConfig, TrainConfig, VAEConfig, load_dataset
from pyro_vae.analysis.compare import compare, markdown_table, split_specs, t_interval

HERE = Path(__file__).resolve().parent


def _subset(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]


def _paired(runs: list[dict[str, Any]], key: str, a: str, b: str) -> dict[str, Any]:
    """Per-seed differences ``key(a) - key(b)`` (same seed: same init and data order)."""
    by = {(r["objective"], r["seed"]): r[key] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    return t_interval([by[(a, s)] - by[(b, s)] for s in seeds])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare_objectives", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--objectives", default="elbo,iwae:k=5,iwae:k=50")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-points", type=int, default=6000)
    parser.add_argument("--valid-points", type=int, default=1000)
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--iw-points", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/compare_objectives"))
    args = parser.parse_args()

    full = load_dataset("binarized-mnist", progress=False)
    data = Dataset(
        f"binarized-mnist (train: {args.train_points} of {full.train.shape[0]})",
        _subset(full.train, args.train_points, 0),
        _subset(full.valid, args.valid_points, 1),
        full.test,
    )
    config = RunConfig(
        VAEConfig(data_shape=data.data_shape, latent_dim=50, hidden=(200, 200), activation="tanh"),
        TrainConfig(
            dataset="binarized-mnist",
            binarize="none",  # already binary (static binarization)
            epochs=args.epochs,
            batch_size=100,
            lr=1e-3,
            device="cpu",
            eval_num_samples=args.iw_samples,
            eval_num_points=args.iw_points,
        ),
    )
    objectives = split_specs(args.objectives)
    start = time.perf_counter()
    result = compare(objectives, list(range(args.seeds)), config, args.out, dataset=data, log=print)
    wall = time.perf_counter() - start
    runs = result["runs"]
    checks = {}
    iwae = [o for o in objectives if o.startswith("iwae")]
    chain = ["elbo", *iwae] if "elbo" in objectives else iwae
    for a, b in itertools.pairwise(chain):
        checks[f"test_nll {a} - {b}"] = _paired(runs, "test_nll", a, b)
    for o in iwae:
        if "elbo" in objectives:
            checks[f"active_units {o} - elbo"] = _paired(runs, "active_units", o, "elbo")
    summary = {
        "command": "PYRO_VAE_DATA=/work/shared/data python -m benchmarks.compare_objectives "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "budget": {
            "train_points": args.train_points,
            "valid_points": args.valid_points,
            "epochs": args.epochs,
            "steps_per_run": args.epochs * -(-args.train_points // 100),
            "seeds": args.seeds,
            "iw_samples": args.iw_samples,
            "iw_points": args.iw_points,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "wall_seconds_this_invocation": wall,
        "paired_differences": checks,
        "rows": result["rows"],
        "runs": runs,
    }
    (HERE / "compare_objectives.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# ELBO vs IWAE on binarized MNIST (fixed CPU budget)",
        "",
        f"Command: `{summary['command']}`",
        "",
        markdown_table(result),
        "Paired differences over seeds (same seed = same initial weights and data order), "
        "mean [95% t-interval]:",
        "",
    ]
    for name, stat in checks.items():
        lines.append(f"- {name}: {stat['mean']:.2f} [{stat['low']:.2f}, {stat['high']:.2f}]")
    (HERE / "compare_objectives.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
