"""The ``pyro-vae`` command line: ``main`` runs one command and turns errors into paragraphs.

The commands live beside this module: :mod:`~pyro_vae.cli.train` (``train``, ``compare``),
``evaluate`` (below, for now), :mod:`~pyro_vae.cli.sample` (``sample``, ``components``).
:mod:`~pyro_vae.cli.parser` builds the flags, :mod:`~pyro_vae.cli.settings` turns them into
a config, and :mod:`~pyro_vae.cli.messages` prints what went wrong in the flags the user
typed (``to_flags``). Known failures print one paragraph and exit 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

import torch

from pyro_vae.analysis.diagnostics import check_inference_gaps
from pyro_vae.analysis.report import check_settings, diagnose
from pyro_vae.cli.messages import UsageError, error_message, is_user_error, notices, to_flags
from pyro_vae.cli.parser import build_parser
from pyro_vae.cli.sample import cmd_components, cmd_sample
from pyro_vae.cli.settings import resume_run_config, run_config
from pyro_vae.cli.train import cmd_compare, cmd_train
from pyro_vae.config import TrainConfig, from_dict, resolve_binarize
from pyro_vae.data import DataError, load_dataset
from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.infer.importance import PointEstimateError, log_likelihood
from pyro_vae.plugins import load_plugin
from pyro_vae.training.checkpoint import check_run_dir, load, load_config, write_json
from pyro_vae.training.fit import (
    TrainingInterrupted,
    check_run_paths,
    evaluation_split,
    resolve_device,
    split_labels,
)
from pyro_vae.vae import VAE

# build_parser, run_config and resume_run_config are re-exported: tests and the docs import
# them from here
__all__ = [
    "COMMANDS",
    "UsageError",
    "build_parser",
    "main",
    "resume_run_config",
    "run_config",
    "subset",
]


def _is_point(summary: dict[str, Any]) -> bool:
    return bool(summary.get("point_estimate", False))


def _term_rows(
    elbo: float, reconstruction: float, kl: float, point_estimate: bool
) -> list[tuple[str, float, str]]:
    """The ELBO's rows; for a point-mass (Delta) guide, what the same numbers mean there."""
    if point_estimate:  # log q = 0 at the point z*: no KL, no bound on log p(x)
        return [
            ("objective", elbo, "log p(x|z*) + log p(z*) at the guide's point z*"),
            ("reconstruction", reconstruction, "log p(x|z*)"),
            ("-log prior", kl, "-log p(z*) (a Delta guide: no KL, no bound on log p(x))"),
        ]
    return [
        ("ELBO", elbo, ""),
        ("reconstruction", reconstruction, "E_q[log p(x|z)]"),
        ("KL", kl, "KL(q(z|x) || p(z))"),
    ]


def _table(title: str, rows: Sequence[tuple[str, float, str]]) -> str:
    lines = [title] + [f"  {name:<16}{value:>10.3f}   {note}" for name, value, note in rows]
    return "\n".join(lines)


