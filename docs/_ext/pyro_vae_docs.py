"""Pages generated at build time, so the reference cannot drift from the code.

On ``builder-inited`` this writes, under the source directory:

- ``api/generated/``: the public API of ``pyro_vae.__all__`` as a table, the config fields
  (default and the trailing ``# comment`` the CLI also shows), every registry with every
  registered component, and one autodoc page per module (members: the module's ``__all__``
  plus the registered classes defined there);
- ``results/generated/``: one page per benchmark table in ``benchmarks/*.md`` and
  ``benchmarks/results/*.md``, included verbatim, with the command, machine and date it was
  recorded with (read from the table itself or from the ``.json`` beside it).

A new benchmark file, module, registered component or public name appears without editing
any page.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

# the packages walked for module pages; models/ and guides/ are installed as
# pyro_vae.models and pyro_vae.guides from folders of their own, so they are roots too
ROOTS = ("pyro_vae", "pyro_vae.models", "pyro_vae.guides")
SKIP_MODULES = {"pyro_vae.__main__"}
# private modules that still get a page: the old-path aliases the Architecture page explains
PRIVATE = {"pyro_vae._compat"}


def _write(path: Path, text: str) -> None:
    """Write only on change, so an incremental build does not re-read every page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _title(text: str, char: str = "=") -> str:
    return f"{text}\n{char * len(text)}\n"


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in first.splitlines())


def _role(obj: Any) -> str:
    if inspect.isclass(obj):
        return "class" if not issubclass(obj, BaseException) else "exc"
    if inspect.isfunction(obj):
        return "func"
    return "data"


def _qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _list_table(header: list[str], rows: list[list[str]], widths: str = "auto") -> str:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lines.append(("   * - " if i == 0 else "     - ") + (cell or " "))
    return "\n".join(lines) + "\n"


def modules() -> list[str]:
    """Every module of the package, walked (the packages' own ``__init__`` excluded).

    ``pkgutil.walk_packages`` finds every subpackage and module, so a new subpackage or a
    module split in two gets its page without an edit here. ``pyro_vae.models`` and
    ``pyro_vae.guides`` live outside ``pyro_vae/`` (``models/``, ``guides/``), so each root
    in :data:`ROOTS` is walked from its own folder.
    """
    names: set[str] = set()
    for root in ROOTS:
        pkg = importlib.import_module(root)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{root}."):
            private = any(part.startswith("_") for part in info.name.split(".")[1:])
            if info.ispkg or info.name in SKIP_MODULES or (private and info.name not in PRIVATE):
                continue
            names.add(info.name)
    return sorted(names)


def subpackages() -> list[str]:
    """Every subpackage of pyro_vae (``pyro_vae.models``, ``pyro_vae.infer``, ...), walked."""
    names: set[str] = set(ROOTS[1:])
    pkg = importlib.import_module(ROOTS[0])
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{ROOTS[0]}."):
        if info.ispkg and not any(p.startswith("_") for p in info.name.split(".")):
            names.add(info.name)
    return sorted(names)


def _builtin(cls: Any) -> bool:
    """A component pyro-vae ships, not one a plugin registered (tutorial 5 registers some in
    the build's own process, and they have no page to link to)."""
    from pyro_vae.plugins import is_ours

    return is_ours(str(getattr(cls, "__module__", "")))


def registered_classes() -> dict[str, list[tuple[str, type]]]:
    """``{"priors": [(name, cls), ...], ...}`` of the shipped components, from the registries."""
    from pyro_vae.components import REGISTRIES

    return {
        kind: [(e.name, e.cls) for e in reg if _builtin(e.cls)]  # type: ignore[misc]
        for kind, reg in REGISTRIES.items()
    }


def _module_members(name: str) -> list[str]:
    module = importlib.import_module(name)
    members = [m for m in getattr(module, "__all__", []) if not m.startswith("_")]
    for entries in registered_classes().values():
        for _, cls in entries:
            if cls.__module__ == name and cls.__name__ not in members:
                members.append(cls.__name__)
    # a class or function re-exported from another module is documented there
    own = []
    for m in members:
        obj = getattr(module, m)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__module__ == name:
            own.append(m)
    return own


def _comment_above(module: Any, name: str) -> str:
    """The ``#`` comment lines right above ``NAME = ...`` (or ``NAME: type = ...``)."""
    lines = inspect.getsource(module).splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(name)}\s*[:=]", line):
            above: list[str] = []
            for prev in reversed(lines[:i]):
                if not prev.startswith("#"):
                    break
                above.insert(0, prev.lstrip("#").strip())
            return " ".join(above)
    return ""


