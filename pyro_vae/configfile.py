"""Configs as data: plain dicts and JSON (``config.json``), and TOML files with ``[vae]`` and
``[train]`` tables, read with the errors a user can act on (the file, the key path, the
expected type and what was received).

The dataclasses themselves, their defaults and their checks are :mod:`pyro_vae.config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pyro_vae.checks import is_int
from pyro_vae.config import ConfigError, RunConfig, TrainConfig, VAEConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

__all__ = ["from_dict", "load_toml", "load_toml_sections", "to_dict"]


@dataclass(frozen=True)
class _Sections:
    """The two tables of a config layer, checked like a :class:`RunConfig` but unresolved.

    A layer (a TOML file, a saved run) may be overridden by another (the command line's
    flags), so ``binarize = "auto"`` must wait for the final likelihood: only the merged
    :class:`RunConfig` settles it.
    """

    vae: VAEConfig = field(default_factory=VAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build the dataclass ``cls`` from a plain dict, checking keys and types.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming where the
    dict came from and the key, as ``FILE: vae.latent_dim must be int, got '3'``, the
    expected type and what was received. Nested dataclasses are built recursively. A
    field's own check names the field in ``ConfigError.field``.
    """
    return _from_dict(cls, data, where, ())


def _label(where: str, keys: tuple[str, ...]) -> str:
    """Where a value was read, then its key path: ``c.toml: vae.latent_dim``."""
    return f"{where}: {'.'.join(keys)}" if keys else where


def _from_dict(cls: type[T], data: Any, where: str, keys: tuple[str, ...]) -> T:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_label(where, keys)} must be a table/object, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        within = f" in [{'.'.join(keys)}]" if keys else ""
        raise ConfigError(
            f"{where}: unknown key(s) {[str(k)[:40] for k in unknown]}{within}; valid keys "
            f"are {sorted(fields)}. Remove or rename the unknown key(s)."
        )
    kwargs = {k: _coerce(hints[k], v, where, (*keys, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ConfigError, TypeError, ValueError) as e:  # a field check that met a stray type
        field = _field_of(e, fields)
        raise ConfigError(_refusal(where, keys, e, field), field=field) from None


def _refusal(where: str, keys: tuple[str, ...], e: Exception, field: str | None) -> str:
    """``c.toml: vae.latent_dim must be ...`` for a field's check, else ``c.toml: vae: ...``."""
    path = ".".join(keys)
    if field and path:
        return f"{where}: {path}.{e}"
    return f"{where}: {path}: {e}" if path else f"{where}: {e}"


def _field_of(e: Exception, fields: set[str]) -> str | None:
    """The field a check's own message starts with (``latent_dim must be ...``), if any."""
    first = str(e).split(" ", 1)[0]
    return first if type(e) is ConfigError and first in fields else None


def _coerce(hint: Any, value: Any, where: str, keys: tuple[str, ...]) -> Any:
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where, keys)  # type: ignore[arg-type]
    label = _label(where, keys)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label} must be a list of ints, got {value!r}")
        return tuple(_coerce(int, v, where, keys) for v in value)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, where, keys)
            except ConfigError:
                continue
        raise ConfigError(f"{label} must be {hint}, got {_short(value)}")
    if hint is float and is_int(value):
        value = float(value) if abs(value) < 2**1023 else math.inf
    wrong = not is_int(value) if hint is int else not isinstance(value, hint)
    if hint in (int, float, str, bool) and wrong:
        raise ConfigError(f"{label} must be {hint.__name__}, got {_short(value)}{_unquote(value)}")
    return _check_value(value, label)


def _unquote(value: Any) -> str:
    """The hint for a number written as a string (``"3"`` in TOML): drop the quotes."""
    with contextlib.suppress(ValueError, TypeError):
        if isinstance(value, str):
            float(value)
            return f" (a string; write the number without quotes: {value.strip()})"
    return ""


def _check_value(value: Any, where: str) -> Any:
    """Values every field refuses: ints beyond int64, NaN, strings with NUL characters."""
    if is_int(value) and not -(2**63) <= value < 2**63:
        raise ConfigError(f"{where} must fit in a 64-bit int, got {_short(value)}")
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{where} must be a number, got nan")
    if isinstance(value, str) and "\x00" in value:
        raise ConfigError(f"{where} must not contain NUL characters, got {_short(value)}")
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_toml(path: str | Path) -> RunConfig:
    """Read a TOML config with optional ``[vae]`` and ``[train]`` tables."""
    return RunConfig(*load_toml_sections(path))


def load_toml_sections(path: str | Path) -> tuple[VAEConfig, TrainConfig]:
    """The checked ``[vae]`` and ``[train]`` tables of a TOML config, as one layer.

    ``data_shape`` and ``num_classes`` come from the data set and are refused here. Unlike
    :func:`load_toml`, ``binarize = "auto"`` (the default) is kept unresolved, so
    that settings merged on top, e.g. ``pyro-vae train --config FILE --likelihood normal``,
    settle it from the final likelihood; build the :class:`RunConfig` after merging.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from None
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(
            f"config file {str(path)!r} is not valid TOML ({e or 'nested too deeply'}). Expected "
            "[vae] and [train] tables of key = value lines; fix the line named above."
        ) from None
    _refuse_data_settings(data, path)
    data = _data_table(data, path)
    sections = from_dict(_Sections, data, where=str(path))
    return sections.vae, sections.train


# VAEConfig fields that training sets from the data set, never from a settings file
_FROM_DATA = {
    "data_shape": "the shape of the data set's items",
    "num_classes": "the number of classes in the data set's labels",
}


def _refuse_data_settings(data: dict[str, Any], path: str | Path) -> None:
    """A TOML ``[vae]`` table may not set what comes from the data (``data_shape``, ...)."""
    vae = data.get("vae")
    given = sorted(set(vae) & set(_FROM_DATA)) if isinstance(vae, dict) else []
    if given:
        raise ConfigError(
            f"{path}: vae.{given[0]} is set from the data set ({_FROM_DATA[given[0]]}), not "
            "by a config file. Remove it, and choose the data with [train] dataset (or "
            "TrainConfig.dataset)."
        )


def _data_table(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """A ``[data]`` table of column types (``name = "type"``) becomes ``train.schema``."""
    if "data" not in data:
        return data
    table, rest = data["data"], {k: v for k, v in data.items() if k != "data"}
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigError(
            f'{path}: [data] must be a table of column types, name = "categorical" (real, '
            "positive, count, binary or categorical)."
        )
    train = dict(rest.get("train", {})) if isinstance(rest.get("train"), dict) else {}
    if train.get("schema"):
        raise ConfigError(f"{path}: give the column types once, in [data] or in train.schema.")
    train["schema"] = ";".join(f"{k}={v}" for k, v in table.items())
    return {**rest, "train": train}