def subset(total: int, n: int, seed: int) -> torch.Tensor:
    """Indices of a seeded random subset of ``n`` of ``total`` rows (never just the first n)."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


def cmd_evaluate(args: argparse.Namespace) -> int:
    _, raw = load_config(args.run_dir)
    check_run_dir(args.run_dir)
    check_run_paths(args.run_dir)  # eval.json a file, plots a folder: before the slow part
    train = from_dict(TrainConfig, raw.get("train", {}), "config.json train")
    device = resolve_device(args.device)
    vae = load(args.run_dir, map_location=device)
    dataset = load_dataset(args.dataset or train.dataset, progress=False)
    if dataset.data_shape != vae.config.data_shape:
        raise DataError(
            f"data set {dataset.name!r} has items of shape {dataset.data_shape}, but the model "
            f"in {str(args.run_dir)!r} was trained on items of shape {vae.config.data_shape} "
            f"(data set {train.dataset!r}). Evaluate it on data of that shape, e.g. --dataset "
            f"{train.dataset}."
        )
    binarize = resolve_binarize(train.binarize, vae.config.likelihood)  # saved runs: resolved
    x = evaluation_split(dataset, args.split, binarize)
    y = split_labels(vae, dataset, args.split)
    n = x.shape[0] if args.num_points is None else args.num_points
    if not 0 < n <= x.shape[0]:
        raise UsageError(f"--num-points must be in 1..{x.shape[0]} for this split, got {n}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be a positive int, got {args.num_samples}")
    check_settings(args.psis_samples, args.gaps, args.mcmc, n)  # before the slow IW bound
    idx = subset(x.shape[0], n, args.seed)
    x = x[idx].to(device)
    labels = () if y is None else (y[idx].to(device),)
    vae.check_data(x)
    if args.gaps:  # a guide the gaps cannot use is refused now, not after the IW bound
        with contextlib.suppress(PointEstimateError):  # Delta: no diagnostics at all (below)
            check_inference_gaps(vae.guide, x[:1], *(lab[:1] for lab in labels))
    torch.manual_seed(args.seed)
    with torch.no_grad():
        chunks = zip(x.split(1000), *(lab.split(1000) for lab in labels), strict=True)
        terms = [elbo_terms(vae.model, vae.guide, *chunk) for chunk in chunks]
        ll = _log_px(vae, x, labels, args.num_samples)  # (N,), None for a Delta guide
    nll = None if ll is None else -float(ll.mean())
    result: dict[str, Any] = {
        "elbo": float(torch.cat([t["elbo"] for t in terms]).mean()),
        "reconstruction": float(torch.cat([t["reconstruction"] for t in terms]).mean()),
        "kl": float(torch.cat([t["kl"] for t in terms]).mean()),
        "nll": nll,  # null for a Delta guide, which has no IW bound
        "num_samples": args.num_samples,
        "num_points": n,
        "split": args.split,
        "point_estimate": ll is None,  # a Delta guide: elbo reads log p(x|z*) + log p(z*)
    }
    elbo = torch.cat([t["elbo"] for t in terms])  # (N,)
    path = args.run_dir / "eval.json"
    write_json(path, result)  # the ELBO and NLL are kept whatever the diagnostics do
    failed: dict[str, str] = {}
    if ll is None:  # the diagnostics need a guide with a density
        result["diagnostics_skipped"] = "a Delta guide has no density"
    else:
        result.update(
            diagnose(
                vae,
                x,
                idx.tolist(),
                elbo,
                ll,
                labels=labels[0] if labels else None,
                psis_samples=args.psis_samples,
                gaps=args.gaps,
                mcmc=args.mcmc,
                mcmc_samples=args.mcmc_samples,
                plots_dir=args.run_dir / "plots",
                mcmc_path=args.run_dir / "mcmc.nc",
                save=lambda partial: write_json(path, {**result, **partial}),
                strict=args.debug,
            )
        )
        failed = result.get("diagnostic_errors", {})
    write_json(path, result)
    print(
        _table(
            f"{args.split} split, {n} points, nats per data point",
            [
                *_term_rows(result["elbo"], result["reconstruction"], result["kl"], ll is None),
                (
                    "NLL",
                    math.nan if nll is None else nll,
                    f"-log p(x), IW bound with k={args.num_samples}"
                    if nll is not None
                    else "not defined: a Delta guide is a point estimate",
                ),
                *_diagnostic_rows(result),
            ],
        )
    )
    print(f"wrote {path}")
    for name, message in failed.items():
        print(
            f"pyro-vae: error: the {name} diagnostic failed ({message}); eval.json holds "
            "every other figure (run with --debug for the traceback)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _diagnostic_rows(result: dict[str, Any]) -> list[tuple[str, float, str]]:
    if "diagnostics_skipped" in result:
        return []
    rows: list[tuple[str, float, str]] = []
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


def _log_px(vae: VAE, x: torch.Tensor, labels: tuple[Any, ...], k: int) -> torch.Tensor | None:
    """Per-point IW estimate of log p(x), or None for a guide without a density (Delta)."""
    try:
        return log_likelihood(vae.model, vae.guide, x, *labels, num_samples=k, progress=True)
    except PointEstimateError:
        return None


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "components": cmd_components,
    "compare": cmd_compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-vae`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    A user's error (bad input, data, config or checkpoint) prints ``pyro-vae: error: ...``
    in flags (:func:`~pyro_vae.cli.messages.to_flags`) and returns 2; ``--debug`` lets the
    traceback through instead. An interrupt returns 130 and says how to continue.
    """
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # said by the command's parser, whose --help lists its flags
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        for plugin in args.plugin:
            load_plugin(plugin)
        with notices():
            return COMMANDS[args.command](args)
    except TrainingInterrupted as e:
        said = f"interrupted; {_resume_hint(args)}" if args.command == "compare" else _said(e)
        print(f"\npyro-vae: {said}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        # outside the training loop (loading, the final summary, plots): every finished
        # epoch is already checkpointed
        print(f"\npyro-vae: interrupted; {_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug or not is_user_error(e):
            raise
        print(f"pyro-vae: error: {error_message(e)}", file=sys.stderr)
        return 2


def _said(e: TrainingInterrupted) -> str:
    """The library's report of an interrupted run in flags; its ``Continue with`` call
    becomes the command to type (``Continue with pyro-vae train --resume RUN_DIR``)."""
    said = to_flags(str(e))
    return re.sub(r"\b(Continue with:?) --resume\b", r"\1 pyro-vae train --resume", said)


def _resume_hint(args: argparse.Namespace) -> str:
    if args.command == "compare":
        out = getattr(args, "train.out", None) or TrainConfig().out
        return (
            f"every run's last checkpoint in {out} is kept. Run the same "
            "pyro-vae compare command again to continue where it stopped."
        )
    if args.command == "evaluate":
        return (
            "the run itself is unchanged; eval.json holds the figures finished so far, if "
            "any. Run the same command again to score it."
        )
    if args.command != "train":
        return "nothing was changed."
    run = args.resume if isinstance(args.resume, str) else getattr(args, "train.out", None)
    run = run or TrainConfig().out
    return f"the last checkpoint in {run} is kept. Continue with: pyro-vae train --resume {run}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