def data_entry(module: Any, name: str) -> list[str]:
    """A ``py:data`` entry: its ``#:`` doc or the comment above it, or what a registry holds."""
    from sphinx.pycode import ModuleAnalyzer

    from pyro_vae.registry import Registry

    obj = getattr(module, name)
    docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs().get(("", name))
    text = " ".join(docs or []).strip() or _comment_above(module, name)
    if isinstance(obj, Registry):
        listed = ", ".join(f"``{e.name}``" for e in obj if _builtin(e.cls))
        text = (
            f"The registry of every {obj.kind} (:class:`~pyro_vae.registry.Registry`): {listed}; "
            "see :doc:`../components`. " + text
        )
    text = _qualify_roles(text, module)
    return [f".. py:data:: {name}", "", "   " + (text or f"``{type(obj).__name__}``"), ""]


_ROLE = re.compile(r":(class|func|meth|data|exc|obj|attr):`(~?)([\w.]+)`")


def _qualify_roles(text: str, module: Any) -> str:
    """Turn ``:func:`fit``` (a name in scope in ``module``) into
    ``:func:`~pyro_vae.training.fit.fit```.

    Generated tables quote docstrings out of their module; references in them must be
    resolvable from anywhere.
    """

    def fix(match: re.Match[str]) -> str:
        role, tilde, target = match.groups()
        head, _, rest = target.partition(".")
        obj = getattr(module, head, None)
        if obj is None or not hasattr(obj, "__qualname__") or not hasattr(obj, "__module__"):
            return match.group(0)
        full = _qualified(obj) + ("." + rest if rest else "")
        return f":{role}:`{'~' if tilde or not rest else tilde}{full}`"

    return _ROLE.sub(fix, text)


def module_page(name: str) -> str:
    module = importlib.import_module(name)
    members = _module_members(name)
    head = _title(f"``{name}``")
    body = [head, f".. automodule:: {name}", "   :no-members:", ""]
    body += [f".. currentmodule:: {name}", ""]
    for m in members:
        obj = getattr(module, m)
        if inspect.isclass(obj):
            directive = "autoexception" if issubclass(obj, BaseException) else "autoclass"
            body += [f".. {directive}:: {name}.{m}", "   :members:", "   :show-inheritance:", ""]
        elif inspect.isfunction(obj):
            body += [f".. autofunction:: {name}.{m}", ""]
        else:
            body += data_entry(module, m)
    return "\n".join(body)


def public_page() -> str:
    import pyro_vae

    rows = []
    for name in pyro_vae.__all__:
        if name.startswith("_"):
            continue
        obj = getattr(pyro_vae, name)
        where = inspect.getmodule(obj)
        rows.append(
            [
                f":py:{_role(obj)}:`pyro_vae.{name} <{_qualified(obj)}>`",
                _qualify_roles(_summary(obj), where),
            ]
        )
    packages = []
    for package in subpackages():
        pkg = importlib.import_module(package)
        for name in getattr(pkg, "__all__", []):
            obj = getattr(pkg, name)
            target = _qualified(obj) if hasattr(obj, "__qualname__") else f"{package}.{name}"
            role = _role(obj)
            if role == "data":
                home = _defining_module(pkg, name)
                target = f"{home}.{name}"
                summary = _data_summary(home if home != package else package, name)
            else:
                summary = _qualify_roles(_summary(obj), inspect.getmodule(obj))
            if role == "data" and home == package:  # no module documents it: no link
                packages.append([f"``{package}.{name}``", summary])
            else:
                packages.append([f":py:{role}:`{package}.{name} <{target}>`", summary])
    return "\n".join(
        [
            _title("Public API"),
            "What ``from pyro_vae import ...`` offers: the names in ``pyro_vae.__all__``, "
            "each linked to its documentation in the module that defines it.",
            "",
            _list_table(["name", "summary"], rows, "30 70"),
            _title("The subpackages", "-"),
            "Each subpackage re-exports the names of its modules that other code may use "
            "(``pyro_vae.models``: the generative side, ``pyro_vae.guides``: the inference "
            "side, ``pyro_vae.data``, ``pyro_vae.cli``, ...; see :doc:`../../architecture`):",
            "",
            _list_table(["name", "summary"], packages, "30 70"),
        ]
    )


