"""Swapping one part at a time on binarized MNIST: priors, guide families, stochastic layers.

One command trains every row at the same fixed budget and scores it the same way, then
writes one table (``parts.json`` and ``parts.md`` in ``--out``)::

    PYRO_VAE_DATA=/path/to/data python -m benchmarks.parts          # about 15 min, 1 CPU thread
    python -m benchmarks.parts --smoke --out /tmp/parts             # seconds: digits, tiny

Budget (the defaults): Larochelle's statically binarized MNIST (50k train), the IWAE
paper's one-layer network (784-200-200-50) with ReLU instead of its tanh (``--activation``;
with tanh and no KL warm-up the VampPrior collapses to KL = 0 in this budget), trained for
``--epochs 10`` with Adam (lr 1e-3, batch 100, seed 0), one row per part swapped against
the standard VAE:

- priors: standard Normal vs VampPrior vs mixture of Gaussians (K = 100 each),
- guides: diagonal Normal vs a 2-step IAF conditioned on the encoder,
- structure: one stochastic layer (z 50) vs two (z1 100, z2 50; Burda et al. 2015).

Scoring: test ELBO over the whole test split, and the importance-weighted NLL with
k = ``--nll-samples`` (1000) on ``--nll-points`` (1000) test points, a seeded random subset
(the same for every row), exactly as ``pyro-vae train`` reports it. Ten epochs is far from
convergence (the papers train for thousands): the table compares parts at equal, short
budgets, not against published figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit, load_dataset

__all__ = ["ROWS", "Row", "main", "run"]


@dataclass(frozen=True)
class Row:
    """One trained model: which comparison it belongs to, and what differs from standard."""

    name: str
    comparison: str
    config: VAEConfig


# ReLU, not the paper's tanh: with tanh and no KL warm-up the VampPrior collapses to
# KL = 0 within this budget (benchmarks/README.md gives the numbers)
BASE = VAEConfig(data_shape=(1, 28, 28), latent_dim=50, hidden=(200, 200), activation="relu")
ROWS = (
    Row("standard", "baseline", BASE),
    Row("VampPrior", "prior", dataclasses.replace(BASE, prior="vamp:components=100")),
    Row("mixture prior", "prior", dataclasses.replace(BASE, prior="mixture:components=100")),
    Row("IAF guide", "guide", dataclasses.replace(BASE, guide="iaf:layers=2")),
    Row(
        "two stochastic layers",
        "layers",
        dataclasses.replace(BASE, latent_dim=100, upper_latent_dims=(50,)),
    ),
)


def _smoke(row: Row) -> Row:
    """The same row shrunk for the 8x8 digits: small nets, 3 components, one IAF step."""
    c = row.config
    two = bool(c.upper_latent_dims)
    config = dataclasses.replace(
        c,
        latent_dim=6 if two else 4,
        hidden=(32,),
        upper_latent_dims=(3,) if two else (),
        upper_hidden=(16,),
        prior=c.prior.replace("components=100", "components=3"),
        guide=c.guide.replace("layers=2", "layers=1"),
    )
    return dataclasses.replace(row, config=config)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score every row; returns the JSON record (also written to ``args.out``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        record = _run(args)
    finally:
        torch.set_num_threads(threads)
    _write(Path(args.out), record)
    return record


def _run(args: argparse.Namespace) -> dict[str, Any]:
    dataset = load_dataset(args.dataset, progress=False)
    results = []
    for row in ROWS:
        row = _smoke(row) if args.smoke else row
        row = dataclasses.replace(
            row, config=dataclasses.replace(row.config, activation=args.activation)
        )
        train = TrainConfig(
            dataset=args.dataset,
            binarize=args.binarize,
            epochs=args.epochs,
            batch_size=100,
            lr=1e-3,
            seed=0,
            device="cpu",
            eval_num_samples=args.nll_samples,
            eval_num_points=args.nll_points,
        )
        start = time.perf_counter()
        result = fit(RunConfig(row.config, train), dataset=dataset, write=False, progress=False)
        seconds = time.perf_counter() - start
        s = result.summary
        results.append(
            {
                "name": row.name,
                "comparison": row.comparison,
                "prior": row.config.prior,
                "guide": row.config.guide,
                "latent_dims": [row.config.latent_dim, *row.config.upper_latent_dims],
                "test_nll": s["test_nll"],
                "test_elbo": s["test_elbo"],
                "test_reconstruction": s["test_reconstruction"],
                "test_kl": s["test_kl"],
                "seconds": seconds,
            }
        )
        print(
            f"{row.name:<24} NLL {s['test_nll']:8.2f}  ELBO {s['test_elbo']:8.2f}  "
            f"{seconds:6.0f} s",
            flush=True,
        )
    record = {
        "command": " ".join(["python -m benchmarks.parts", *args.argv]),
        "dataset": args.dataset,
        "epochs": args.epochs,
        "batch_size": 100,
        "lr": 1e-3,
        "seed": 0,
        "nll_num_samples": args.nll_samples,
        "nll_num_points": min(args.nll_points, dataset.test.shape[0]),
        "threads": args.threads,
        "activation": args.activation,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"pyro {pyro.__version__}",
        "rows": results,
    }
    return record


def _markdown(record: dict[str, Any]) -> str:
    lines = [
        f"Test scores on `{record['dataset']}` after {record['epochs']} epochs "
        f"({record['activation']} networks, batch {record['batch_size']}, Adam lr "
        f"{record['lr']}, seed {record['seed']}); NLL is the "
        f"IW bound with k = {record['nll_num_samples']} on {record['nll_num_points']} seeded "
        "test points, ELBO and KL over the whole test split, nats per image "
        "(lower NLL is better).",
        "",
        "| comparison | model | prior | guide | latent (top→z1) | test NLL | ELBO | KL | s |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        latent = " → ".join(str(d) for d in reversed(r["latent_dims"]))
        lines.append(
            f"| {r['comparison']} | {r['name']} | `{r['prior']}` | `{r['guide']}` | {latent} | "
            f"{r['test_nll']:.2f} | {r['test_elbo']:.2f} | {r['test_kl']:.2f} | "
            f"{r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Command: `{record['command']}` ({record['machine']}, {record['threads']} thread(s)).",
    ]
    return "\n".join(lines) + "\n"


def _write(out: Path, record: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "parts.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "parts.md").write_text(_markdown(record), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parts", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--nll-samples", type=int, default=1000, help="k of the IW bound")
    parser.add_argument("--nll-points", type=int, default=1000, help="seeded test subset")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--activation", default="relu", help="tanh is the IWAE paper's")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--smoke", action="store_true", help="digits, 1 epoch, tiny: seconds")
    args = parser.parse_args(argv)
    args.argv = argv
    args.dataset, args.binarize = "binarized-mnist", "none"  # already binary: score as is
    if args.smoke:
        args.dataset, args.binarize = "digits", "dynamic"
        args.epochs, args.nll_samples, args.nll_points = 1, 5, 20
    run(args)
    print(f"wrote {Path(args.out) / 'parts.json'} and parts.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
