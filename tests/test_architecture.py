"""The layout stays true: the layering and rules of CONVENTIONS.md (issue 12), read from the
source with :mod:`ast` over ``pyro_vae/``, ``models/`` and ``guides/``.

- Imports only go down. Nothing under ``models/``, ``guides/`` or ``pyro_vae/infer`` (nor
  the core modules, ``pyro_vae/*.py``) imports ``training``, ``analysis`` or ``cli``;
  ``training`` imports neither ``analysis`` nor ``cli``; ``analysis`` does not import
  ``cli``; ``data`` imports nothing of ``pyro_vae`` but ``pyro_vae.checks``. Imports inside
  functions and under ``TYPE_CHECKING`` count too. The public API (``pyro_vae/__init__.py``)
  may import anything, and ``pyro_vae/__main__.py`` runs the command line.
- Only ``cli/`` knows about flags: no other module has a string (docstrings and comments
  aside) that names a flag (``--batch-size``) or a command (``pyro-vae train``).
- No private (``_underscore``) name is imported from a module of another subpackage.
- No module is over :data:`MAX_LINES` lines, but for those in :data:`LONG_MODULES`.

Each checker takes the root of a tree, so the tests at the end run them on small fake
trees that break one rule each, to see every rule fail.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
# A module allowed over MAX_LINES, with the reason (none today: split a module instead).
LONG_MODULES: dict[str, str] = {}
SUBPACKAGES = ("models", "guides", "infer", "analysis", "training", "data", "cli", "compression")
# The layers each part must not import.
FORBIDDEN = {
    "core": ("training", "analysis", "cli"),
    "models": ("training", "analysis", "cli"),
    "guides": ("training", "analysis", "cli"),
    "infer": ("training", "analysis", "cli"),
    "training": ("analysis", "cli"),
    "analysis": ("cli",),
    "compression": ("training", "analysis", "cli"),  # a use of a trained VAE (issue 15)
}
DATA_MAY_IMPORT = ("pyro_vae.checks",)
COMMANDS = (
    "train",
    "evaluate",
    "compare",
    "sample",
    "impute",
    "components",
    "compress",
    "decompress",
)
FLAG = re.compile(rf"(?<![\w-])--[a-z][a-z-]+|\bpyro-vae (?:{'|'.join(COMMANDS)})\b")


@dataclass(frozen=True)
class Module:
    """A source file: its dotted name, its path from the root, its text and its tree."""

    name: str
    path: str
    text: str
    tree: ast.Module

    @property
    def part(self) -> str:
        """``models``, ..., ``cli``; ``core`` for ``pyro_vae/*.py``; ``api`` for the package."""
        return part_of(self.name)

    @property
    def is_package(self) -> bool:
        return self.path.endswith("__init__.py")


def part_of(name: str) -> str:
    parts = name.split(".")
    if parts[0] != "pyro_vae":
        return "external"
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":
        return "cli"  # python -m pyro_vae: the command line
    return parts[1] if parts[1] in SUBPACKAGES else "core"


def modules(root: Path) -> list[Module]:
    """Every ``.py`` file of ``pyro_vae/``, ``models/`` and ``guides/`` under ``root``.

    ``models/`` and ``guides/`` are ``pyro_vae.models`` and ``pyro_vae.guides``; links (a
    worktree's ``pyro_vae/models -> ../models``) are not followed, so nothing counts twice.
    """
    found = []
    for top, prefix in (("pyro_vae", ()), ("models", ("models",)), ("guides", ("guides",))):
        base = root / top
        for folder, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            rel = Path(folder).relative_to(base).parts
            if top == "pyro_vae" and rel[:1] in (("models",), ("guides",)):
                continue  # pyro_vae/models is models/ (a link, or a copy)
            for file in sorted(f for f in files if f.endswith(".py")):
                path = Path(folder) / file
                stem = () if file == "__init__.py" else (file[:-3],)
                name = ".".join(("pyro_vae", *prefix, *rel, *stem))
                text = path.read_text(encoding="utf-8")
                tree = ast.parse(text, filename=str(path))
                found.append(Module(name, path.relative_to(root).as_posix(), text, tree))
    return found


def imports(module: Module, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module name)`` of every import, relative ones resolved; ``from P import N``
    counts as importing ``P.N`` where that is a module in ``known``, else ``P``."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
    return found


def layering_violations(root: Path) -> list[str]:
    """Imports that go up (or, from ``data``, anywhere in pyro_vae but the checks)."""
    mods = modules(root)
    known = {m.name for m in mods}
    bad = []
    for m in mods:
        for line, target in imports(m, known):
            where = f"{m.path}:{line} imports {target}"
            if m.part == "data":
                inside = target == "pyro_vae.data" or target.startswith("pyro_vae.data.")
                if part_of(target) != "external" and not inside and target not in DATA_MAY_IMPORT:
                    bad.append(f"{where} (data imports nothing of pyro_vae but checks)")
            elif part_of(target) in FORBIDDEN.get(m.part, ()) or (
                part_of(target) == "api" and m.part in FORBIDDEN
            ):
                bad.append(f"{where} ({m.part} may not import {part_of(target)})")
    return bad


def _documentation(tree: ast.AST) -> set[int]:
    """The ids of string constants that are documentation: docstrings, and any other string
    standing alone as a statement (attribute docstrings)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def flag_violations(root: Path) -> list[str]:
    """Strings outside ``cli/`` (docstrings and comments aside) that name a flag or command."""
    bad = []
    for m in modules(root):
        if m.part == "cli":
            continue
        docs = _documentation(m.tree)
        strings = [
            node
            for node in ast.walk(m.tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
        ]
        for node in strings:
            for found in FLAG.findall(str(node.value)):
                said = f"{m.path}:{node.lineno} names {found!r}"
                bad += [] if said in bad else [said]
    return bad


def private_import_violations(root: Path) -> list[str]:
    """``from pyro_vae.X import _name`` where X is another subpackage than the importer's."""
    bad = []
    for m in modules(root):
        package = m.name if m.is_package else m.name.rpartition(".")[0]
        for node in ast.walk(m.tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and part_of(base) != "external" and _group(base) != _group(m.name):
                    bad.append(f"{m.path}:{node.lineno} imports {alias.name} from {base}")
    return bad


def _group(name: str) -> str:
    """The subpackage a module belongs to; the core modules and the package are one."""
    part = part_of(name)
    return "pyro_vae" if part in ("core", "api") else part


def long_modules(root: Path) -> list[str]:
    """Modules over :data:`MAX_LINES` lines that :data:`LONG_MODULES` does not list."""
    return [
        f"{m.path}: {len(m.text.splitlines())} lines"
        for m in modules(root)
        if len(m.text.splitlines()) > MAX_LINES and m.path not in LONG_MODULES
    ]


# -- the rules, on this repository -------------------------------------------------------------


def test_the_tree_is_read() -> None:
    names = {m.name for m in modules(ROOT)}
    assert {"pyro_vae", "pyro_vae.models", "pyro_vae.guides", "pyro_vae.cli.main"} <= names
    assert {"pyro_vae.models.priors", "pyro_vae.infer.objectives"} <= names
    assert len(names) == len(modules(ROOT))  # nothing twice


def test_imports_only_go_down() -> None:
    assert layering_violations(ROOT) == []


def test_only_the_command_line_names_flags() -> None:
    assert flag_violations(ROOT) == []


def test_no_private_name_is_imported_across_subpackages() -> None:
    assert private_import_violations(ROOT) == []


def test_no_module_is_over_400_lines() -> None:
    assert long_modules(ROOT) == []
    for path, reason in LONG_MODULES.items():  # an exception names a module that is long
        assert (ROOT / path).is_file() and reason
        assert len((ROOT / path).read_text(encoding="utf-8").splitlines()) > MAX_LINES


def test_the_commands_are_those_of_the_command_line() -> None:
    from pyro_vae.cli import COMMANDS as CLI_COMMANDS

    assert set(COMMANDS) == set(CLI_COMMANDS)


# -- each rule fails on a tree that breaks it ----------------------------------------------------

CLEAN = {
    "pyro_vae/__init__.py": "from pyro_vae.training.fit import fit\nfrom pyro_vae import _compat\n",
    "pyro_vae/__main__.py": "from pyro_vae.cli import main\n",
    "pyro_vae/_compat.py": '"""Old paths: pyro_vae.train."""\n',
    "pyro_vae/checks.py": "def is_int(v):\n    return True\n",
    "pyro_vae/config.py": "from pyro_vae.checks import is_int\nfrom pyro_vae._compat import x\n",
    "pyro_vae/vae.py": (
        "from pyro_vae.models import model\nfrom pyro_vae.guides.guide import Guide\n"
    ),
    "pyro_vae/data/__init__.py": "from pyro_vae.data.datasets import load\n",
    "pyro_vae/data/datasets.py": (
        "import numpy\nfrom pyro_vae.checks import is_int\nfrom . import _helpers\n"
        "from ._helpers import _private\n"
    ),
    "pyro_vae/data/_helpers.py": "_private = 1\n",
    "pyro_vae/infer/__init__.py": "",
    "pyro_vae/infer/sites.py": (
        "from pyro_vae.vae import VAE\nfrom pyro_vae.models.model import Model\n"
    ),
    "pyro_vae/training/__init__.py": "",
    "pyro_vae/training/fit.py": (
        '"""Train: pyro-vae train --batch-size 10 calls this."""\n'
        "from pyro_vae.infer import sites\nfrom pyro_vae.data import load\n"
        "from .runstate import _State\n\n\n"
        "def fit():\n"
        '    """Like --resume."""\n'
        '    x = 1\n    """an attribute docstring: --out"""\n'
        '    raise ValueError(f"TrainConfig.batch_size {x} must be - at least --")\n'
    ),
    "pyro_vae/training/runstate.py": "_State = 1  # --resume in a comment\n",
    "pyro_vae/analysis/__init__.py": "from pyro_vae.training import fit\n",
    "pyro_vae/cli/__init__.py": "from pyro_vae.cli.main import main\n",
    "pyro_vae/cli/main.py": (
        "import pyro_vae\nfrom pyro_vae.analysis import plots\n"
        "from pyro_vae.training.fit import x\n"
        'HELP = "pyro-vae train --batch-size N"\n'
    ),
    "models/__init__.py": "from pyro_vae.models.model import Model\nfrom .priors import _check\n",
    "models/model.py": "from pyro_vae._naming import site\nfrom pyro_vae.config import C\n",
    "models/priors.py": "_check = 1\n",
    "guides/__init__.py": "",
    "guides/guide.py": "from pyro_vae.models.priors import Prior\n",
}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root


CHECKERS = {
    "layering": layering_violations,
    "flags": flag_violations,
    "private": private_import_violations,
    "long": long_modules,
}


def test_a_clean_tree_passes_every_rule(tmp_path: Path) -> None:
    root = _tree(tmp_path, CLEAN)
    assert len(modules(root)) == len(CLEAN)
    for check in CHECKERS.values():
        assert check(root) == []


def test_links_into_models_are_not_read_twice(tmp_path: Path) -> None:
    root = _tree(tmp_path, CLEAN)
    (root / "pyro_vae/models").symlink_to("../models")
    assert len(modules(root)) == len(CLEAN)
    (root / "pyro_vae/models").unlink()
    _tree(root, {"pyro_vae/models/__init__.py": "import pyro_vae.cli\n"})  # a copy
    assert len(modules(root)) == len(CLEAN) and layering_violations(root) == []


BROKEN = [
    # imports that go up, from each part, in every spelling
    (
        "layering",
        "models/likelihoods.py",
        "from pyro_vae.training.fit import fit\n",
        "models may not import training",
    ),
    (
        "layering",
        "models/likelihoods.py",
        "import pyro_vae.analysis.plots\n",
        "models may not import analysis",
    ),
    ("layering", "guides/kl.py", "from pyro_vae.cli import main\n", "guides may not import cli"),
    (
        "layering",
        "guides/kl.py",
        "from pyro_vae import training\n",
        "guides may not import training",
    ),
    (
        "layering",
        "pyro_vae/infer/sites.py",
        "def f():\n    from pyro_vae.analysis import report\n",
        "infer may not import analysis",
    ),
    (
        "layering",
        "pyro_vae/infer/sites.py",
        "from ..training import fit\n",
        "infer may not import training",
    ),
    (
        "layering",
        "pyro_vae/infer/sites.py",
        "from pyro_vae import fit\n",
        "infer may not import api",
    ),
    (
        "layering",
        "pyro_vae/infer/sites.py",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pyro_vae.cli.main import main\n",
        "infer may not import cli",
    ),
    (
        "layering",
        "pyro_vae/components.py",
        "from pyro_vae.training.fit import fit\n",
        "core may not import training",
    ),
    (
        "layering",
        "pyro_vae/training/fit.py",
        "from pyro_vae.analysis import plots\n",
        "training may not import analysis",
    ),
    (
        "layering",
        "pyro_vae/training/fit.py",
        "from pyro_vae.cli.messages import to_flags\n",
        "training may not import cli",
    ),
    (
        "layering",
        "pyro_vae/analysis/report.py",
        "from pyro_vae.cli import main\n",
        "analysis may not import cli",
    ),
    (
        "layering",
        "pyro_vae/data/datasets.py",
        "from pyro_vae.config import TrainConfig\n",
        "data imports nothing",
    ),
    (
        "layering",
        "pyro_vae/data/datasets.py",
        "from pyro_vae import registry\n",
        "data imports nothing",
    ),
    ("layering", "pyro_vae/data/datasets.py", "import pyro_vae\n", "data imports nothing"),
    ("layering", "pyro_vae/data/datasets.py", "from .. import config\n", "data imports nothing"),
    # flags and commands in strings outside cli/
    ("flags", "pyro_vae/training/fit.py", 'X = "pass --batch-size 10"\n', "'--batch-size'"),
    (
        "flags",
        "pyro_vae/training/fit.py",
        'def f(n):\n    raise ValueError(f"--resume {n}")\n',
        "'--resume'",
    ),
    (
        "flags",
        "pyro_vae/data/datasets.py",
        "X = 'e.g. env -u X pyro-vae train'\n",
        "'pyro-vae train'",
    ),
    (
        "flags",
        "models/likelihoods.py",
        'X = ("use "\n     "--likelihood normal")\n',
        "'--likelihood'",
    ),
    (
        "flags",
        "pyro_vae/analysis/report.py",
        'X = ["pyro-vae components"]\n',
        "'pyro-vae components'",
    ),
    ("flags", "pyro_vae/__init__.py", 'X = {"a": "--out"}\n', "'--out'"),
    # private names across subpackages
    (
        "private",
        "pyro_vae/cli/main.py",
        "from pyro_vae.training.fit import _prepare\n",
        "imports _prepare from pyro_vae.training.fit",
    ),
    (
        "private",
        "pyro_vae/analysis/plots.py",
        "from pyro_vae.training import _loop\n",
        "imports _loop from pyro_vae.training",
    ),
    (
        "private",
        "models/priors.py",
        "from pyro_vae.guides.posteriors import _check_min_scale\n",
        "imports _check_min_scale",
    ),
    (
        "private",
        "pyro_vae/infer/sites.py",
        "from pyro_vae.config import _check, ok\n",
        "imports _check from pyro_vae.config",
    ),
    (
        "private",
        "pyro_vae/vae.py",
        "from pyro_vae.models.priors import _check\n",
        "imports _check from pyro_vae.models.priors",
    ),
    (
        "private",
        "guides/kl.py",
        "def f():\n    from ..models import _x\n",
        "imports _x from pyro_vae.models",
    ),
    # a module over 400 lines
    (
        "long",
        "pyro_vae/analysis/diagnostics.py",
        "x = 1\n" * 401,
        "pyro_vae/analysis/diagnostics.py: 401 lines",
    ),
    ("long", "models/priors.py", "\n" * 399 + "x = 1\n", "models/priors.py: 401 lines"),
]


@pytest.mark.parametrize(("rule", "path", "text", "said"), BROKEN)
def test_each_rule_fails_on_a_tree_that_breaks_it(
    rule: str, path: str, text: str, said: str, tmp_path: Path
) -> None:
    root = _tree(tmp_path, {**CLEAN, path: CLEAN.get(path, "") + text})
    found = CHECKERS[rule](root)
    assert len(found) == 1 and said in found[0], found
    assert found[0].startswith(path)
    for other, check in CHECKERS.items():  # the other rules still pass
        assert other == rule or check(root) == []


def test_400_lines_is_not_over(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "pyro_vae/analysis/plots.py": "x = 1\n" * 400})
    assert long_modules(root) == []