def _data_summary(module_name: str, name: str) -> str:
    """One line for a public constant: a registry's kind, else its ``#:`` doc or comment."""
    from sphinx.pycode import ModuleAnalyzer

    from pyro_vae.registry import Registry

    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    if isinstance(obj, Registry):
        return f"the registry of every {obj.kind}"
    try:
        docs = ModuleAnalyzer.for_module(module_name).find_attr_docs().get(("", name))
    except Exception:  # a module without source: no comment to read
        docs = None
    text = " ".join(docs or []).strip() or _comment_above(module, name)
    return _qualify_roles(text, module) or f"a ``{type(obj).__name__}``"


def _defining_module(pkg: Any, name: str) -> str:
    """The submodule of ``pkg`` whose ``__all__`` lists ``name`` (for re-exported data)."""
    for sub in modules():
        inside = sub.startswith(pkg.__name__ + ".")
        if inside and name in getattr(importlib.import_module(sub), "__all__", []):
            return sub
    return pkg.__name__


def _field_comments(cls: type) -> dict[str, str]:
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+): [^=]+= .*?#\s*(.+)$", source, flags=re.M))


def configs_page() -> str:
    from pyro_vae.config import RunConfig, TrainConfig, VAEConfig

    parts = [
        _title("Configuration"),
        "The frozen dataclasses below are the one source of defaults: every field is a "
        "``pyro-vae train --flag`` (underscores become dashes) and a key of the ``[vae]`` or "
        "``[train]`` table of a TOML config, and every run saves them to ``config.json``. "
        "The tables are generated from the dataclasses and the comment after each field.",
        "",
    ]
    for cls, table in ((VAEConfig, "vae"), (TrainConfig, "train")):
        comments = _field_comments(cls)
        defaults = cls()
        rows = [
            [
                f"``{f.name}``",
                f"``{getattr(defaults, f.name)!r}``",
                comments.get(f.name, "").replace("|", "\\|"),
            ]
            for f in dataclasses.fields(cls)
        ]
        parts += [
            _title(f":py:class:`~{_qualified(cls)}` (TOML table ``[{table}]``)", "-"),
            _list_table(["field", "default", "meaning"], rows, "20 20 60"),
        ]
    parts += [
        _title(f":py:class:`~{_qualified(RunConfig)}`", "-"),
        _summary(RunConfig),
        "",
    ]
    return "\n".join(parts)


def components_page() -> str:
    from pyro_vae.components import REGISTRIES
    from pyro_vae.registry import describe_params

    parts = [
        _title("Components"),
        "Every registered prior, likelihood, guide family, network and objective, read from "
        "the registries (what ``pyro-vae components`` prints). A spec string ``name`` or "
        "``name:key=value,...`` picks one; the keys are the class's keyword-only "
        "constructor arguments.",
        "",
    ]
    for kind, registry in REGISTRIES.items():
        rows = [
            [
                f"``{e.name}``",
                f":py:class:`~{_qualified(e.cls)}`",
                describe_params(e.params, e.notes).replace("*", "\\*"),
                _qualify_roles(_summary(e.cls), inspect.getmodule(e.cls)),
            ]
            for e in registry
            if _builtin(e.cls)
        ]
        parts += [
            _title(f"{kind.capitalize()} (``{kind}``)", "-"),
            f"The registry ``{kind.upper()}`` holds {len(rows)} {kind}.",
            "",
            _list_table(["spec name", "class", "spec parameters", "summary"], rows, "15 20 25 40"),
        ]
    return "\n".join(parts)


def cli_page() -> str:
    from pyro_vae.cli import build_parser

    parser = build_parser()
    parts = [
        _title("Command line"),
        "The help of ``pyro-vae`` and each of its commands, as ``--help`` prints it.",
        "",
    ]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    helps = [("pyro-vae", parser.format_help())]
    helps += [(f"pyro-vae {n}", p.format_help()) for n, p in sub.choices.items()]  # type: ignore[union-attr]
    for name, text in helps:
        block = "\n".join("   " + line if line.strip() else "" for line in text.splitlines())
        parts += [_title(f"``{name}``", "-"), ".. code-block:: text", "", block, ""]
    return "\n".join(parts)


# -- results -----------------------------------------------------------------------------


