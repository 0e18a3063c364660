"""``pyro-vae sample`` (images of p(x|z), z ~ p(z), of a trained run; rows of a table run) and
``pyro-vae components`` (the registered parts, from the registries themselves)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from pyro_vae.analysis import plots
from pyro_vae.cli.messages import UsageError
from pyro_vae.components import component_names, describe
from pyro_vae.data import TableSchema, decode_table
from pyro_vae.training.checkpoint import check_run_dir, load, load_config
from pyro_vae.training.fit import check_run_paths
from pyro_vae.training.lock import run_lock
from pyro_vae.vae import VAE

__all__ = ["cmd_components", "cmd_sample"]


def cmd_sample(args: argparse.Namespace) -> int:
    """Draw ``--num`` images from the run's model; write a grid (.png) or an array (.npy)."""
    if args.num < 1:
        raise UsageError(f"--num must be a positive int, got {args.num}")
    out = args.out or args.run_dir / "samples.png"
    if out.suffix not in (".png", ".npy", ".csv"):
        raise UsageError(
            f"--out must end in .png (a grid of the images), .npy (the array) or .csv (rows of "
            f"a table run), got {str(out)!r}"
        )
    if out.suffix == ".csv":
        return _sample_table(args, out)
    if args.out is None:
        check_run_dir(args.run_dir)
        check_run_paths(args.run_dir)
    if not out.resolve().is_relative_to(args.run_dir.resolve()):
        return _sample(args, out)  # a reader: it changes nothing in the run
    load_config(args.run_dir)  # a run, before its lock is taken
    with run_lock(args.run_dir):  # a file written into the run: a writer of it
        return _sample(args, out)


def _sample(args: argparse.Namespace, out: Path) -> int:
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


def _sample_table(args: argparse.Namespace, out: Path) -> int:
    """``--out FILE.csv``: synthetic rows of a table run, drawn x ~ p(x|z), every cell filled."""
    if not (args.run_dir / "schema.json").is_file():
        raise UsageError(
            f"--out {out}: the run in {str(args.run_dir)!r} was not trained on a table (it has "
            "no schema.json), so it has no columns to write. Use --out FILE.png or FILE.npy."
        )
    schema = TableSchema.load(args.run_dir)
    vae = load(args.run_dir)
    torch.manual_seed(args.seed)
    rows = vae.sample(args.num, draw=True)  # (num, width): draws, indicators all 1
    decode_table(schema, rows).to_csv(out, index=False)
    print(
        f"wrote {args.num} synthetic rows to {out} (columns {', '.join(schema.names)}; "
        "draws of p(x|z), z ~ p(z); no missing cells: missingness is not modelled)"
    )
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
    """Print every registered component (``--json``: their names only)."""
    if args.json:
        print(json.dumps(component_names()))
    else:
        print(describe(), end="")
    return 0
