"""``pyro-vae train`` and ``pyro-vae compare``: flags to a config, then the library's
:func:`~pyro_vae.training.fit.fit` and :func:`~pyro_vae.analysis.compare.compare`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from pyro_vae.analysis import plots
from pyro_vae.analysis.compare import compare, split_specs
from pyro_vae.cli.messages import UsageError, to_flags
from pyro_vae.cli.settings import resume_run_config, run_config
from pyro_vae.cli.tables import table, term_rows
from pyro_vae.config import EvaluateConfig, RunConfig, TrainConfig
from pyro_vae.data import Dataset, load_dataset
from pyro_vae.data.tables import is_table_csv
from pyro_vae.training.fit import fit, resolve_device
from pyro_vae.training.lock import run_lock

__all__ = ["cmd_compare", "cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    """Train as the flags say, print the test split's figures, and plot the run."""
    config = resume_run_config(args) if args.resume else run_config(args)
    main_rank = os.environ.get("RANK", "0") in ("", "0")  # under torchrun only rank 0 reports
    # rank 0 holds the run's lock (fit takes it again) until its plots are written too
    held = main_rank and not Path(config.train.out).is_file()  # a file: fit says so
    with run_lock(config.train.out) if held else contextlib.nullcontext():
        return _train(args, config, main_rank)


def _train(args: argparse.Namespace, config: RunConfig, main_rank: bool) -> int:
    tc = config.train
    if main_rank:
        print(f"pyro-vae train: {tc.dataset} -> {tc.out}  (device {resolve_device(tc.device)})")
    dataset = _table(tc)
    if dataset is not None and dataset.table is not None and main_rank:
        print(f"columns of {dataset.name} (types inferred; --schema FILE.toml sets them):")
        print(dataset.table.describe())
    result = fit(config, dataset=dataset, resume=bool(args.resume), progress=not args.quiet)
    if result.rank != 0:
        return 0
    s = result.summary
    point = bool(s.get("point_estimate", False))
    rows = term_rows(s["test_elbo"], s["test_reconstruction"], s["test_kl"], point)
    if "test_nll" in s:
        k, n = s["nll_num_samples"], s["nll_num_points"]
        rows.append(("NLL", s["test_nll"], f"-log p(x), IW k={k}, {n} points"))
    if "test_accuracy" in s:  # the semi-supervised VAE's classifier q(y|x)
        rows.append(("accuracy", s["test_accuracy"], "argmax_y q(y|x) against the labels"))
    print(table("test split, nats per data point", rows))
    _note_skipped(s, result.config.train)
    if "cuda_graphs" in s:  # --cuda-graphs true: whether the step ran as a CUDA graph, or why not
        print(to_flags(f"CUDA graphs: {s['cuda_graphs']}"))
    paths = plots.plot_run(result, dataset) if result.run_dir is not None else []
    print(f"run directory: {result.run_dir}  (plots: {', '.join(p.name for p in paths)})")
    return 0


def _table(tc: TrainConfig) -> Dataset | None:
    """The data set if ``--dataset`` is a table (loaded once, here, to print its schema)."""
    path = Path(tc.dataset)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    if not (tc.schema.strip() or is_table_csv(path)):
        return None
    return load_dataset(path, progress=False, schema=tc.schema)


def _note_skipped(summary: dict[str, Any], tc: TrainConfig) -> None:
    """``--on-nan skip``: say at the end how many steps were skipped, if any were."""
    skipped = summary.get("skipped_steps", 0)
    if skipped:
        print(
            f"pyro-vae: note: {skipped} step(s) were skipped for a non-finite loss or gradient "
            f"(--on-nan skip, at most --max-skipped-steps {tc.max_skipped_steps}); "
            "metrics.jsonl counts them per epoch and summary.json in all (skipped_steps). "
            "Many skipped steps suggest a lower --lr or a look at the data.",
            file=sys.stderr,
        )


def cmd_compare(args: argparse.Namespace) -> int:
    """Train and score each objective over ``--seeds`` seeds; print compare.md."""
    if getattr(args, "train.objective") is not None:
        raise UsageError(
            "compare trains every objective of --objectives (a comma-separated list, e.g. "
            "--objectives elbo,iwae:k=5), not one --objective. Drop --objective."
        )
    if args.seeds < 1:
        raise UsageError(f"--seeds must be a positive int, got {args.seeds}")
    config = run_config(args)
    if getattr(args, "train.eval_num_samples") is None and args.config is None:
        # a report's IW NLL: k = 5000 unless --eval-num-samples (or --config) says otherwise
        train = dataclasses.replace(config.train, eval_num_samples=EvaluateConfig().num_samples)
        config = dataclasses.replace(config, train=train)
    seeds = list(range(config.train.seed, config.train.seed + args.seeds))
    out = Path(config.train.out)
    specs = split_specs(args.objectives)
    compare(specs, seeds, config, out, progress=not args.quiet, log=lambda s: print(to_flags(s)))
    print((out / "compare.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return 0
