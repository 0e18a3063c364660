"""Pool the paired step blocks of several ``benchmarks.speed`` runs into one verdict.

One run of ``python -m benchmarks.speed`` gives the median of its ``--pairs`` paired block
ratios. On a shared 2-core machine a run's median moves by several percent from one run to
the next, more than the differences a change to the step makes. This pools the pair ratios
of many runs (each run's JSON, as written by ``--out``) per label and batch: the pooled
median, its quartiles and extremes, the share of pairs at or above 1.0, and the median of
the runs' medians. Usage::

    python -m benchmarks.speed_pool --out benchmarks/results/speed-pooled.json \\
        main=/tmp/base-*.json change=/tmp/new-*.json
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np


def pool(paths: list[str]) -> list[dict[str, Any]]:
    """One row per (architecture, batch): pooled pair ratios of pyro-vae over the reference."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["training"]:
            row = rows.setdefault(
                (r["architecture"], r["batch"]),
                {"architecture": r["architecture"], "batch": r["batch"], "pairs": [], "runs": []},
            )
            row["pairs"] += r["pair_ratios"]["pyro-vae"]
            row["runs"].append(r["ratio_vs_reference"])
    for row in rows.values():
        q = np.percentile(row["pairs"], [0, 25, 50, 75, 100])
        row.update(
            median=float(q[2]),
            spread=[float(v) for v in q],
            share_at_least_1=float(np.mean(np.asarray(row["pairs"]) >= 1.0)),
            median_of_runs=statistics.median(row["runs"]),
        )
    return list(rows.values())


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| label | architecture | batch | runs | pairs | **pooled median** | [min, q1-q3, max] "
        "| pairs >= 1.0 | median of run medians |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for label, rows in result["labels"].items():
        for r in rows:
            s = r["spread"]
            lines.append(
                f"| {label} | {r['architecture']} | {r['batch']} | {len(r['runs'])} | "
                f"{len(r['pairs'])} | **{r['median']:.3f}** | [{s[0]:.2f}, {s[1]:.2f}-{s[3]:.2f}, "
                f"{s[4]:.2f}] | {r['share_at_least_1']:.0%} | {r['median_of_runs']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed_pool",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", help="LABEL=GLOB of benchmarks.speed JSON files")
    p.add_argument("--out", type=Path, required=True, help="the pooled JSON; a .md beside it")
    args = p.parse_args()
    labels: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, list[str]] = {}
    for spec in args.runs:
        label, _, pattern = spec.partition("=")
        files[label] = sorted(glob.glob(pattern))
        if not files[label]:
            p.error(f"{spec!r}: no file matches {pattern!r}")
        labels[label] = pool(files[label])
    result = {"labels": labels, "files": {k: [Path(f).name for f in v] for k, v in files.items()}}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
