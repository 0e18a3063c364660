r"""A table as a data set: column types, the schema, and the encoding to one float tensor.

A ``.csv`` with a header line whose cells are not all numbers, or with missing cells, is a
*table* (a CSV of numbers only keeps its old meaning, an array: :mod:`~pyro_vae.data.arrays`).
Each column gets one of :data:`COLUMN_TYPES`, inferred from its values
(:func:`infer_schema`) unless the overrides say otherwise:

===============  ====================================  ===================================
type             inferred when the observed cells      encoded as
===============  ====================================  ===================================
``binary``       are 0/1, or true/false                0 or 1
``count``        are integers in 0..100                the count, as a float
``positive``     are numbers > 0 (integers > 100 too)  :math:`(\log x - m)/s`, train split
``real``         are other numbers                     :math:`(x - m)/s`, train split
``categorical``  are text                              one-hot over the levels
===============  ====================================  ===================================

Empty cells, ``NA``, ``NaN`` and ``nan`` are *missing*. A row is encoded as
``[v_1, ..., v_C, o_1, ..., o_C]``: each column's value block (width 1, or the number of
levels for a categorical column), then one observed-indicator per column (1 observed, 0
missing). A missing cell's block is zero. The indicators travel with the values, so every
batch, split and estimator carries them; the encoder reads both, as in MIWAE (Mattei &
Frellsen 2019, "MIWAE: Deep generative modelling and imputation of incomplete data sets").

Categorical columns are one-hot rather than integer codes because the encoder (an MLP)
reads the tensor as it is: a code 0, 1, 2 would tell it that level 2 is twice level 1.

Tables that cannot be modelled are refused with a :class:`~pyro_vae.data.base.DataError`
naming the column and the line: a column empty throughout, a text column with a new level
on every row (an ID), a column of text and numbers that no type fits, a duplicate header.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pyro_vae.data.base import DataError

__all__ = [
    "COLUMN_TYPES",
    "MISSING",
    "Column",
    "TableSchema",
    "infer_schema",
    "is_table_csv",
    "parse_overrides",
    "read_cells",
]

#: The types a column may have.
COLUMN_TYPES: tuple[str, ...] = ("real", "positive", "count", "binary", "categorical")
#: The cell texts read as missing (besides the empty cell).
MISSING: tuple[str, ...] = ("", "NA", "NaN", "nan")
_TRUE, _FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")
_MAX_COUNT = 100  # integers in 0.._MAX_COUNT are counts; larger ones positive (prices, years)


@dataclass(frozen=True)
class Column:
    """One column: its name, type, levels and the shift and scale of its encoding.

    ``levels`` are the cell texts of a categorical column's levels (one-hot order), or of a
    binary column's 0 and 1. ``shift``/``scale`` standardize a real column, or the log of a
    positive one (:math:`m`, :math:`s` of the train split). ``integer`` columns are written
    back rounded; other real and positive columns to ``decimals`` places, the most any of
    their cells has (None: a cell in exponent notation, or a schema saved before it was kept).
    """

    name: str
    type: str
    levels: tuple[str, ...] = ()
    shift: float = 0.0
    scale: float = 1.0
    integer: bool = False
    decimals: int | None = None

    @property
    def width(self) -> int:
        """The columns of its value block: the levels of a categorical column, else 1."""
        return len(self.levels) if self.type == "categorical" else 1

    @property
    def token(self) -> str:
        """Its part of the ``table`` likelihood's spec: ``real``, ..., ``categorical3``."""
        return f"categorical{len(self.levels)}" if self.type == "categorical" else self.type


