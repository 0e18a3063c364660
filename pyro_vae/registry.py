"""Named components and their spec strings.

A spec is ``"name"`` or ``"name:key=value,key=value"``. Each registry maps names to
component classes; the class's keyword-only constructor parameters are the spec's keys,
typed by their annotations (``int``, ``float``, ``bool``, ``str``). A class may say what a
special default means in a ``param_notes`` dict (``{"hidden": "automatic width"}``);
``pyro-vae components`` and the errors show it. Errors list the valid names or keys, so a
typo is a one-line fix.
"""

from __future__ import annotations

import inspect
import keyword
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

__all__ = [
    "CONFIG_FIELDS",
    "Registry",
    "Spec",
    "SpecError",
    "describe_params",
    "is_size_overflow",
    "parse_spec",
]

T = TypeVar("T")


class SpecError(ValueError):
    """A component spec that names nothing registered or carries bad parameters."""


# torch's words for a tensor whose size cannot even be computed (a product beyond int64)
_OVERFLOW = re.compile(
    r"Storage size calculation overflowed|Overflow when unpacking long|integer multiplication "
    r"overflow",
    re.IGNORECASE,
)


def is_size_overflow(e: BaseException) -> bool:
    """Whether ``e`` is torch refusing sizes too large to compute, as for ``torch.empty(2**62)``.

    Such a model or batch cannot be built on any machine: the remedy is smaller sizes, as
    for an out-of-memory error.
    """
    return isinstance(e, (RuntimeError, TypeError, OverflowError)) and bool(
        _OVERFLOW.search(str(e))
    )


@dataclass(frozen=True)
class Spec:
    """A parsed spec: the component name and its raw ``key=value`` strings."""

    name: str
    params: dict[str, str]


def parse_spec(spec: str) -> Spec:
    """Split ``"name:key=value,..."`` into name and parameters (values still strings)."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"a component spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"bad parameter {item!r} in spec {spec!r}: expected key=value")
        params[key.strip()] = value.strip()
    return Spec(name.strip(), params)


def _convert(value: str, hint: Any, where: str) -> Any:
    if hint is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise SpecError(f"{where} must be true or false, got {value!r}")
    if hint in (int, float):
        try:
            number = hint(value)
        except ValueError:
            raise SpecError(f"{where} must be {hint.__name__}, got {value!r}") from None
        if hint is int and not -(2**63) <= number < 2**63:
            raise SpecError(f"{where} must fit in a 64-bit int, got {value[:40]!r}")
        return number
    return value


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    cls: Callable[..., T]
    summary: str
    params: dict[str, tuple[Any, Any]]  # key -> (type, default)
    notes: dict[str, str] = field(default_factory=dict)  # key -> what its default means


# The registry of each VAEConfig field that names a component ("prior" -> PRIORS, ...). A
# registry made with ``config_field=`` enters itself here, so that VAEConfig, a floor below
# the components, checks its specs without importing them.
CONFIG_FIELDS: dict[str, Registry[Any]] = {}


class Registry(Generic[T]):
    """Names to component classes, for one kind of component (prior, likelihood, ...).

    Example::

        PRIORS = Registry("prior")

        @PRIORS.register("normal")
        class StandardNormal(Prior):
            def __init__(self, latent_dim: int, *, scale: float = 1.0): ...

        PRIORS.build("normal:scale=2", latent_dim=10)
    """

    def __init__(self, kind: str, *, config_field: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        if config_field is not None:
            CONFIG_FIELDS[config_field] = self

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator adding ``cls`` under ``name`` (a user's own class works too)."""

        def add(cls: type) -> type:
            old = self._entries.get(name)
            if old is not None and not _same_definition(old.cls, cls):
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered "
                    f"({_where(old.cls)}); choose another name for {_where(cls)}"
                )
            doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # its own, not a base's
            summary = doc.strip().splitlines()[0] if doc.strip() else cls.__name__
            params = _keyword_params(cls)
            self._entries[name] = Entry(name, cls, summary, params, _param_notes(cls, params))
            return cls

        return add

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def entry(self, name: str) -> Entry[T]:
        """The entry (class, summary, spec parameters) of ``name``; :class:`SpecError` if none."""
        if name not in self._entries:
            raise SpecError(
                f"unknown {self.kind} {name!r}; valid {self.kind} names are: "
                + ", ".join(self.names())
                + f". Your own {self.kind}? Register its class with the registry's "
                'register("name") decorator in a Python file and load it with '
                "load_plugin('FILE') (or import its module) before building the config."
            )
        return self._entries[name]

    def build(self, spec: str, /, **context: Any) -> T:
        """Instantiate the component a spec names; ``context`` fills positional needs."""
        entry, kwargs = self._parse(spec)
        try:
            return entry.cls(**context, **kwargs)
        except SpecError:
            raise
        except ValueError as e:
            raise SpecError(f"{self.kind} {spec!r}: {e}") from None
        except (RuntimeError, TypeError) as e:
            if not is_size_overflow(e):
                raise
            raise SpecError(
                f"{self.kind} {spec!r} is too large to build: torch cannot hold its tensors "
                f"({str(e).splitlines()[0][:200]}). Lower its size parameters, or the sizes "
                "it is built for (latent_dim, hidden)."
            ) from None

    def _parse(self, spec: str) -> tuple[Entry[T], dict[str, Any]]:
        """The entry ``spec`` names and its keyword arguments, converted to their types."""
        parsed = parse_spec(spec)
        entry = self.entry(parsed.name)
        kwargs: dict[str, Any] = {}
        for key, raw in parsed.params.items():
            if key not in entry.params:
                valid = describe_params(entry.params, entry.notes)
                raise SpecError(
                    f"{self.kind} {parsed.name!r} has no parameter {key!r}; "
                    f"its parameters are: {valid}"
                )
            value = _convert(raw, entry.params[key][0], f"{self.kind} {spec!r}: {key}")
            kwargs[key + "_" if keyword.iskeyword(key) else key] = value
        return entry, kwargs

    def validate(self, spec: str, /, **context: Any) -> None:
        """Raise :class:`SpecError` unless ``spec`` builds (context as for :meth:`build`).

        With no ``context`` only the name, the parameter names and their types are checked
        (for components whose constructor needs what is not known yet, such as the data's
        shape). A build runs under :func:`torch.random.fork_rng`: checking a spec never
        moves the global RNG, so it cannot change what a seeded run draws.
        """
        if not context:
            self._parse(spec)
            return
        with torch.random.fork_rng(devices=[]):
            self.build(spec, **context)


