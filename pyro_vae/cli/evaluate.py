"""``pyro-vae evaluate``: :func:`~pyro_vae.analysis.evaluate.evaluate_run` with flags; its table.

The command passes its flags to :func:`~pyro_vae.analysis.evaluate.evaluate_run`, which
does the work and writes eval.json, then prints the figures as a table. The library names
its own arguments in errors (``num_points must be in 1..300 ...``); the CLI's one translator,
:func:`~pyro_vae.cli.messages.to_flags`, turns them back into the flags the user typed.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from pyro_vae.analysis.evaluate import evaluate_run
from pyro_vae.cli.tables import table, term_rows
from pyro_vae.data import TableSchema

__all__ = ["cmd_evaluate"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score ``args.run_dir``: eval.json, a table of its figures; 1 if a diagnostic failed."""
    result = evaluate_run(
        args.run_dir,
        dataset=args.dataset,
        split=args.split,
        num_samples=args.num_samples,
        num_points=args.num_points,
        seed=args.seed,
        psis_samples=args.psis_samples,
        gaps=args.gaps,
        mcmc=args.mcmc,
        mcmc_samples=args.mcmc_samples,
        device=args.device,
        progress=True,
        write=True,
        strict=args.debug,
    )
    _report(args, result)
    return 1 if result.get("diagnostic_errors") else 0


def _report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """The table of figures, the PSIS interpretation, and any failed diagnostic."""
    nll, n = result["nll"], result["num_points"]
    rows = [
        *term_rows(result["elbo"], result["reconstruction"], result["kl"], nll is None),
        (
            "NLL",
            math.nan if nll is None else nll,
            f"-log p(x), IW bound with k={result['num_samples']}"
            if nll is not None
            else "not defined: a Delta guide is a point estimate",
        ),
        *_diagnostic_rows(result),
    ]
    print(table(f"{result['split']} split, {n} points, nats per data point", rows))
    _table_report(args, result)
    if "psis_interpretation" in result:
        print(f"PSIS: {result['psis_interpretation']}")
    print(f"wrote {args.run_dir / 'eval.json'}")
    for name, message in result.get("diagnostic_errors", {}).items():
        print(
            f"pyro-vae: error: the {name} diagnostic failed ({message}); eval.json holds "
            "every other figure (run with --debug for the traceback)",
            file=sys.stderr,
        )


def _table_report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """A table run: its schema, and each column's share of the reconstruction."""
    per_column = result.get("reconstruction_per_column")
    if per_column is None or not (args.run_dir / "schema.json").is_file():
        return
    schema = TableSchema.load(args.run_dir)
    rows = [
        (
            c.name,
            per_column.get(c.name, math.nan),
            c.type + (f", {len(c.levels)} levels" if c.type == "categorical" else ""),
        )
        for c in schema.columns
    ]
    print(table("reconstruction per column, E_q[log p(x_j|z)], nats per row", rows))


def _diagnostic_rows(result: dict[str, Any]) -> list[tuple[str, float, str]]:
    if "diagnostics_skipped" in result:
        return []
    rows: list[tuple[str, float, str]] = []
    if "accuracy" in result:  # the semi-supervised VAE's classifier q(y|x)
        rows.append(("accuracy", result["accuracy"], "argmax_y q(y|x) against the labels"))
    if "active_units" in result:
        rows.append(("active units", result["active_units"], "Cov_x E_q[z_j] > 0.01"))
    if "mutual_information" in result:
        mi = result["mutual_information"]
        rows.append(
            (
                "I(x; z)",
                math.nan if mi is None else mi,
                "under q, Hoffman & Johnson"
                if mi is not None
                else f"not computed: {result.get('mutual_information_reason', 'see eval.json')}",
            )
        )
    if "psis_khat" in result:
        khat = result["psis_khat"]
        rows.append(("PSIS k-hat", khat["mean"], "mean over points"))
        rows.append(("k-hat > 0.7", khat["frac_above_0.7"], "fraction of points"))
    return rows + _gap_rows(result.get("gaps")) + _mcmc_rows(result.get("mcmc"))


def _gap_rows(gaps: dict[str, Any] | None) -> list[tuple[str, float, str]]:
    """Cremer et al. (2018): the two gaps, each a mean over points with its standard error."""
    if gaps is None:
        return []
    n = gaps["num_points"]
    return [
        (
            "approx. gap",
            gaps["approximation_gap"]["mean"],
            f"log p(x) - optimized ELBO, +- {gaps['approximation_gap']['se']:.3f} (SE), {n} points",
        ),
        (
            "amortiz. gap",
            gaps["amortization_gap"]["mean"],
            f"optimized - amortized ELBO, +- {gaps['amortization_gap']['se']:.3f} (SE)",
        ),
    ]


def _mcmc_rows(mcmc: dict[str, Any] | None) -> list[tuple[str, float, str]]:
    """NUTS on p(z|x): the convergence figures over every point and latent dimension."""
    if mcmc is None:
        return []
    points = len(mcmc["points"])
    return [
        ("NUTS max r-hat", mcmc["max_r_hat"], f"{points} points, {mcmc['num_chains']} chains"),
        ("NUTS min ESS", mcmc["min_ess_bulk"], "bulk ESS; moments vs q(z|x) in eval.json"),
    ]