@dataclass(frozen=True)
class TableSchema:
    """The columns of a table, in order; saved with a run as ``schema.json``."""

    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        """The column names, in order."""
        return [c.name for c in self.columns]

    @property
    def width(self) -> int:
        """The encoded row's length: the value blocks and one indicator per column."""
        return sum(c.width for c in self.columns) + len(self.columns)

    def likelihood_spec(self, params: str = "") -> str:
        """``table:columns=real.positive.categorical3`` (plus ``params``, ``key=value,...``)."""
        columns = "columns=" + ".".join(c.token for c in self.columns)
        return "table:" + ",".join(p for p in (columns, params) if p)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``schema.json``)."""
        return {"columns": [{**asdict(c), "levels": list(c.levels)} for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSchema:
        """The schema :meth:`to_dict` wrote."""
        return cls(tuple(Column(**{**c, "levels": tuple(c["levels"])}) for c in data["columns"]))

    @classmethod
    def load(cls, path: str | Path) -> TableSchema:
        """The schema in a run's ``schema.json`` (or the run directory)."""
        path = Path(path)
        path = path / "schema.json" if path.is_dir() else path
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"Could not read the table schema {path}: {exc}. Expected the schema.json a "
                "table run writes. Check the run directory."
            ) from exc

    def describe(self) -> str:
        """One line per column: name, type and levels (what the CLI prints)."""
        lines = []
        for c in self.columns:
            extra = f" levels {', '.join(c.levels)}" if c.type == "categorical" else ""
            lines.append(f"  {c.name:<20} {c.type}{extra}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading


def read_cells(source: str | Path | io.StringIO) -> pd.DataFrame:
    """A CSV's cells as stripped text, ``None`` where missing; a duplicate header is refused."""
    where = str(source) if not isinstance(source, io.StringIO) else "the table"
    try:
        if isinstance(source, io.StringIO):
            text = source.getvalue()
        else:
            text = Path(source).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Could not read {where} as UTF-8 text: {exc}. Save it as UTF-8.") from exc
    header = next(csv.reader(io.StringIO(text)), [])
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name.strip() in seen:
            raise DataError(
                f"{where}, line 1: the header names column {name.strip()!r} twice (columns "
                f"{seen[name.strip()]} and {i}). Give every column its own name."
            )
        seen[name.strip()] = i
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"Could not parse {where} as CSV: {exc}. Check its format.") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(lambda s: s.str.strip())
    return frame.mask(frame.isin(MISSING))


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def is_table_csv(path: str | Path) -> bool:
    """Whether a CSV is a table: a header line of names and a text or missing cell below it."""
    try:
        first = Path(path).read_text(encoding="utf-8-sig").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return False  # the array reader says what is wrong
    if not first.strip() or all(_is_number(c) for c in first.split(",")):
        return False  # no header: an array
    cells = read_cells(path)
    return bool(cells.isna().any().any()) or not all(
        _is_number(v) for v in cells.to_numpy().ravel()
    )


