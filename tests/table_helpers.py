"""A small mixed-type table with missing cells, written as CSV, and a table run trained on
it (shared by the tests of data/tables.py, models/likelihoods/tabular.py and analysis/)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from pyro_vae.cli import main

COLUMNS = ("height", "weight", "visits", "smoker", "colour")
TYPES = ("real", "positive", "count", "binary", "categorical")


def table_text(n: int = 60, seed: int = 0, missing: bool = True) -> str:
    """``n`` rows: a real, a positive, a count, a 0/1 and a three-level text column."""
    rng = np.random.default_rng(seed)
    lines = [",".join(COLUMNS)]
    for i in range(n):
        cells = [
            f"{rng.normal(0, 2):.2f}",
            f"{rng.lognormal(3, 0.3):.3f}",
            str(rng.poisson(3)),
            str(rng.integers(0, 2)),
            ("red", "green", "blue")[rng.integers(0, 3)],
        ]
        if missing and i % 7 == 3:
            cells[i % 5] = ("", "NA", "NaN")[i % 3]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def write_table(path: Path, **kwargs: object) -> Path:
    path.write_text(table_text(**kwargs))  # type: ignore[arg-type]
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``pyro-vae ARGV``: exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def train_table_run(tmp: Path, epochs: int = 3) -> Path:
    """A table run on :func:`table_text`'s table, a few seconds on a CPU."""
    data = write_table(tmp / "table.csv")
    run = tmp / "run"
    code, _, err = run_cli(
        "train",
        "--dataset",
        str(data),
        "--epochs",
        str(epochs),
        "--out",
        str(run),
        "--batch-size",
        "16",
        "--hidden",
        "32",
        "--latent-dim",
        "2",
        "--eval-num-samples",
        "5",
        "--quiet",
    )
    assert code == 0, err
    return run
