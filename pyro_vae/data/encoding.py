r"""A table to and from its float tensor, and the table :class:`~pyro_vae.data.base.Dataset`.

:func:`encode_table` writes each row as ``[value blocks, observed indicators]`` (see
:mod:`~pyro_vae.data.tables`); :func:`decode_table` turns such rows (draws of the model, or
its means) back into a :class:`pandas.DataFrame` with the original column names, types and
category labels; :func:`load_table` reads a CSV into a data set split 80/10/10 like an
array, with its schema in ``Dataset.table``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pyro_vae.data.base import DataError, Dataset, split_indices
from pyro_vae.data.tables import Column, TableSchema, infer_schema, parse_overrides, read_cells

__all__ = ["decode_table", "encode_table", "load_table", "table_cells"]


def _zero_one(cell: str) -> str:
    try:
        return str(int(float(cell))) if float(cell) in (0.0, 1.0) else cell
    except ValueError:
        return cell


def _refuse(column: Column, row: int, cell: str, expected: str) -> DataError:
    return DataError(
        f"line {row + 2}, column {column.name!r}: the cell {cell!r} is not {expected}, as "
        f"the run's {column.type} column needs. Fix the cell, or leave it empty."
    )


def _encode_column(column: Column, cells: pd.Series) -> np.ndarray:
    """``(N, width)`` values of one column; a missing cell's block is zero. A cell outside
    the column's support is a :class:`DataError` naming its line and column."""
    missing = cells.isna().to_numpy()
    text = cells.fillna("").astype(str).to_numpy()
    present = [int(i) for i in np.flatnonzero(~missing)]
    if column.levels == ("0", "1"):  # a 0/1 column: 1.0 and 1 are the same level
        text = np.array([_zero_one(t) for t in text], dtype=object)
    if column.type in ("categorical", "binary"):
        index = {level: i for i, level in enumerate(column.levels)}
        for i in present:
            if text[i] not in index:
                raise _refuse(column, i, text[i], f"one of the levels {list(column.levels)}")
        codes = np.array([index.get(t, 0) for t in text])
        if column.type == "binary":
            return np.where(missing, 0.0, codes)[:, None].astype(np.float32)
        out = np.zeros((len(text), column.width), np.float32)
        out[present, codes[present]] = 1.0
        return out
    values = np.zeros(len(text))
    for i in present:
        try:
            values[i] = float(text[i])
        except ValueError:
            raise _refuse(column, i, text[i], "a number") from None
        if not np.isfinite(values[i]):
            raise _refuse(column, i, text[i], "a finite number")
        if column.type == "positive" and values[i] <= 0:
            raise _refuse(column, i, text[i], "a positive number")
        if column.type == "count" and (values[i] < 0 or values[i] != round(values[i])):
            raise _refuse(column, i, text[i], "a count (an integer >= 0)")
    if column.type == "positive":
        values = (np.log(np.where(missing, 1.0, values)) - column.shift) / column.scale
    elif column.type == "real":
        values = (values - column.shift) / column.scale
    return np.where(missing, 0.0, values)[:, None].astype(np.float32)


