"""The ``pyro-vae`` command line: ``train``, ``evaluate`` and ``sample``.

Every ``train`` flag is generated from a field of :class:`~pyro_vae.config.VAEConfig` or
:class:`~pyro_vae.config.TrainConfig`, with that field's default and comment as its help,
so the dataclasses stay the one source of defaults. Flags override ``--config FILE.toml``,
which overrides the defaults. Known failures print one paragraph and exit non-zero;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae import plots
from pyro_vae.checkpoint import CheckpointError, load, load_config, write_json
from pyro_vae.compare import compare, split_specs
from pyro_vae.config import ConfigError, RunConfig, TrainConfig, VAEConfig, from_dict, load_toml
from pyro_vae.data import DataError, load_dataset
from pyro_vae.decomposition import elbo_terms
from pyro_vae.evaluate import log_likelihood
from pyro_vae.registry import SpecError
from pyro_vae.report import diagnose
from pyro_vae.train import TrainingError, evaluation_split, fit, resolve_device

__all__ = ["build_parser", "main"]

# The errors a user can cause and fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, TrainingError, CheckpointError, OSError)

_NOT_FLAGS = {"data_shape"}  # set from the data set, not by the user


def _field_help(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the dataclass source."""
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+): [^=]+= .*?#\s*(.+)$", source, flags=re.M))


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
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"{section}.{f.name}",
            type=kind,
            default=None,
            metavar=f.name.upper(),
            help=f"{helps.get(f.name, '')} (default: {shown})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-vae", description="Variational autoencoders as Pyro programs."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a VAE and write a run directory")
    train.add_argument("--config", type=Path, help="a TOML file with [vae] and [train] tables")
    _add_config_flags(train, VAEConfig, "vae")
    _add_config_flags(train, TrainConfig, "train")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="score a trained run; writes RUN_DIR/eval.json")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument("--split", choices=("test", "valid"), default="test")
    ev.add_argument("--num-samples", type=int, default=5000, help="k of the IW bound")
    ev.add_argument(
        "--num-points",
        type=int,
        default=None,
        help="score a seeded random subset of N points (default: all)",
    )
    ev.add_argument("--seed", type=int, default=0, help="seeds the subset and the guide's noise")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--psis-samples", type=int, default=1000, help="draws per point for PSIS k-hat")
    ev.add_argument(
        "--gaps",
        type=int,
        default=0,
        metavar="N",
        help="inference gaps on N points (eval.json gaps)",
    )
    ev.add_argument(
        "--mcmc",
        type=int,
        default=0,
        metavar="N",
        help="NUTS on p(z|x) for N points (eval.json mcmc)",
    )

    ev.add_argument(
        "--mcmc-samples", type=int, default=200, help="NUTS draws (and warm-up) per chain"
    )

    co = sub.add_parser("compare", help="train and score objectives over seeds; compare.md")
    co.add_argument("--objectives", required=True, help="specs, e.g. elbo,iwae:k=5,iwae:k=50")
    co.add_argument("--seeds", type=int, default=3, help="runs per objective, seeds --seed, ...")
    co.add_argument("--config", type=Path, help="a TOML file with [vae] and [train] tables")
    _add_config_flags(co, VAEConfig, "vae")
    _add_config_flags(co, TrainConfig, "train")
    co.add_argument("--quiet", action="store_true", help="no progress bars")

    sa = sub.add_parser("sample", help="draw x from p(x|z)p(z) of a trained run")
    sa.add_argument("run_dir", type=Path)
    sa.add_argument("--num", type=int, default=100)
    sa.add_argument(
        "--out",
        type=Path,
        default=None,
        help="FILE.png (a grid) or FILE.npy (default: RUN_DIR/samples.png)",
    )
    sa.add_argument("--seed", type=int, default=0)
    for p in (train, ev, sa, co):  # --debug also after the command; SUPPRESS keeps the top value
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show tracebacks on errors",
        )
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--config``, then flags given on the command line."""
    base = load_toml(args.config) if args.config else RunConfig()
    sections: dict[str, dict[str, Any]] = {"vae": {}, "train": {}}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            sections[section][name] = value
    vae = from_dict(VAEConfig, {**dataclasses.asdict(base.vae), **sections["vae"]}, "vae")
    train = from_dict(TrainConfig, {**dataclasses.asdict(base.train), **sections["train"]}, "train")
    return RunConfig(vae=vae, train=train)


def cmd_train(args: argparse.Namespace) -> int:
    config = run_config(args)
    tc = config.train
    print(f"pyro-vae train: {tc.dataset} -> {tc.out}  (device {resolve_device(tc.device)})")
    result = fit(config, resume=args.resume, progress=not args.quiet)
    s = result.summary
    print(
        _table(
            "test split, nats per data point",
            [
                ("ELBO", s["test_elbo"], ""),
                ("reconstruction", s["test_reconstruction"], "E_q[log p(x|z)]"),
                ("KL", s["test_kl"], "KL(q(z|x) || p(z))"),
                (
                    "NLL",
                    s.get("test_nll", float("nan")),
                    f"-log p(x), IW k={s.get('nll_num_samples')}, {s.get('nll_num_points')} points",
                ),
            ],
        )
    )
    paths = _run_plots(result.run_dir, result)
    print(f"run directory: {result.run_dir}  (plots: {', '.join(p.name for p in paths)})")
    return 0


def _run_plots(run_dir: Path | None, result: Any) -> list[Path]:
    if run_dir is None:
        return []
    vae, tc = result.vae, result.config.train
    dataset = load_dataset(tc.dataset, progress=False)
    device = next(vae.parameters()).device
    x = evaluation_split(dataset, "test", tc.binarize)[:10].to(device)
    return plots.write_run_plots(
        run_dir,
        history=result.history,
        originals=x,
        recons=vae.reconstruct(x),
        sample_images=vae.sample(100),
    )


def _table(title: str, rows: Sequence[tuple[str, float, str]]) -> str:
    lines = [title] + [f"  {name:<16}{value:>10.3f}   {note}" for name, value, note in rows]
    return "\n".join(lines)


def subset(total: int, n: int, seed: int) -> torch.Tensor:
    """Indices of a seeded random subset of ``n`` of ``total`` rows (never just the first n)."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


