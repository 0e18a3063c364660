"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``sample`` and ``components``.

Every ``train`` flag is generated from a field of :class:`~pyro_vae.config.VAEConfig` or
:class:`~pyro_vae.config.TrainConfig`, with that field's default and comment as its help,
so the dataclasses stay the one source of defaults. Flags override ``--config FILE.toml``,
which overrides the defaults. Known failures print one paragraph and exit non-zero;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from pyro_vae.analysis import plots
from pyro_vae.analysis.compare import compare, split_specs
from pyro_vae.analysis.diagnostics import check_inference_gaps
from pyro_vae.analysis.report import check_settings, diagnose
from pyro_vae.cli import codec
from pyro_vae.components import component_names, describe
from pyro_vae.config import (
    ConfigError,
    EvaluateConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    VAEConfig,
    from_dict,
    load_toml_sections,
    resolve_binarize,
)
from pyro_vae.data import DataError, load_dataset
from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.infer.importance import PointEstimateError, log_likelihood
from pyro_vae.models import SupportError
from pyro_vae.plugins import PluginError, load_plugin
from pyro_vae.registry import SpecError, is_size_overflow
from pyro_vae.training.checkpoint import (
    CheckpointError,
    check_run_dir,
    load,
    load_config,
    write_json,
)
from pyro_vae.training.distributed import DistributedError
from pyro_vae.training.fit import (
    TrainingError,
    TrainingInterrupted,
    TrainingNotice,
    check_run_paths,
    evaluation_split,
    fit,
    resolve_device,
    resume_config,
    split_labels,
)
from pyro_vae.vae import VAE

__all__ = ["build_parser", "main"]

# The errors a user can cause and fix; anything else is a bug and keeps its traceback
# (out-of-memory errors, which torch raises as RuntimeError, count as the user's: _is_oom,
# and so do sizes too large for torch to compute: is_size_overflow).
USER_ERRORS = (
    ValueError,
    TypeError,
    TrainingError,
    CheckpointError,
    OSError,
    MemoryError,
    DistributedError,
)
_OOM = re.compile(r"out of memory|can't allocate memory|not enough memory", re.IGNORECASE)

_NOT_FLAGS = {"data_shape", "num_classes"}  # set from the data set, not by the user