def table_cells(schema: TableSchema, table: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """A DataFrame or a NumPy array (NaN: missing) as the cell texts :func:`encode_table` reads."""
    if isinstance(table, np.ndarray):
        if table.ndim != 2 or table.shape[1] != len(schema.columns):
            raise DataError(
                f"an array table must have shape (N, {len(schema.columns)}), one column per "
                f"column of the schema, got {table.shape}."
            )
        table = pd.DataFrame(table, columns=schema.names)
    missing = sorted(set(schema.names) - set(map(str, table.columns)))
    if missing:
        raise DataError(f"the table lacks the column(s) {missing} of the schema. Add them.")
    cells = pd.DataFrame(index=range(len(table)))
    for column in schema.columns:
        series = table[column.name].reset_index(drop=True)
        cells[column.name] = [None if pd.isna(v) else _text(v, column) for v in series]
    return cells


def _text(value: object, column: Column) -> str:
    if isinstance(value, (bool, np.bool_)) and column.type == "binary":
        return column.levels[int(bool(value))]
    whole = isinstance(value, (float, np.floating)) and float(value).is_integer()
    if whole and (column.type in ("categorical", "binary") or column.integer):
        return str(int(float(value)))  # type: ignore[arg-type]
    return str(value).strip()


def encode_table(schema: TableSchema, cells: pd.DataFrame) -> torch.Tensor:
    """``(N, schema.width)`` float32 rows: the value blocks, then the observed indicators."""
    blocks = [_encode_column(c, cells[c.name]) for c in schema.columns]
    observed = (~cells[schema.names].isna()).to_numpy(np.float32)  # (N, C)
    return torch.from_numpy(np.concatenate([*blocks, observed], axis=1))


def decode_table(schema: TableSchema, x: torch.Tensor) -> pd.DataFrame:
    """Encoded rows (draws or means of p(x|z)) as a table with the original names and labels.

    Real and positive columns are un-standardized, then rounded as the column's cells were
    written (to integers, or to its ``decimals`` places); counts rounded; a binary column's
    value above 1/2 is its level 1; a categorical block gives its largest entry's level. The
    indicators are ignored: every cell is filled.
    """
    values = x.detach().cpu().double().numpy()
    out: dict[str, object] = {}
    start = 0
    for column in schema.columns:
        block = values[:, start : start + column.width]
        start += column.width
        out[column.name] = _decode_column(column, block)
    return pd.DataFrame(out)


def _decode_column(column: Column, block: np.ndarray) -> object:
    if column.type == "categorical":
        labels = np.asarray(column.levels, dtype=object)[block.argmax(axis=1)]
        return pd.Series(labels, dtype=object)
    v = block[:, 0]
    if column.type == "binary":
        chosen = np.asarray(column.levels, dtype=object)[(v > 0.5).astype(int)]
        if column.levels == ("0", "1"):
            return chosen.astype(int)
        if column.levels[1] in ("true", "True", "TRUE"):
            return chosen == column.levels[1]
        return pd.Series(chosen, dtype=object)
    if column.type == "count":
        return np.maximum(np.round(v), 0).astype(np.int64)
    v = v * column.scale + column.shift
    v = np.exp(v) if column.type == "positive" else v
    if column.integer:
        return np.round(v).astype(np.int64)
    return v if column.decimals is None else _to_decimals(v, column)


def _to_decimals(v: np.ndarray, column: Column) -> np.ndarray:
    """``v`` rounded to the column's ``decimals`` places, as its cells are written; a positive
    column keeps its smallest positive value at that precision rather than 0."""
    d = column.decimals or 0
    rounded = np.round(v, d)
    return np.maximum(rounded, 10.0**-d) if column.type == "positive" else rounded


def load_table(path: str | Path, overrides: str = "") -> Dataset:
    """A CSV table as a :class:`Dataset`, split 80/10/10 by the seeded permutation.

    ``overrides`` are column types (``TrainConfig.schema``: a TOML file or inline
    ``name=type;...``); the reals and the logs of positives are standardized by the mean
    and standard deviation of their observed train cells.
    """
    path = Path(path)
    cells = read_cells(path)
    n = len(cells)
    if n < 3:
        raise DataError(
            f"{path} has {n} data rows, but at least 3 are needed to split it into train, "
            "valid and test. Provide more rows."
        )
    n_held = max(1, n // 10)
    train, valid, test = split_indices(n, (n - 2 * n_held, n_held, n_held))
    schema = infer_schema(cells, parse_overrides(overrides), train_rows=train, where=str(path))
    x = encode_table(schema, cells)
    return Dataset(path.stem, x[train], x[valid], x[test], table=schema)