def _git_date(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", path.name],
            cwd=path.resolve().parent,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _machine_text(machine: Any) -> str:
    if isinstance(machine, dict):
        keep = [f"{k}: {v}" for k, v in machine.items() if not isinstance(v, (list, dict))]
        return "; ".join(keep)
    return str(machine)


def provenance(md: Path) -> dict[str, str]:
    """Command, machine and date of a results table: from its text, else its ``.json``."""
    text = md.read_text()
    meta: dict[str, Any] = {}
    sidecar = md.with_suffix(".json")
    if sidecar.exists():
        try:
            loaded = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            loaded = {}
        meta = loaded if isinstance(loaded, dict) else {}
    rows = [r for r in meta.get("rows", []) if isinstance(r, dict)]
    for key in ("command", "date"):  # per-row records (reproduce_iwae): their distinct values
        values = list(dict.fromkeys(str(r[key]) for r in rows if key in r))
        if key not in meta and values:
            meta[key] = "; ".join(values)
    found: dict[str, str] = {}
    command = re.search(r"Command: `([^`]+)`", text)
    if command:
        found["command"] = command.group(1)
    elif "command" in meta:
        found["command"] = str(meta["command"])
    machine = re.search(r"^Machine: (.+?\.)(?: Date|$)", text, flags=re.M)
    if machine:
        found["machine"] = machine.group(1)
    elif "machine" in meta:
        found["machine"] = _machine_text(meta["machine"])
    date = re.search(r"Date: (\S+?)\.?(?:\s|$)", text)
    if date:
        found["date"] = date.group(1)
    elif "date" in meta:
        found["date"] = str(meta["date"])
    else:
        committed = _git_date(md)
        if committed:
            found["date"] = f"not recorded in the file; committed to the repository on {committed}"
    return found


def results_page(md: Path, rel: str) -> str:
    text = md.read_text()
    lines = []
    if not text.lstrip().startswith("# "):
        lines += [f"# {md.stem.replace('_', ' ').capitalize()}", ""]
    lines += ["```{include} " + rel, "```", ""]
    found = provenance(md)
    lines += ["```{rubric} As recorded", "```", "", f"Source: `{md.parent.name}/{md.name}`.", ""]
    for key in ("command", "machine", "date"):
        value = found.get(key, "not recorded")
        lines += [f"- **{key.capitalize()}:** " + (f"`{value}`" if key == "command" else value)]
    return "\n".join(lines) + "\n"


def result_files(root: Path) -> list[Path]:
    return sorted((root / "benchmarks").glob("*.md")) + sorted(
        (root / "benchmarks" / "results").glob("*.md")
    )


def generate(app: Sphinx) -> None:
    src = Path(app.srcdir)
    root = src.parent
    api = src / "api" / "generated"
    _write(api / "public.rst", public_page())
    _write(api / "configs.rst", configs_page())
    _write(api / "components.rst", components_page())
    _write(api / "cli.rst", cli_page())
    wanted = {f"{m}.rst" for m in modules()}
    for m in modules():
        _write(api / "modules" / f"{m}.rst", module_page(m))
    for stale in (api / "modules").glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    out = src / "results" / "generated"
    wanted = set()
    for md in result_files(root):
        name = ("results-" if md.parent.name == "results" else "") + md.stem.lower() + ".md"
        wanted.add(name)
        rel = Path("..", "..", "..", md.relative_to(root)).as_posix()
        _write(out / name, results_page(md, rel))
    for stale in out.glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()


def reset_pyro(gallery_conf: Any, fname: str) -> None:
    """sphinx-gallery ``reset_modules`` hook: each tutorial starts from Pyro's empty state.

    Tutorials share one interpreter in the build; without this, the param store and the RNG
    left by one would change the next one's figures.
    """
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def resolve_in_scope(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a Python reference by the names in scope where it was written.

    ``:func:`pyro_vae.fit``` (a public re-export) and ``:class:`RunConfig``` in a module that
    imports it both name one object; the reference goes to where that object is documented.
    Anything that still does not resolve stays a (nitpicky) warning.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    candidates = [node.get("py:module"), None]
    for where in candidates:
        head, _, rest = target.partition(".")
        try:
            if where:
                obj: Any = importlib.import_module(where)
                parts = target.split(".")
            else:
                obj = importlib.import_module(head)
                parts = rest.split(".") if rest else []
                # pyro_vae.models.X: walk submodules first
                while parts and inspect.ismodule(getattr(obj, parts[0], None)):
                    obj = getattr(obj, parts.pop(0))
            path: list[str] = []
            while parts and not (inspect.isclass(obj) or inspect.isfunction(obj)):
                obj = getattr(obj, parts.pop(0))
            path = parts
            for attr in parts:
                getattr(obj, attr)
        except (ImportError, AttributeError, ValueError):
            continue
        if not hasattr(obj, "__qualname__") or inspect.ismodule(obj):
            continue
        full = ".".join([_qualified(obj), *path])
        if full == target:
            return None
        domain = env.get_domain("py")
        new = node.deepcopy()
        new["reftarget"] = full
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], full, new, contnode
        )
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve_in_scope)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
