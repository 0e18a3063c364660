"""Plugins: a user's own priors, likelihoods, guide families and networks, in the user's files.

A plugin is an ordinary Python file that registers classes with the package's registries::

    # my_parts.py
    from pyro_vae.models import PRIORS, Prior

    @PRIORS.register("student-t")
    class StudentT(Prior): ...

From the command line, ``--plugin my_parts.py`` (repeatable, on ``train``, ``evaluate``,
``sample`` and ``components``) imports the file before anything else, so its names work in
``--prior``/``--likelihood``/``--guide``/``--network`` and in TOML configs. From Python,
import the module (or call :func:`load_plugin`) before building the
:class:`~pyro_vae.config.VAEConfig`.

A saved run records, in ``config.json`` under ``"plugins"``, each of its components that
comes from outside the package: the kind, the registered name, the module and the file.
Loading never imports those files by itself (importing a file runs its code, and a
checkpoint may come from anyone): :func:`require_registered` instead names the file to pass
with ``--plugin`` or to :func:`pyro_vae.load`'s ``plugins=``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from pyro_vae.config import VAEConfig
from pyro_vae.guides import GUIDES
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.nn import NETWORKS
from pyro_vae.registry import Registry, SpecError, parse_spec

__all__ = [
    "COMPONENT_FIELDS",
    "PLUGIN_MODULE_PREFIX",
    "PluginError",
    "is_ours",
    "load_plugin",
    "plugin_records",
    "require_registered",
]

# VAEConfig fields that name a registered component, and the registry each one is looked up
# in. A new component field is one more line here.
COMPONENT_FIELDS: dict[str, Registry[Any]] = {
    "prior": PRIORS,
    "likelihood": LIKELIHOODS,
    "guide": GUIDES,
    "network": NETWORKS,
}

PLUGIN_MODULE_PREFIX = "pyro_vae_plugin_"


class PluginError(ValueError):
    """A plugin file that cannot be imported, or a saved run whose plugin is not loaded."""


def _module_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"{PLUGIN_MODULE_PREFIX}{stem}_{digest}"


def load_plugin(path: str | Path) -> ModuleType:
    """Import the Python file ``path`` so that its ``@REGISTRY.register`` classes are registered.

    The module is named after the file's absolute path, so importing the same file again
    re-executes it and its classes replace their earlier versions under the same names.
    Importing runs the file's code: pass only files you trust.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"plugin path must be a str or Path, got {type(path).__name__}")
    file = Path(path).expanduser().resolve()
    if file.suffix != ".py" or not file.is_file():
        raise PluginError(f"plugin {str(path)!r} is not an existing Python file (FILE.py)")
    name = _module_name(file)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:  # pragma: no cover - only for odd loaders
        raise PluginError(f"cannot import plugin {str(file)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise PluginError(f"importing plugin {str(file)!r} failed: {type(e).__name__}: {e}") from e
    return module


def is_ours(module: str) -> bool:
    """True for the name of a module pyro-vae ships (``pyro_vae`` or ``pyro_vae.*``), whose
    components need no plugin file; False for a user's module or a loaded plugin's."""
    return module == "pyro_vae" or module.startswith("pyro_vae.")


def plugin_records(config: VAEConfig) -> list[dict[str, str | None]]:
    """The components of ``config`` defined outside pyro-vae: kind, name, module and file.

    This is what :func:`~pyro_vae.training.checkpoint.save` writes to ``config.json`` as
    ``"plugins"``, so that a later load can say which file to pass.
    """
    records: list[dict[str, str | None]] = []
    for field, registry in COMPONENT_FIELDS.items():
        spec = getattr(config, field, None)
        if not isinstance(spec, str):
            continue
        name = parse_spec(spec).name
        if name not in registry:
            continue
        cls = registry.entry(name).cls
        module = getattr(cls, "__module__", "")
        if is_ours(module):
            continue
        try:
            file: str | None = inspect.getsourcefile(cls)  # type: ignore[arg-type]
        except TypeError:
            file = None
        if file is not None:
            file = str(Path(file).resolve())
        records.append({"kind": field, "name": name, "module": module, "file": file})
    return records


def require_registered(raw_config: Mapping[str, Any], where: str = "this run") -> None:
    """Raise :class:`PluginError` unless every component a saved config names is registered.

    ``raw_config`` is the JSON of a run's ``config.json``. The message names, for each
    missing component, the plugin file recorded when the run was saved and how to pass it;
    nothing is imported here.
    """
    vae = raw_config.get("vae", {})
    plugins = raw_config.get("plugins")
    records = [r for r in plugins if isinstance(r, Mapping)] if isinstance(plugins, list) else []
    recorded = {(r.get("kind"), r.get("name")): r for r in records}
    missing: list[str] = []
    files: list[str] = []
    for field, registry in COMPONENT_FIELDS.items():
        spec = vae.get(field) if isinstance(vae, Mapping) else None
        if not isinstance(spec, str):
            continue
        try:
            name = parse_spec(spec).name
        except SpecError:
            continue  # building the VAE reports a malformed spec with its own message
        if name in registry:
            continue
        record = recorded.get((field, name))
        if record is None:
            missing.append(
                f"the {field} {name!r} (not recorded as a plugin: {field} names "
                f"registered now are {', '.join(registry.names())})"
            )
            continue
        file, module = record.get("file"), str(record.get("module"))
        origin = f"file {file!r}" if file else f"module {module!r}"
        missing.append(f"the {field} {name!r} from {origin}")
        if file:
            files.append(file)
        elif not module.startswith(PLUGIN_MODULE_PREFIX):
            files.append(f"<the file of module {module}>")
    if not missing:
        return
    given = list(dict.fromkeys(files)) or ["FILE"]
    calls = " ".join(f"load_plugin({f!r})" for f in given)
    raise PluginError(
        f"{where} needs " + "; ".join(missing) + ", which this process has not registered. "
        f"Load the plugin first: {calls}, or load(run_dir, plugins={given!r}) (importing a "
        "plugin runs its code: load only files you trust), or import the plugin module."
    )
