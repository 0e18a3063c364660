"""What the command line prints when something goes wrong, in the flags the user typed.

The library speaks Python: its messages name config fields and arguments, never flags.
:func:`to_flags` is the one place that turns that wording back into flags, and the CLI
runs every library message it prints (errors, notes, progress lines, help texts) through it.

The translation rules (anything else is left exactly as it is):

1. **A field.** ``VAEConfig.NAME``, ``TrainConfig.NAME``, ``EvaluateConfig.NAME`` or
   ``SampleConfig.NAME`` (optionally written ``pyro_vae.TrainConfig.NAME``), where ``NAME``
   is a field that has a flag, becomes ``--NAME`` with ``_`` written ``-``:
   ``TrainConfig.batch_size`` -> ``--batch-size``. Fields set from the data set
   (``data_shape``, ``num_classes``) and unknown names are left alone.
2. **A call**, written as Python (it is parsed with :mod:`ast`; one that does not parse, or
   holds an argument the rule below does not cover, is left alone):

   - ``VAEConfig(NAME=VALUE, ...)`` and the other three configs: each keyword becomes
     ``--NAME VALUE`` (``VAEConfig(likelihood='normal')`` -> ``--likelihood normal``,
     ``VAEConfig(conditional=True)`` -> ``--conditional true``). Positional arguments are
     not allowed.
   - ``fit(..., resume=True)`` -> ``--resume``; ``fit(resume_config(RUN_DIR, NAME=VALUE),
     resume=True)`` -> ``--resume RUN_DIR --NAME VALUE``. Other positional arguments
     (``...``, ``config``) are dropped; any keyword but ``resume=True`` leaves it alone.
     ``fit()``, ``fit(...)`` or ``fit(config)`` (a new run, no keyword) -> ``pyro-vae train``,
     and ``fit() with VAEConfig(...)`` (or ``TrainConfig(...)``) -> ``pyro-vae train
     --NAME VALUE``: ``fit() with TrainConfig(dataset='mnist')`` -> ``pyro-vae train
     --dataset mnist``.
   - ``load_plugin(FILE)`` -> ``--plugin FILE``.
   - ``load(RUN_DIR, plugins=[A, B])`` -> ``--plugin A --plugin B`` (positional arguments
     dropped; without ``plugins=`` it is left alone).
   - ``evaluate_run(..., NAME=VALUE)`` for the arguments in :data:`EVALUATE_ARGUMENTS`
     -> ``--NAME VALUE`` (positional arguments dropped).

   A ``VALUE`` is written as a flag's value: a string without its quotes (quoted for a
   shell only where it holds a space or the like: ``shlex.quote``), ``True``/``False`` as
   ``true``/``false``, a number as itself, a tuple or list as ``a,b``, and a bare name
   (a placeholder such as ``FILE`` or ``N``) as itself. ``None`` leaves the call alone.
3. **An argument that opens the message.** A message whose first words are names in
   :data:`EVALUATE_ARGUMENTS`, joined by ``, ``, `` and `` or `` or `` (``num_points must
   be ...``, ``gaps and mcmc can use ...``), gets those names as flags (``--num-points
   must be ...``, ``--gaps and --mcmc can use ...``). Only the very start of the text
   counts, and a name followed by ``(``, ``.``, ``=``, ``[`` or a word character is not an
   argument.

The CLI's own check of a setting (:class:`~pyro_vae.config.ConfigError` with ``field``) is
reworded before this runs (``--latent-dim 0: latent_dim must be ...``; see
:mod:`pyro_vae.cli.settings`), so a field name inside such a sentence stays as it is.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import re
import shlex
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from pyro_vae.checks import is_number
from pyro_vae.config import ConfigError, EvaluateConfig, SampleConfig, TrainConfig, VAEConfig
from pyro_vae.data import DataError
from pyro_vae.models import SupportError
from pyro_vae.plugins import PluginError
from pyro_vae.registry import SpecError, is_size_overflow
from pyro_vae.training.checkpoint import CheckpointError
from pyro_vae.training.distributed import DistributedError
from pyro_vae.training.fit import TrainingError, TrainingNotice

__all__ = [
    "CONFIG_CLASSES",
    "EVALUATE_ARGUMENTS",
    "NOT_FLAGS",
    "USER_ERRORS",
    "UsageError",
    "error_message",
    "flag",
    "is_oom",
    "is_user_error",
    "notices",
    "to_flags",
]

# Fields set from the data set, or by another setting (semi_supervised: TrainConfig.labelled,
# --labelled N), not by the user: they have no flag.
NOT_FLAGS = frozenset({"data_shape", "num_classes", "semi_supervised"})

# The configs whose fields are flags (train: VAEConfig and TrainConfig; evaluate and sample).
CONFIG_CLASSES: dict[str, type] = {
    "VAEConfig": VAEConfig,
    "TrainConfig": TrainConfig,
    "EvaluateConfig": EvaluateConfig,
    "SampleConfig": SampleConfig,
}

# The arguments of pyro_vae.analysis.evaluate.evaluate_run that are evaluate's flags.
EVALUATE_ARGUMENTS = (
    "num_points",
    "num_samples",
    "psis_samples",
    "gaps",
    "mcmc",
    "mcmc_samples",
    "split",
    "dataset",
    "seed",
    "device",
)


class UsageError(ValueError):
    """A command-line value that this command cannot use; the message names the flag."""


def flag(name: str) -> str:
    """The flag of a field or argument: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _flag_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - NOT_FLAGS


