"""``pyro-vae impute``: fill the empty cells of a CSV table with a trained table run.

The run's VAE and ``schema.json`` are loaded; :func:`~pyro_vae.analysis.impute.impute`
fills the missing cells (empty, ``NA``, ``NaN``) by importance resampling under the guide
(MIWAE). Every other cell is written back exactly as it was typed. Without ``--draws`` one
table of conditional means and modes is written to ``--out``; ``--draws M`` writes M tables
drawn for multiple imputation, ``FILE_1.csv`` ... ``FILE_M.csv`` beside ``--out FILE.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pyro_vae.analysis.impute import impute
from pyro_vae.cli.messages import UsageError
from pyro_vae.data import DataError, TableSchema
from pyro_vae.data.tables import MISSING, read_cells
from pyro_vae.training.checkpoint import load

__all__ = ["cmd_impute", "draw_paths"]


def draw_paths(out: Path, draws: int | None) -> list[Path]:
    """``out`` itself, or ``out``'s stem with ``_1`` ... ``_M`` for ``M`` draws."""
    if draws is None:
        return [out]
    return [out.with_name(f"{out.stem}_{m}{out.suffix}") for m in range(1, draws + 1)]


def _text(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def cmd_impute(args: argparse.Namespace) -> int:
    """Fill ``--data``'s missing cells; write ``--out`` (or its ``--draws`` tables)."""
    if args.draws is not None and args.draws < 1:
        raise UsageError(f"--draws must be a positive int, got {args.draws}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be a positive int, got {args.num_samples}")
    if args.out.suffix.lower() != ".csv":
        raise UsageError(f"--out must end in .csv, got {str(args.out)!r}")
    if not (args.run_dir / "schema.json").is_file():
        raise UsageError(
            f"the run in {str(args.run_dir)!r} has no schema.json: it was not trained on a "
            "table (a .csv with a header), so it cannot fill a table's cells."
        )
    schema = TableSchema.load(args.run_dir)
    vae = load(args.run_dir)
    cells = read_cells(args.data)
    raw = pd.read_csv(args.data, dtype=str, keep_default_na=False)  # cells as typed
    missing = sorted(set(schema.names) - set(cells.columns))
    if missing:
        raise DataError(f"{args.data} lacks the run's column(s) {missing}. Add them.")
    tables = impute(
        vae,
        cells[schema.names],
        schema=schema,
        draws=args.draws,
        num_samples=args.num_samples,
        seed=args.seed,
    )
    filled_list = tables if isinstance(tables, list) else [tables]
    paths = draw_paths(args.out, args.draws)
    empty = raw.apply(lambda s: s.str.strip().isin(MISSING))
    for path, filled in zip(paths, filled_list, strict=True):
        out = raw.copy()
        for name in schema.names:
            rows = np.flatnonzero(empty[name].to_numpy())
            position = list(raw.columns).index(name)
            for r in rows:
                out.iat[r, position] = _text(filled[name].iloc[r])
        out.to_csv(path, index=False)
    count = int(empty[schema.names].to_numpy().sum())
    print(f"filled {count} empty cell(s); wrote {', '.join(str(p) for p in paths)}")
    return 0