def cmd_evaluate(args: argparse.Namespace) -> int:
    _, raw = load_config(args.run_dir)
    train = from_dict(TrainConfig, raw.get("train", {}), "config.json train")
    device = resolve_device(args.device)
    vae = load(args.run_dir, map_location=device)
    x = evaluation_split(load_dataset(train.dataset, progress=False), args.split, train.binarize)
    n = x.shape[0] if args.num_points is None else args.num_points
    if not 0 < n <= x.shape[0]:
        raise ValueError(f"--num-points must be in 1..{x.shape[0]} for this split, got {n}")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be a positive int, got {args.num_samples}")
    ids = subset(x.shape[0], n, args.seed)
    x = x[ids].to(device)
    vae.check_data(x)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        terms = [elbo_terms(vae.model, vae.guide, xb) for xb in x.split(1000)]
        ll = log_likelihood(vae.model, vae.guide, x, num_samples=args.num_samples)
    result = {
        "elbo": float(torch.cat([t["elbo"] for t in terms]).mean()),
        "reconstruction": float(torch.cat([t["reconstruction"] for t in terms]).mean()),
        "kl": float(torch.cat([t["kl"] for t in terms]).mean()),
        "nll": -float(ll.mean()),
        "num_samples": args.num_samples,
        "num_points": n,
        "split": args.split,
    }
    elbo = torch.cat([t["elbo"] for t in terms])  # (N,)
    result.update(
        diagnose(
            vae,
            x,
            ids.tolist(),
            elbo,
            ll,
            psis_samples=args.psis_samples,
            gaps=args.gaps,
            mcmc=args.mcmc,
            mcmc_samples=args.mcmc_samples,
            plots_dir=args.run_dir / "plots",
        )
    )
    write_json(args.run_dir / "eval.json", result)
    print(
        _table(
            f"{args.split} split, {n} points, nats per data point",
            [
                ("ELBO", result["elbo"], ""),
                ("reconstruction", result["reconstruction"], "E_q[log p(x|z)]"),
                ("KL", result["kl"], "KL(q(z|x) || p(z))"),
                ("NLL", result["nll"], f"-log p(x), IW bound with k={args.num_samples}"),
                ("active units", result["active_units"], "Cov_x E_q[z_j] > 0.01"),
                ("I(x; z)", result["mutual_information"] or math.nan, "under q, Hoffman & Johnson"),
                ("PSIS k-hat", result["psis_khat"]["mean"], "mean over points"),
                ("k-hat > 0.7", result["psis_khat"]["frac_above_0.7"], "fraction of points"),
            ],
        )
    )
    print(f"wrote {args.run_dir / 'eval.json'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise ValueError(f"--num must be a positive int, got {args.num}")
    out = args.out or args.run_dir / "samples.png"
    if out.suffix not in (".png", ".npy"):
        raise ValueError(f"--out must end in .png or .npy, got {str(out)!r}")
    vae = load(args.run_dir)
    torch.manual_seed(args.seed)
    images = vae.sample(args.num)  # (num, *data_shape)
    if out.suffix == ".npy":
        np.save(out, images.numpy())
    else:
        plots.samples(images, out)
    print(f"wrote {args.num} samples to {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if getattr(args, "train.objective") is not None:
        raise ValueError("compare takes --objectives (a list), not --objective")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be a positive int, got {args.seeds}")
    config = run_config(args)
    seeds = list(range(config.train.seed, config.train.seed + args.seeds))
    out = Path(config.train.out)
    compare(split_specs(args.objectives), seeds, config, out, progress=not args.quiet, log=print)
    print((out / "compare.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample}
COMMANDS["compare"] = cmd_compare


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(
            "\npyro-vae: interrupted; the last finished epoch's checkpoint is kept "
            "(continue with --resume).",
            file=sys.stderr,
        )
        return 130
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"pyro-vae: error: {_message(e)}", file=sys.stderr)
        return 2


def _message(e: BaseException) -> str:
    kinds = (DataError, ConfigError, SpecError, CheckpointError, TrainingError)
    text = str(e) if isinstance(e, kinds) else f"{type(e).__name__}: {e}"
    return text + "\n(run with --debug for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