_CLASSES = "|".join(CONFIG_CLASSES)
_FIELD = re.compile(rf"(?<![\w.])(?:pyro_vae\.)?({_CLASSES})\.([A-Za-z_]\w*)")
_CALL = re.compile(rf"(?<![\w.])(?:pyro_vae\.)?({_CLASSES}|fit|load_plugin|load|evaluate_run)\(")
_ARGS = "|".join(EVALUATE_ARGUMENTS)
_OPENING = re.compile(
    rf"^(\s*)((?:{_ARGS})(?:(?:, | and | or |, and |, or )(?:{_ARGS}))*)(?![\w(.=\[])"
)
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def to_flags(text: str) -> str:
    """``text`` with the library's Python wording of settings as flags (the module's rules).

    >>> from pyro_vae.cli.messages import to_flags
    >>> to_flags("TrainConfig.batch_size is the global batch")
    '--batch-size is the global batch'
    >>> to_flags("use VAEConfig(likelihood='normal'), or pass fit(..., resume=True)")
    'use --likelihood normal, or pass --resume'
    """
    text = _FIELD.sub(_field_flag, text)
    text = _translate_calls(text)
    text = re.sub(r"pyro-vae train with (?=--[a-z])", "pyro-vae train ", text)  # fit() with
    return _OPENING.sub(_opening_flags, text, count=1)


def _field_flag(match: re.Match[str]) -> str:
    cls, name = CONFIG_CLASSES[match.group(1)], match.group(2)
    return flag(name) if name in _flag_fields(cls) else match.group(0)


def _opening_flags(match: re.Match[str]) -> str:
    names = re.sub(rf"\b({_ARGS})\b", lambda m: flag(m.group(1)), match.group(2))
    return match.group(1) + names


def _translate_calls(text: str) -> str:
    """Every call of rule 2, from left to right; a call left alone is searched inside."""
    out, pos = [], 0
    while (match := _CALL.search(text, pos)) is not None:
        end = _closing(text, match.end() - 1)
        flags = None if end is None else _call_flags(text[match.start(1) : end + 1])
        if end is None or flags is None:
            out.append(text[pos : match.end()])
            pos = match.end()
        else:
            out.append(text[pos : match.start()] + flags)
            pos = end + 1
    return "".join(out) + text[pos:]


def _closing(text: str, start: int) -> int | None:
    """The index of the bracket that closes ``text[start]``, skipping quoted strings."""
    stack, quote, i = [_CLOSE[text[start]]], None, start + 1
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in _CLOSE:
            stack.append(_CLOSE[c])
        elif c in ")]}":
            if c != stack.pop():
                return None
            if not stack:
                return i
        i += 1
    return None


