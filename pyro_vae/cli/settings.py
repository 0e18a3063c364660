"""From flags to a :class:`~pyro_vae.config.RunConfig`: defaults, then ``--config``, then flags.

``train`` and ``compare`` build their config here; ``train --resume`` starts from the run's
saved config instead. A setting's own check that refuses a value given as a flag names the
flag as typed (``--latent-dim 0: latent_dim must be a positive int, got 0. Pass ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyro_vae.cli.messages import flag
from pyro_vae.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    VAEConfig,
    from_dict,
    load_toml_sections,
    resolve_binarize,
)
from pyro_vae.training.checkpoint import load_config
from pyro_vae.training.fit import resume_config

__all__ = ["config_file", "naming_flags", "resume_run_config", "run_config"]


def _given(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The config flags on the command line, by section: ``{"vae": {...}, "train": {...}}``."""
    sections: dict[str, dict[str, Any]] = {"vae": {}, "train": {}}
    for key, value in vars(args).items():
        if "." in key and value is not None and key not in skip:
            section, name = key.split(".", 1)
            sections[section][name] = value
    return sections


def run_config(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--config``, then flags given on the command line.

    The layers are merged as unresolved sections and the :class:`RunConfig` is built once,
    from the result, so ``--binarize auto`` is settled by the final likelihood (a flag's
    over the file's over the default's); an explicit ``binarize`` in any layer wins.
    """
    base_vae, base_train = config_file(args.config) if args.config else (VAEConfig(), TrainConfig())
    sections = _given(args)
    with naming_flags({**sections["vae"], **sections["train"]}, args.command):
        vae = from_dict(VAEConfig, {**dataclasses.asdict(base_vae), **sections["vae"]}, "vae")
        train = {**dataclasses.asdict(base_train), **sections["train"]}
        return RunConfig(vae=vae, train=from_dict(TrainConfig, train, "train"))


@contextlib.contextmanager
def naming_flags(given: dict[str, Any], command: str) -> Iterator[None]:
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
        name = flag(e.field)
        value = given[e.field]
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        text = re.sub(r"^(vae|train): ", "", str(e)).rstrip(".")
        raise ConfigError(
            f"{name} {shown}: {text}. Pass {name} a valid value, or leave it out (pyro-vae "
            f"{command} --help describes each flag and its default).",
            field=e.field,
        ) from None


def config_file(path: Path) -> tuple[VAEConfig, TrainConfig]:
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
    sections = _given(args, skip=("train.out",))
    changes = {**sections["vae"], **sections["train"]}
    with naming_flags(changes, args.command):
        return resume_config(run_dir, **changes)