def parse_overrides(text: str) -> dict[str, str]:
    """Column types given by the user: a TOML file of ``name = "type"`` (in a ``[data]`` table
    or at the top) or inline ``name=type;name=type``; empty text gives none."""
    if not text.strip():
        return {}
    if text.strip().endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        try:
            data = tomllib.loads(Path(text.strip()).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise DataError(f"Could not read the schema file {text!r}: {exc}.") from exc
        table = data.get("data", data)
        pairs = {str(k): v for k, v in table.items()}
    else:
        pairs = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
    out = {k.strip(): str(v).strip() for k, v in pairs.items()}
    for name, kind in out.items():
        if kind not in COLUMN_TYPES:
            raise DataError(
                f"the schema gives column {name!r} the type {kind!r}, but a column type is one "
                f"of {', '.join(COLUMN_TYPES)}. Fix the schema."
            )
    return out


# --------------------------------------------------------------------------- inference


def _line(cells: pd.Series, position: int) -> int:
    """The file line of a row position (line 1 is the header; no blank lines)."""
    return int(position) + 2


def _numbers(name: str, cells: pd.Series, where: str) -> pd.Series | None:
    """The column as floats when it holds numbers only; None when it holds text only."""
    observed = cells.dropna()
    numeric = observed.map(_is_number)
    if bool(numeric.all()):
        return observed.astype(float)
    if not bool(numeric.any()) or observed[~numeric].isin(_TRUE + _FALSE).all():
        return None
    odd = numeric if numeric.sum() < (~numeric).sum() else ~numeric
    position = cells.index.get_loc(odd[odd].index[0])
    raise DataError(
        f"{where}, line {_line(cells, position)}, column {_col(cells, name)}: the cell "
        f"{cells.iloc[position]!r} of column {name!r} breaks its type: the column mixes text "
        "and numbers, and no column type fits both. Fix that cell, or mark it missing (leave "
        "it empty)."
    )


def _col(cells: pd.Series, name: str) -> int:
    return int(cells.attrs.get("position", 0)) + 1


def _infer_type(values: pd.Series | None, observed: pd.Series) -> str:
    if values is None:
        return "binary" if observed.isin(_TRUE + _FALSE).all() else "categorical"
    if values.isin((0.0, 1.0)).all():
        return "binary"
    integer = bool((values == values.round()).all())
    if integer and values.min() >= 0 and values.max() <= _MAX_COUNT:
        return "count"
    return "positive" if values.min() > 0 else "real"


def _column(name: str, cells: pd.Series, kind: str | None, where: str, train: np.ndarray) -> Column:
    observed = cells.dropna()
    if observed.empty:
        raise DataError(
            f"{where}, column {_col(cells, name)} ({name!r}): the column is empty throughout "
            f"(lines 2..{len(cells) + 1}), so it has no type and nothing to learn. Remove it."
        )
    values = _numbers(name, cells, where)
    inferred = _infer_type(values, observed)
    kind = kind or inferred
    if kind == "categorical":
        return _categorical(name, cells, observed, values, inferred, where)
    if kind == "binary":
        return _binary(name, cells, observed, values, where)
    if values is None:
        position = cells.index.get_loc(observed.index[0])
        raise DataError(
            f"{where}, line {_line(cells, position)}, column {_col(cells, name)}: the cell "
            f"{observed.iloc[0]!r} of column {name!r} is text, but the schema makes the "
            f"column {kind}, which needs numbers. Fix the schema or the cell."
        )
    _check_numbers(name, cells, values, kind, where)
    integer = bool((values == values.round()).all())
    if kind == "count":
        return Column(name, kind, integer=True)
    fitted = np.log(values) if kind == "positive" else values
    sample = fitted[fitted.index.isin(train)]
    sample = sample if len(sample) else fitted
    scale = float(sample.std(ddof=0)) if len(sample) > 1 else 1.0
    shift, scale = float(sample.mean()), scale or 1.0
    return Column(
        name, kind, shift=shift, scale=scale, integer=integer, decimals=_decimals(observed)
    )


def _decimals(observed: pd.Series) -> int | None:
    """The most digits after the decimal point among the cells' texts; None if a cell is in
    exponent notation (``1e-05``), whose precision the text does not show as decimals."""
    texts = observed.astype(str)
    if bool(texts.str.contains("[eE]", regex=True).any()):
        return None
    return int(texts.str.partition(".")[2].str.len().max())


def _check_numbers(name: str, cells: pd.Series, values: pd.Series, kind: str, where: str) -> None:
    bad = {
        "positive": values <= 0,
        "count": (values < 0) | (values != values.round()),
        "real": values != values,
    }[kind]
    if bool(bad.any()):
        position = cells.index.get_loc(bad[bad].index[0])
        raise DataError(
            f"{where}, line {_line(cells, position)}, column {_col(cells, name)}: the cell "
            f"{cells.iloc[position]!r} of column {name!r} is outside the support of a {kind} "
            "column. Fix the schema or the cell."
        )


def _categorical(
    name: str,
    cells: pd.Series,
    observed: pd.Series,
    values: pd.Series | None,
    inferred: str,
    where: str,
) -> Column:
    levels = sorted(observed.unique(), key=lambda v: (float(v), v) if values is not None else v)
    if inferred == "categorical" and len(levels) == len(observed) and len(observed) >= 3:
        position = cells.index.get_loc(observed.index[-1])
        raise DataError(
            f"{where}, column {_col(cells, name)} ({name!r}): every row has its own level "
            f"({len(levels)} levels in {len(observed)} rows, the last new one on line "
            f"{_line(cells, position)}), so the column is an identifier, not a category. "
            "Remove it, or give it the type categorical in the schema if it is one."
        )
    return Column(name, "categorical", levels=tuple(str(v) for v in levels))


def _binary(
    name: str, cells: pd.Series, observed: pd.Series, values: pd.Series | None, where: str
) -> Column:
    if values is not None and values.isin((0.0, 1.0)).all():
        return Column(name, "binary", levels=("0", "1"), integer=True)
    if observed.isin(_TRUE + _FALSE).all():
        false = next((v for v in observed if v in _FALSE), "False")
        true = next((v for v in observed if v in _TRUE), "True")
        return Column(name, "binary", levels=(false, true))
    levels = sorted(observed.unique())
    if len(levels) > 2:
        position = cells.index.get_loc(observed[observed == levels[2]].index[0])
        raise DataError(
            f"{where}, line {_line(cells, position)}, column {_col(cells, name)}: column "
            f"{name!r} is binary in the schema, but holds a third value {levels[2]!r}. Fix "
            "the schema (categorical) or the cell."
        )
    return Column(name, "binary", levels=(levels[0], levels[-1]))


def infer_schema(
    cells: pd.DataFrame,
    overrides: dict[str, str] | None = None,
    *,
    train_rows: np.ndarray | None = None,
    where: str = "the table",
) -> TableSchema:
    """Each column's type (``overrides`` first), levels and standardization (train rows)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(cells.columns))
    if unknown:
        raise DataError(
            f"the schema names column(s) {unknown} that {where} does not have; its columns "
            f"are {list(cells.columns)}. Fix the names in the schema."
        )
    train = np.arange(len(cells)) if train_rows is None else np.asarray(train_rows)
    columns = []
    for position, name in enumerate(cells.columns):
        series = cells[name].reset_index(drop=True)
        series.attrs["position"] = position
        columns.append(_column(name, series, overrides.get(name), where, train))
    return TableSchema(tuple(columns))


def with_levels(schema: TableSchema, column: str, levels: tuple[str, ...]) -> TableSchema:
    """The schema with one column's levels replaced (a user's own order)."""
    cols = tuple(replace(c, levels=levels) if c.name == column else c for c in schema.columns)
    return TableSchema(cols)