def _call_flags(source: str) -> str | None:
    """The flags of one call (rule 2), or None to leave it as written."""
    try:
        call = ast.parse(source, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        return None
    name, keywords = call.func.id, {k.arg: k.value for k in call.keywords}
    if None in keywords:  # **kwargs
        return None
    if name in CONFIG_CLASSES:
        return None if call.args else _keyword_flags(keywords, _flag_fields(CONFIG_CLASSES[name]))
    if name == "fit":
        return _fit_flags(call.args, keywords)
    if name == "load_plugin":
        value = _value(call.args[0]) if len(call.args) == 1 and not keywords else None
        return None if value is None else f"--plugin {value}"
    if name == "load":
        return _plugin_flags(keywords)
    return _keyword_flags(keywords, set(EVALUATE_ARGUMENTS)) if keywords else None


def _keyword_flags(keywords: dict[str | None, ast.expr], allowed: set[str]) -> str | None:
    """``--NAME VALUE`` for each keyword, or None if one is not allowed or not a value."""
    parts = []
    for name, node in keywords.items():
        value = _value(node)
        if name not in allowed or value is None:
            return None
        parts.append(f"{flag(name)} {value}")
    return " ".join(parts) or None


def _fit_flags(args: list[ast.expr], keywords: dict[str | None, ast.expr]) -> str | None:
    if not keywords and all(isinstance(a, (ast.Name, ast.Constant)) for a in args):
        return "pyro-vae train"  # a new run
    resume = keywords.get("resume")
    resumes = isinstance(resume, ast.Constant) and resume.value is True
    if set(keywords) != {"resume"} or not resumes:
        return None
    parts = ["--resume"]
    for arg in args:
        if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name):
            if arg.func.id != "resume_config" or len(arg.args) != 1:
                return None
            run_dir = _value(arg.args[0])
            fields = _flag_fields(VAEConfig) | _flag_fields(TrainConfig)
            changes = _keyword_flags({k.arg: k.value for k in arg.keywords}, fields)
            if run_dir is None or (arg.keywords and changes is None):
                return None
            parts += [run_dir, *([changes] if changes else [])]
        elif not isinstance(arg, (ast.Name, ast.Constant)):
            return None
    return " ".join(parts)


def _plugin_flags(keywords: dict[str | None, ast.expr]) -> str | None:
    files = keywords.get("plugins")
    if set(keywords) != {"plugins"} or not isinstance(files, (ast.List, ast.Tuple)):
        return None
    values = [_value(node) for node in files.elts]
    if not values or None in values:
        return None
    return " ".join(f"--plugin {v}" for v in values)


def _value(node: ast.expr) -> str | None:
    """A Python argument as a flag's value (the module's rules); None if it has none."""
    raw = _raw(node)
    return None if raw is None else shlex.quote(raw)


def _raw(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):  # a placeholder: FILE, RUN_DIR, N
        return node.id
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_raw(e) for e in node.elts]
        return None if None in items else ",".join(map(str, items))
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) or is_number(value):
        return str(value)
    return None


# -- errors --------------------------------------------------------------------------------

# The errors a user can cause and fix; anything else is a bug and keeps its traceback
# (out-of-memory errors, which torch raises as RuntimeError, count as the user's: is_oom,
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
# Our own errors, whose message is printed as it is (others get their type in front).
_OWN_ERRORS = (
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
_OOM = re.compile(r"out of memory|can't allocate memory|not enough memory", re.IGNORECASE)


def is_user_error(e: BaseException) -> bool:
    """An error the user caused and can fix: one paragraph, not a traceback."""
    return isinstance(e, USER_ERRORS) or is_oom(e) or is_size_overflow(e)


def is_oom(e: BaseException) -> bool:
    """Out of host or device memory (torch raises some of these as ``RuntimeError``)."""
    oom = getattr(torch, "OutOfMemoryError", MemoryError)
    return isinstance(e, (MemoryError, oom)) or (
        isinstance(e, RuntimeError) and bool(_OOM.search(str(e)))
    )


def error_message(e: BaseException, limit: int = 1200) -> str:
    """One paragraph, in flags: our own errors as they are, others with their type, cut to
    ``limit`` characters, and how to see the traceback."""
    if is_size_overflow(e):  # sizes whose product torch cannot even compute
        text = (
            f"the model (or a batch) is too large: {_first_line(e)}. Lower the sizes that make "
            "it: --latent-dim, --hidden, --upper-latent-dims, --upper-hidden, a component's "
            "size parameter (e.g. --guide iaf:hidden=N, --prior vamp:components=N), an "
            "objective's k, or --batch-size (for a saved run, the same settings in its "
            "config.json)."
        )
    elif is_oom(e):
        text = (
            f"ran out of memory ({_first_line(e)}). The model and a batch must fit in memory: "
            "lower --batch-size or --hidden (or a component's size), or use a larger device."
        )
    else:
        said = to_flags(str(e))
        text = said if isinstance(e, _OWN_ERRORS) else f"{type(e).__name__}: {said}"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text + "\n(run with --debug for the traceback)"


def _first_line(e: BaseException) -> str:
    said = to_flags(str(e)).strip()
    return said.splitlines()[0] if said else type(e).__name__


@contextlib.contextmanager
def notices() -> Iterator[None]:
    """Print :class:`~pyro_vae.training.fit.TrainingNotice` warnings as ``pyro-vae: note:
    ...``, in flags; other warnings as Python shows them."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", TrainingNotice)
        show = warnings.showwarning

        def note(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
            if issubclass(category, TrainingNotice):
                print(f"pyro-vae: note: {to_flags(str(message))}", file=sys.stderr)
            else:
                show(message, category, *rest, **kw)

        warnings.showwarning = note
        yield
