"""The ``pyro-vae`` parser: its commands, their flags, and the types of the flags' values.

Every ``train`` (and ``compare``) flag is generated from a field of
:class:`~pyro_vae.config.VAEConfig` or :class:`~pyro_vae.config.TrainConfig`, with that
field's default and comment as its help, so the dataclasses stay the one source of
defaults; ``evaluate`` and ``sample`` take theirs from :class:`~pyro_vae.config.EvaluateConfig`
and :class:`~pyro_vae.config.SampleConfig`. The help says what each flag takes: ``true`` or
``false``, a comma-separated list, one of a few words, or a component spec whose registered
names it lists (``pyro-vae components`` describes their parameters).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from pyro_vae.cli import codec
from pyro_vae.cli.messages import NOT_FLAGS, flag, to_flags
from pyro_vae.components import REGISTRIES
from pyro_vae.config import EvaluateConfig, SampleConfig, TrainConfig, VAEConfig
from pyro_vae.nn import ACTIVATIONS

__all__ = ["COMPONENT_FIELDS", "build_parser", "field_help", "parse_bool", "parse_ints"]

# The config fields that hold a component spec, and the key of their registry in REGISTRIES.
COMPONENT_FIELDS = {
    "prior": "priors",
    "likelihood": "likelihoods",
    "guide": "guides",
    "network": "networks",
    "objective": "objectives",
}
_COMMANDS = (
    "train",
    "evaluate",
    "compare",
    "sample",
    "impute",
    "components",
    "compress",
    "decompress",
)


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one paragraph, not a usage block, and exit with 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` and where the flags are described; exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n(run {self.prog} --help for the flags)\n")


class _Formatter(argparse.HelpFormatter):
    """Lines broken between words only, never inside ``pyro-vae`` or ``--eval-num-samples``."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )


def field_help(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the dataclass source, in flags."""
    source = inspect.getsource(cls)
    return {
        name: to_flags(text)
        for name, text in re.findall(r"^\s+(\w+): [^=]+= .*?#\s*(.+)$", source, flags=re.M)
    }


def parse_bool(text: str) -> bool:
    """A flag's ``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``)."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_ints(text: str) -> tuple[int, ...]:
    """A flag's comma-separated ints, ``200,200``; ``''`` is the empty tuple."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None


def parse_labelled(text: str) -> int | str:
    """``--labelled``'s value: ``all`` or a positive number of labelled points."""
    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int or all, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int or all, got {text!r}")
    return value


def _shown(default: Any) -> str:
    """A default as it is typed: ``false``, ``200,200``, and an empty list as ``none``."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return ",".join(map(str, default)) if default else "none, written ''"
    if default == "":
        return "none"  # an empty string: not set (TrainConfig.schema: types inferred)
    return str(default)


def _words(help_text: str) -> list[str] | None:
    """The valid words a comment starts with, ``auto | none | dynamic: ...``, if it does."""
    match = re.match(r"([\w:+-]+(?: \| [\w:+-]+)+)", help_text)
    return None if match is None else match.group(1).rstrip(":").split(" | ")


def _kind(name: str, default: Any, help_text: str) -> tuple[Any, str, str]:
    """The type of a field's flag, its metavar, and what its help adds to the comment."""
    if isinstance(default, bool):
        return parse_bool, "{true,false}", ""
    if isinstance(default, tuple):
        return parse_ints, "N,N,...", ""
    if name in COMPONENT_FIELDS:
        names = ", ".join(REGISTRIES[COMPONENT_FIELDS[name]].names())
        extra = (
            f"; a spec NAME or NAME:KEY=VALUE,...; NAME one of {names} (pyro-vae components "
            "lists them with their parameters)"
        )
        return type(default), "SPEC", extra
    if name == "labelled":
        return parse_labelled, "{N,all}", ""
    if name == "alpha":
        return float, "ALPHA", ""
    if name == "activation":
        return str, "NAME", f"; one of {', '.join(sorted(ACTIVATIONS))}"
    words = _words(help_text)
    if words:
        return type(default), "{" + ",".join(words) + "}", ""
    metavar = re.match(r"([A-Z][A-Z_]*): ", help_text)  # a comment naming its value: "N: ..."
    return type(default), metavar.group(1) if metavar else name.upper(), ""


def _add_config_flags(parser: argparse.ArgumentParser, cls: type, section: str) -> None:
    helps, defaults = field_help(cls), cls()
    for f in dataclasses.fields(cls):
        if f.name in NOT_FLAGS:
            continue
        default, text = getattr(defaults, f.name), helps.get(f.name, "")
        text = re.sub(r";? *all: pyro-vae components$", "", text)  # the help says more below
        kind, metavar, extra = _kind(f.name, default, text)
        parser.add_argument(
            flag(f.name),
            dest=f"{section}.{f.name}",
            type=kind,
            default=None,
            metavar=metavar,
            help=f"{text}{extra} (default: {_shown(default)})",
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
        flag(name),
        default=default,
        help=helps.get(name, "") + ("" if default is None else f" (default: {default})"),
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-vae`` parser: train, evaluate, compare, sample, components, compress and
    decompress."""
    parser = _Parser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro programs.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "train": _train(sub),
        "evaluate": _evaluate(sub),
        "compare": _compare(sub),
        "sample": _sample(sub),
        "impute": _impute(sub),
        "components": sub.add_parser(
            "components",
            help="list the registered priors, likelihoods, ...",
            formatter_class=_Formatter,
        ),
    }
    commands["components"].add_argument(
        "--json", action="store_true", help="names only, as one JSON object"
    )
    commands.update(zip(("compress", "decompress"), codec.add_parsers(sub), strict=True))
    for command in _COMMANDS:
        _add_common_flags(commands[command])
    return parser


def _add_common_flags(p: argparse.ArgumentParser) -> None:
    """``--plugin`` and ``--debug``, which every command takes."""
    p.add_argument(
        "--plugin",
        action="append",
        type=Path,
        default=[],
        metavar="FILE.py",
        help="import your own components from FILE.py first (repeatable; runs its code)",
    )
    p.set_defaults(command_parser=p)  # reports flags it does not know (main)
    # --debug also after the command; SUPPRESS keeps the value given before it
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )


def _train(sub: Any) -> argparse.ArgumentParser:
    train = sub.add_parser(
        "train", help="train a VAE and write a run directory", formatter_class=_Formatter
    )
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
    return train  # type: ignore[no-any-return]


def _evaluate(sub: Any) -> argparse.ArgumentParser:
    ev = sub.add_parser(
        "evaluate", help="score a trained run; writes RUN_DIR/eval.json", formatter_class=_Formatter
    )
    ev.add_argument("run_dir", type=Path)
    ev.add_argument(
        "--dataset",
        default=None,
        help="score on this data set (NAME|PATH) of the same shape (default: the run's)",
    )
    helps, defaults = field_help(EvaluateConfig), EvaluateConfig()
    for name, extra in (
        ("split", {"choices": ("test", "valid")}),
        ("num_samples", {"type": int}),
        ("num_points", {"type": int}),
        ("seed", {"type": int}),
        ("device", {"metavar": "{auto,cpu,cuda,cuda:N}"}),
        ("psis_samples", {"type": int}),
        ("gaps", {"type": int, "metavar": "N"}),
        ("mcmc", {"type": int, "metavar": "N"}),
        ("mcmc_samples", {"type": int}),
    ):
        _add_default_flag(ev, name, helps, defaults, extra)
    return ev  # type: ignore[no-any-return]


def _compare(sub: Any) -> argparse.ArgumentParser:
    cp = sub.add_parser(
        "compare",
        help="train and score objectives over seeds; compare.md",
        formatter_class=_Formatter,
    )
    objectives = ", ".join(REGISTRIES["objectives"].names())
    cp.add_argument(
        "--objectives",
        required=True,
        metavar="SPEC,SPEC,...",
        help=f"objective specs, e.g. elbo,iwae:k=5,iwae:k=50; NAME one of {objectives} "
        "(pyro-vae components lists them with their parameters)",
    )
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
    return cp  # type: ignore[no-any-return]


def _sample(sub: Any) -> argparse.ArgumentParser:
    sa = sub.add_parser(
        "sample", help="images of p(x|z), z ~ p(z), of a trained run", formatter_class=_Formatter
    )
    sa.add_argument("run_dir", type=Path)
    helps, defaults = field_help(SampleConfig), SampleConfig()
    for name, extra in (("num", {"type": int}), ("seed", {"type": int}), ("label", {"type": int})):
        _add_default_flag(sa, name, helps, defaults, extra)
    sa.add_argument("--draw", action="store_true", help=helps["draw"])
    sa.add_argument(
        "--out",
        type=Path,
        default=None,
        help="FILE.png (a grid), FILE.npy (the array) or, for a table run, FILE.csv (synthetic "
        "rows, drawn x ~ p(x|z)) (default: RUN_DIR/samples.png)",
    )
    return sa  # type: ignore[no-any-return]


def _impute(sub: Any) -> argparse.ArgumentParser:
    im = sub.add_parser(
        "impute",
        help="fill the empty cells of a CSV table with a table run (MIWAE)",
        formatter_class=_Formatter,
    )
    im.add_argument("run_dir", type=Path)
    im.add_argument("--data", type=Path, required=True, help="the incomplete table, FILE.csv")
    im.add_argument("--out", type=Path, required=True, help="the filled table, FILE.csv")
    im.add_argument(
        "--draws",
        type=int,
        default=None,
        metavar="M",
        help="write M tables drawn for multiple imputation, FILE_1.csv ... FILE_M.csv "
        "(default: one table of conditional means and modes)",
    )
    im.add_argument(
        "--num-samples", type=int, default=100, help="draws of z per row (default: 100)"
    )
    im.add_argument("--seed", type=int, default=0, help="seeds the draws (default: 0)")
    return im  # type: ignore[no-any-return]