def describe_params(params: dict[str, tuple[Any, Any]], notes: dict[str, str] | None = None) -> str:
    """``"key (type, default value), ..."`` for a component's spec parameters, or ``none``.

    ``notes`` (a class's ``param_notes``) say what a default means: ``default 0 = automatic``.
    """
    if not params:
        return "none"
    parts = []
    for key, (hint, default) in sorted(params.items()):
        kind = getattr(hint, "__name__", str(hint))
        shown = "required" if default is inspect.Parameter.empty else f"default {default!r}"
        note = (notes or {}).get(key)
        parts.append(f"{key} ({kind}, {shown}{' = ' + note if note else ''})")
    return ", ".join(parts)


def _param_notes(cls: type, params: dict[str, tuple[Any, Any]]) -> dict[str, str]:
    """``param_notes`` of ``cls`` and its bases, for its spec parameters.

    A base's note of a parameter the subclass no longer takes is dropped; a key of the
    class's own ``param_notes`` that names no parameter is a mistake and raises.
    """
    own = cls.__dict__.get("param_notes") or {}
    unknown = sorted(set(own) - set(params))
    if unknown:
        raise ValueError(
            f"{_where(cls)}.param_notes names {unknown}, which are not keyword parameters of "
            f"its constructor ({sorted(params)})"
        )
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        notes.update(klass.__dict__.get("param_notes") or {})
    return {k: str(v) for k, v in notes.items() if k in params}


def _where(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"


def _same_definition(a: Any, b: Any) -> bool:
    """The same class, or the same definition executed again (a reloaded plugin, a re-run cell)."""
    return a is b or _where(a) == _where(b)


def _keyword_params(cls: type) -> dict[str, tuple[Any, Any]]:
    init = cls.__init__  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an unresolved annotation in a user's class: fall back to str
        hints = {}
    out: dict[str, tuple[Any, Any]] = {}
    for p in inspect.signature(init).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            # a Python keyword is spelled with a trailing underscore (lambda_ -> "lambda")
            key = p.name[:-1] if keyword.iskeyword(p.name[:-1]) else p.name
            out[key] = (hints.get(p.name, _default_type(p.default)), p.default)
    return out


def _default_type(default: Any) -> Any:
    """An unannotated parameter's type: its default's, when that is a bool, int or float."""
    for kind in (bool, int, float):
        if type(default) is kind:
            return kind
    return str
