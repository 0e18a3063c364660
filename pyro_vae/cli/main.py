"""The ``pyro-vae`` command line: ``main`` runs one command and turns errors into paragraphs.

The commands live beside this module: :mod:`~pyro_vae.cli.train` (``train``, ``compare``),
:mod:`~pyro_vae.cli.evaluate` (``evaluate``), :mod:`~pyro_vae.cli.sample` (``sample``,
``components``), :mod:`~pyro_vae.cli.impute` (``impute``).
:mod:`~pyro_vae.cli.parser` builds the flags, :mod:`~pyro_vae.cli.settings` turns them into
a config, and :mod:`~pyro_vae.cli.messages` prints what went wrong in the flags the user
typed (``to_flags``). Known failures print one paragraph and exit 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Sequence

from pyro_vae.analysis.evaluate import subset as subset  # where benchmarks and tests import it
from pyro_vae.cli import codec
from pyro_vae.cli.evaluate import cmd_evaluate
from pyro_vae.cli.impute import cmd_impute
from pyro_vae.cli.messages import UsageError, error_message, is_user_error, notices, to_flags
from pyro_vae.cli.parser import build_parser
from pyro_vae.cli.sample import cmd_components, cmd_sample
from pyro_vae.cli.settings import resume_run_config, run_config
from pyro_vae.cli.train import cmd_compare, cmd_train
from pyro_vae.config import TrainConfig
from pyro_vae.plugins import load_plugin
from pyro_vae.training.checkpoint import DiskFullError, is_disk_full
from pyro_vae.training.fit import (
    TrainingInterrupted,
)
from pyro_vae.training.lock import naming_command
from pyro_vae.training.runstate import last_checkpoint

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


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "impute": cmd_impute,
    "components": cmd_components,
    "compare": cmd_compare,
    "compress": codec.cmd_compress,
    "decompress": codec.cmd_decompress,
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
    typed = shlex.join(["pyro-vae", *(sys.argv[1:] if argv is None else argv)])
    try:
        for plugin in args.plugin:
            load_plugin(plugin)
        with notices(), naming_command(typed):  # a run's lock names the command typed
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
        text = _disk_full(e, args) if is_disk_full(e) else error_message(e)
        print(f"pyro-vae: error: {text}", file=sys.stderr)
        return 2


def _said(e: TrainingInterrupted) -> str:
    """The library's report of an interrupted run in flags; its ``Continue with`` call
    becomes the command to type (``Continue with pyro-vae train --resume RUN_DIR``)."""
    said = to_flags(str(e))
    return re.sub(r"\b(Continue with:?) --resume\b", r"\1 pyro-vae train --resume", said)


def _disk_full(e: BaseException, args: argparse.Namespace) -> str:
    """A full disk in one paragraph: the file, its size, the run's last checkpoint and the
    command that continues once space is freed (never a bare ``OSError``)."""
    assert isinstance(e, OSError)
    if not isinstance(e, DiskFullError):  # written by another library (a plot, an array)
        e = DiskFullError(e.filename or "a file", 0, e.errno or 28)
    resume = f"pyro-vae train --resume {e.run_dir}"
    if args.command == "train" and e.run_dir is None:  # after fit: its plots
        run = args.resume if isinstance(args.resume, str) else getattr(args, "train.out", None)
        run = run or TrainConfig().out
        e.in_run(run, last_checkpoint(run))
        resume = f"pyro-vae train --resume {run}"
    elif args.command == "compare":
        resume = f"the same pyro-vae compare command (or pyro-vae train --resume {e.run_dir})"
    text = " ".join(e.describe(resume).split())
    return text + "\n(run with --debug for the traceback)"


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