class UsageError(ValueError):
    """A command-line value that this command cannot use; the message names the flag."""


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one paragraph, not a usage block, and exit with 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` and where the flags are described; exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n(run {self.prog} --help for the flags)\n")


def _field_help(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the dataclass source."""
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+): [^=]+= .*?#\s*(.+)$", source, flags=re.M))


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def _add_config_flags(parser: argparse.ArgumentParser, cls: type, section: str) -> None:
    helps = _field_help(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in _NOT_FLAGS:
            continue
        default = getattr(defaults, f.name)
        kind: Any = _parse_ints if isinstance(default, tuple) else type(default)
        kind = _parse_bool if isinstance(default, bool) else kind
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"{section}.{f.name}",
            type=kind,
            default=None,
            metavar=f.name.upper(),
            help=f"{helps.get(f.name, '')} (default: {shown})",
        )


def _add_default_flag(
    parser: argparse.ArgumentParser,
    name: str,
    helps: dict[str, str],
    defaults: object,
    extra: dict[str, Any],
) -> None:
    """``--name`` with its default and help taken from a config dataclass's field."""
    default = getattr(defaults, name)
    parser.add_argument(
        "--" + name.replace("_", "-"),
        default=default,
        help=helps.get(name, "") + ("" if default is None else f" (default: {default})"),
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-vae`` parser: the commands train, evaluate, compare, sample and components."""
    parser = _Parser(prog="pyro-vae", description="Variational autoencoders as Pyro programs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a VAE and write a run directory")
    train.add_argument(
        "--config",
        type=Path,
        help="a TOML file with [vae] and [train] tables, or a run (RUN_DIR or its config.json) "
        "to train again (its out is ignored: the new run goes to --out)",
    )
    _add_config_flags(train, VAEConfig, "vae")
    _add_config_flags(train, TrainConfig, "train")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR (default: --out) from its last checkpoint",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="score a trained run; writes RUN_DIR/eval.json")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument(
        "--dataset",
        default=None,
        help="score on this data set (NAME|PATH) of the same shape (default: the run's)",
    )
    ev_help, ev_default = _field_help(EvaluateConfig), EvaluateConfig()
    for flag, extra in (
        ("split", {"choices": ("test", "valid")}),
        ("num_samples", {"type": int}),
        ("num_points", {"type": int}),
        ("seed", {"type": int}),
        ("device", {}),
        ("psis_samples", {"type": int}),
        ("gaps", {"type": int, "metavar": "N"}),
        ("mcmc", {"type": int, "metavar": "N"}),
        ("mcmc_samples", {"type": int}),
    ):
        _add_default_flag(ev, flag, ev_help, ev_default, extra)

    cp = sub.add_parser("compare", help="train and score objectives over seeds; compare.md")
    cp.add_argument("--objectives", required=True, help="specs, e.g. elbo,iwae:k=5,iwae:k=50")
    cp.add_argument("--seeds", type=int, default=3, help="runs per objective, seeds --seed, ...")
    cp.epilog = (
        "The table's IW NLL uses k = 5000 draws (evaluate's default) unless --eval-num-samples "
        "or a --config file sets k."
    )
    cp.add_argument(
        "--config",
        type=Path,
        help="a TOML file with [vae] and [train] tables, or a run (RUN_DIR or its config.json)",
    )
    _add_config_flags(cp, VAEConfig, "vae")
    _add_config_flags(cp, TrainConfig, "train")
    cp.add_argument("--quiet", action="store_true", help="no progress bars")

    sa = sub.add_parser("sample", help="images of p(x|z), z ~ p(z), of a trained run")
    sa.add_argument("run_dir", type=Path)
    sa_help, sa_default = _field_help(SampleConfig), SampleConfig()
    for flag, extra in (("num", {"type": int}), ("seed", {"type": int}), ("label", {"type": int})):
        _add_default_flag(sa, flag, sa_help, sa_default, extra)
    sa.add_argument("--draw", action="store_true", help=sa_help["draw"])
    sa.add_argument(
        "--out",
        type=Path,
        default=None,
        help="FILE.png (a grid) or FILE.npy (default: RUN_DIR/samples.png)",
    )

    co = sub.add_parser("components", help="list the registered priors, likelihoods, ...")
    co.add_argument("--json", action="store_true", help="names only, as one JSON object")
    codecs = codec.add_parsers(sub)  # compress, decompress
    for p in (train, ev, sa, co, cp, *codecs):
        p.add_argument(
            "--plugin",
            action="append",
            type=Path,
            default=[],
            metavar="FILE.py",
            help="import your own components from FILE.py first (repeatable; runs its code)",
        )
    for p in (
        train,
        ev,
        sa,
        co,
        cp,
        *codecs,
    ):  # --debug also after the command; SUPPRESS keeps the top value
        p.set_defaults(command_parser=p)  # reports flags it does not know (main)
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks on errors",
        )
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--config``, then flags given on the command line.

    The layers are merged as unresolved sections and the :class:`RunConfig` is built once,
    from the result, so ``--binarize auto`` is settled by the final likelihood (a flag's
    over the file's over the default's); an explicit ``binarize`` in any layer wins.
    """
    base_vae, base_train = (
        _config_file(args.config) if args.config else (VAEConfig(), TrainConfig())
    )
    sections: dict[str, dict[str, Any]] = {"vae": {}, "train": {}}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            sections[section][name] = value
    with _naming_flags({**sections["vae"], **sections["train"]}, args.command):
        vae = from_dict(VAEConfig, {**dataclasses.asdict(base_vae), **sections["vae"]}, "vae")
        train = {**dataclasses.asdict(base_train), **sections["train"]}
        return RunConfig(vae=vae, train=from_dict(TrainConfig, train, "train"))


@contextlib.contextmanager
def _naming_flags(given: dict[str, Any], command: str) -> Iterator[None]:
    """A setting's check that refused a value given as a flag says so: ``--latent-dim 0:``.

    ``given`` maps the field names of the flags on the command line to their values; the
    check's message (``vae: latent_dim must be a positive int, got 0``) gets the flag as
    typed, and what to do, instead of its section.
    """
    try:
        yield
    except ConfigError as e:
        if e.field not in given:
            raise
        flag = "--" + e.field.replace("_", "-")
        value = given[e.field]
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        text = re.sub(r"^(vae|train): ", "", str(e)).rstrip(".")
        raise ConfigError(
            f"{flag} {shown}: {text}. Pass {flag} a valid value, or leave it out (pyro-vae "
            f"{command} --help describes each flag and its default).",
            field=e.field,
        ) from None


def _config_file(path: Path) -> tuple[VAEConfig, TrainConfig]:
    """``--config``: a TOML file, or a run (its directory or ``config.json``) to rebuild.

    The sections come back unresolved (see :func:`run_config`). A saved run records the
    ``binarize`` it used; where that is what ``auto`` gives for its likelihood, it reads
    as ``auto`` again, so ``--config RUN --likelihood normal`` does not binarize. A run's
    ``train.out`` (its own directory, or whatever a foreign config.json says) is ignored:
    the new run goes to ``--out``, or the default.
    """
    if path.is_dir() or path.suffix == ".json":
        directory = path if path.is_dir() else path.parent
        if not path.is_dir() and path.name != "config.json":
            raise ConfigError(
                f"--config {str(path)!r}: a JSON config must be a run's config.json (or pass "
                "the run directory); other settings files are TOML."
            )
        _, raw = load_config(directory)
        sections = {k: raw[k] for k in ("vae", "train") if isinstance(raw.get(k), dict)}
        saved = from_dict(RunConfig, sections, where=str(directory / "config.json"))
        auto = resolve_binarize("auto", saved.vae.likelihood) == saved.train.binarize
        train = dataclasses.replace(saved.train, binarize="auto") if auto else saved.train
        return saved.vae, dataclasses.replace(train, out=TrainConfig().out)
    return load_toml_sections(path)


def resume_run_config(args: argparse.Namespace) -> RunConfig:
    """``--resume [RUN_DIR]``: the run's saved config with the flags given on the command line.

    ``fit`` then refuses any flag that would change a setting other than those in
    :data:`pyro_vae.training.fit.RESUME_OVERRIDES`.
    """
    out = getattr(args, "train.out")
    if isinstance(args.resume, str) and out is not None and Path(out) != Path(args.resume):
        raise ConfigError(
            f"--resume {args.resume} and --out {out} name different run directories. Give the "
            "run directory once: pyro-vae train --resume RUN_DIR."
        )
    if args.config is not None:
        raise ConfigError(
            "--config cannot be combined with --resume: a resumed run keeps the settings saved "
            "in its config.json. Drop --config (flags such as --epochs still apply)."
        )
    run_dir = args.resume if isinstance(args.resume, str) else out or TrainConfig().out
    changes = {
        key.split(".", 1)[1]: value
        for key, value in vars(args).items()
        if "." in key and value is not None and key != "train.out"
    }
    with _naming_flags(changes, args.command):
        return resume_config(run_dir, **changes)


def cmd_train(args: argparse.Namespace) -> int:
    config = resume_run_config(args) if args.resume else run_config(args)
    tc = config.train
    main_rank = os.environ.get("RANK", "0") in ("", "0")  # under torchrun only rank 0 reports
    if main_rank:
        print(f"pyro-vae train: {tc.dataset} -> {tc.out}  (device {resolve_device(tc.device)})")
    result = fit(config, resume=bool(args.resume), progress=not args.quiet)
    if result.rank != 0:
        return 0
    s = result.summary
    rows = _term_rows(s["test_elbo"], s["test_reconstruction"], s["test_kl"], _is_point(s))
    if "test_nll" in s:
        k, n = s["nll_num_samples"], s["nll_num_points"]
        rows.append(("NLL", s["test_nll"], f"-log p(x), IW k={k}, {n} points"))
    print(_table("test split, nats per data point", rows))
    _note_skipped(s, result.config.train)
    paths = plots.plot_run(result) if result.run_dir is not None else []
    print(f"run directory: {result.run_dir}  (plots: {', '.join(p.name for p in paths)})")
    return 0


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


def cmd_sample(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise UsageError(f"--num must be a positive int, got {args.num}")
    out = args.out or args.run_dir / "samples.png"
    if out.suffix not in (".png", ".npy"):
        raise UsageError(f"--out must end in .png or .npy, got {str(out)!r}")
    if args.out is None:
        check_run_dir(args.run_dir)
        check_run_paths(args.run_dir)
    vae = load(args.run_dir)
    _check_label(vae, args.label, args.run_dir)
    torch.manual_seed(args.seed)
    images = vae.sample(args.num, label=args.label, draw=args.draw)  # (num, *data_shape)
    if out.suffix == ".npy":
        np.save(out, images.numpy())
    else:
        plots.samples(images, out, title=_samples_title(vae, args.label, args.draw))
    print(f"wrote {args.num} samples to {out}")
    return 0


def _check_label(vae: VAE, label: int | None, run_dir: Path) -> None:
    """``--label K``: a class of a conditional run, 0 <= K < C."""
    classes = vae.model.num_classes
    if label is None:
        return
    if not classes:
        raise UsageError(
            f"--label {label}: the run in {str(run_dir)!r} is not conditional (it was trained "
            "without --conditional true), so it draws from p(x|z) and takes no label. Drop "
            "--label, or train a conditional VAE with --conditional true."
        )
    if not 0 <= label < classes:
        raise UsageError(
            f"--label must be a class in 0..{classes - 1} for the run in {str(run_dir)!r} "
            f"({classes} classes), got {label}"
        )


def _samples_title(vae: VAE, label: int | None, draw: bool) -> str:
    """What the grid shows: means or draws of p(x|z) or p(x|z, y), z ~ p(z)."""
    conditional = vae.model.num_classes > 0
    given = "z" if not conditional else "z, y" if label is None else f"z, y={label}"
    what = "draws x ~" if draw else "means of"
    classes = ", y = 0, 1, ... in turn" if conditional and label is None else ""
    return f"{what} p(x|{given}), z ~ p(z){classes}"


def cmd_components(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(component_names()))
    else:
        print(describe(), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if getattr(args, "train.objective") is not None:
        raise UsageError("compare takes --objectives (a list), not --objective")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be a positive int, got {args.seeds}")
    config = run_config(args)
    if getattr(args, "train.eval_num_samples") is None and args.config is None:
        # a report's IW NLL: k = 5000 unless --eval-num-samples (or --config) says otherwise
        train = dataclasses.replace(config.train, eval_num_samples=EvaluateConfig().num_samples)
        config = dataclasses.replace(config, train=train)
    seeds = list(range(config.train.seed, config.train.seed + args.seeds))
    out = Path(config.train.out)
    compare(split_specs(args.objectives), seeds, config, out, progress=not args.quiet, log=print)
    print((out / "compare.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "components": cmd_components,
    "compare": cmd_compare,
    "compress": codec.cmd_compress,
    "decompress": codec.cmd_decompress,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-vae`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    A user's error (bad input, data, config or checkpoint) prints ``pyro-vae: error: ...``
    and returns 2; ``--debug`` lets the traceback through instead.
    """
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # said by the command's parser, whose --help lists its flags
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        for plugin in args.plugin:
            load_plugin(plugin)
        with _notices():
            return COMMANDS[args.command](args)
    except TrainingInterrupted as e:
        said = f"interrupted; {_resume_hint(args)}" if args.command == "compare" else str(e)
        print(f"\npyro-vae: {said}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        # outside the training loop (loading, the final summary, plots): every finished
        # epoch is already checkpointed
        print(f"\npyro-vae: interrupted; {_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug or not _is_user_error(e):
            raise
        print(f"pyro-vae: error: {_message(e)}", file=sys.stderr)
        return 2


def _is_user_error(e: BaseException) -> bool:
    return isinstance(e, USER_ERRORS) or _is_oom(e) or is_size_overflow(e)


def _is_oom(e: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", MemoryError)
    return isinstance(e, (MemoryError, oom)) or (
        isinstance(e, RuntimeError) and bool(_OOM.search(str(e)))
    )


@contextlib.contextmanager
def _notices() -> Iterator[None]:
    """Print :class:`~pyro_vae.training.fit.TrainingNotice` warnings as ``pyro-vae: note: ...``."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", TrainingNotice)
        show = warnings.showwarning

        def note(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
            if issubclass(category, TrainingNotice):
                print(f"pyro-vae: note: {message}", file=sys.stderr)
            else:
                show(message, category, *rest, **kw)

        warnings.showwarning = note
        yield


def _resume_hint(args: argparse.Namespace) -> str:
    if args.command == "compare":
        out = getattr(args, "train.out", None) or TrainConfig().out
        return (
            f"every run's last checkpoint in {out} is kept. Run the same "
            "pyro-vae compare command again to continue where it stopped."
        )
    if args.command != "train":
        return "nothing was changed."
    run = args.resume if isinstance(args.resume, str) else getattr(args, "train.out", None)
    run = run or TrainConfig().out
    return f"the last checkpoint in {run} is kept. Continue with: pyro-vae train --resume {run}"


def _message(e: BaseException, limit: int = 1200) -> str:
    """One paragraph: our own errors as they are, others with their type, cut to ``limit``."""
    kinds = (
        UsageError,
        DataError,
        ConfigError,
        SpecError,
        CheckpointError,
        TrainingError,
        PluginError,
        SupportError,
        DistributedError,
    )
    if is_size_overflow(e):  # sizes whose product torch cannot even compute
        text = (
            f"the model (or a batch) is too large: {_first_line(e)}. Lower the sizes that make "
            "it: --latent-dim, --hidden, --upper-latent-dims, --upper-hidden, a component's "
            "size parameter (e.g. --guide iaf:hidden=N, --prior vamp:components=N), an "
            "objective's k, or --batch-size (for a saved run, the same settings in its "
            "config.json)."
        )
    elif _is_oom(e):
        text = (
            f"ran out of memory ({_first_line(e)}). The model and a batch must fit in memory: "
            "lower --batch-size or --hidden (or a component's size), or use a larger device."
        )
    else:
        text = str(e) if isinstance(e, kinds) else f"{type(e).__name__}: {e}"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text + "\n(run with --debug for the traceback)"


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
