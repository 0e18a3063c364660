"""Tests of pyro_vae.data.tables and .encoding: a CSV with a header as a table, its inferred
and overridden column types, the encoding and its inverse, and the tables refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from table_helpers import COLUMNS, TYPES, run_cli, write_table

from pyro_vae.config import load_toml
from pyro_vae.data import DataError, TableSchema, decode_table, encode_table, load_dataset
from pyro_vae.data.encoding import table_cells
from pyro_vae.data.tables import infer_schema, is_table_csv, read_cells


def test_types_are_inferred_and_missing_cells_are_masked(tmp_path: Path) -> None:
    data = load_dataset(write_table(tmp_path / "t.csv"))
    schema = data.table
    assert schema is not None
    assert [c.type for c in schema.columns] == list(TYPES)
    assert schema.names == list(COLUMNS)
    assert schema.columns[4].levels == ("blue", "green", "red")
    assert data.data_shape == (schema.width,) == (1 + 1 + 1 + 1 + 3 + 5,)
    x = torch.cat([data.train, data.valid, data.test])
    observed = x[:, -5:]
    assert set(observed.unique().tolist()) == {0.0, 1.0}
    assert int((observed == 0).sum()) == 60 // 7 + (60 % 7 > 3)  # one cell every 7 rows
    blocks = x[:, :-5]
    assert bool((blocks[observed[:, 4] == 0][:, 4:7] == 0).all())  # missing level: zeros


def test_empty_na_and_nan_are_missing(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("a,b\n1.5,x\n,y\nNA,x\nNaN,y\n2.5,\n")
    cells = read_cells(path)
    assert cells["a"].isna().tolist() == [False, True, True, True, False]
    assert cells["b"].isna().tolist() == [False, False, False, False, True]


def test_a_headerless_numeric_csv_stays_an_array(tmp_path: Path) -> None:
    (tmp_path / "plain.csv").write_text("1,2\n3,4\n5,6\n")
    (tmp_path / "named.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    assert not is_table_csv(tmp_path / "plain.csv")
    assert not is_table_csv(tmp_path / "named.csv")  # numbers only: today's array
    assert load_dataset(tmp_path / "plain.csv").table is None
    assert load_dataset(tmp_path / "named.csv", schema="a=real").table is not None


def test_the_schema_overrides_inline_and_from_toml(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.csv")
    data = load_dataset(path, schema="visits=categorical;smoker=categorical")
    assert data.table is not None
    kinds = {c.name: c for c in data.table.columns}
    assert kinds["visits"].type == "categorical" and kinds["visits"].levels[0] == "0"
    assert kinds["smoker"].levels == ("0", "1")
    toml = tmp_path / "schema.toml"
    toml.write_text('[data]\nvisits = "real"\n')
    assert load_dataset(path, schema=str(toml)).table.columns[2].type == "real"  # type: ignore[union-attr]
    config = tmp_path / "c.toml"
    config.write_text('[train]\nepochs = 2\n[data]\nvisits = "real"\ncolour = "categorical"\n')
    assert load_toml(config).train.schema == "visits=real;colour=categorical"
    with pytest.raises(DataError, match="type 'ordinal'"):
        load_dataset(path, schema="visits=ordinal")
    with pytest.raises(DataError, match=r"column\(s\) \['nope'\]"):
        load_dataset(path, schema="nope=real")


def test_encoding_round_trips_values_and_labels(tmp_path: Path) -> None:
    path = write_table(tmp_path / "t.csv", missing=False)
    cells = read_cells(path)
    schema = infer_schema(cells)
    back = decode_table(schema, encode_table(schema, cells))
    original = pd.read_csv(path)
    assert list(back.columns) == list(original.columns)
    np.testing.assert_allclose(back["height"], original["height"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back["weight"], original["weight"], rtol=1e-5)
    assert back["visits"].tolist() == original["visits"].tolist()
    assert back["smoker"].tolist() == original["smoker"].tolist()
    assert back["colour"].tolist() == original["colour"].tolist()
    again = TableSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again == schema
    cells_from_frame = table_cells(schema, original)
    assert torch.equal(encode_table(schema, cells_from_frame), encode_table(schema, cells))


def test_values_are_written_with_the_decimals_of_the_data(tmp_path: Path) -> None:
    """Real and positive cells come back at the precision the column was written with; a
    column with a cell in exponent notation is left unrounded; older schemas load."""
    path = tmp_path / "d.csv"
    path.write_text(
        "length,mass,tiny,shift\n"
        + "".join(
            f"{30 + i * 1.7:.1f},{0.1 + i * 0.013:.3f},{i + 1}e-6,{i - 4.25:.2f}\n"
            for i in range(9)
        )
    )
    schema = infer_schema(read_cells(path))
    kinds = {c.name: (c.type, c.decimals) for c in schema.columns}
    assert kinds == {
        "length": ("positive", 1),
        "mass": ("positive", 3),
        "tiny": ("positive", None),
        "shift": ("real", 2),
    }
    rng = np.random.default_rng(0)
    draws = decode_table(schema, torch.from_numpy(rng.normal(size=(50, schema.width + 4))))
    for name, places in (("length", 1), ("mass", 3), ("shift", 2)):
        values = draws[name].to_numpy()
        np.testing.assert_array_equal(values, np.round(values, places))
        assert not np.array_equal(values, np.round(values, places - 1))
    assert (draws["mass"] > 0).all()  # positive stays positive after rounding
    assert not np.array_equal(draws["tiny"], np.round(draws["tiny"], 8))  # not rounded
    legacy = schema.to_dict()
    for column in legacy["columns"]:
        del column["decimals"]
    assert TableSchema.from_dict(legacy).columns[0].decimals is None


def test_true_false_columns_are_binary_and_keep_their_spelling(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text(
        "flag,v\n" + "".join(f"{'true' if i % 2 else 'false'},{i}.5\n" for i in range(9))
    )
    schema = load_dataset(path).table
    assert schema is not None and schema.columns[0].type == "binary"
    assert schema.columns[0].levels == ("false", "true")


BAD_TABLES = [
    ("empty", "a,b,c\n1,,x\n2,NA,y\n3,,x\n4,,y\n", ("column 2 ('b')", "empty throughout")),
    (
        "id",
        "name,v\n" + "".join(f"p{i},{i}.5\n" for i in range(8)),
        ("column 1 ('name')", "every row has its own level", "line 9"),
    ),
    (
        "mixed",
        "a,b\n1.5,2\n2.5,3\n3.5,x\n4.5,5\n",
        ("line 4, column 2", "'x'", "'b'", "mixes text and numbers"),
    ),
    ("duplicate", "a,b,a\n1,2,3\nx,3,4\ny,4,5\n", ("line 1", "'a' twice", "columns 1 and 3")),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD_TABLES, ids=[c[0] for c in BAD_TABLES])
def test_bad_tables_are_refused_naming_column_and_line(
    tmp_path: Path, case: str, text: str, expected: tuple[str, ...]
) -> None:
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    for part in expected:
        assert part in str(info.value), (part, str(info.value))
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--dataset", str(path), "--out", str(run), "--quiet")
    assert code == 2 and expected[0] in err
    assert not run.exists()  # the run is left unchanged: nothing was written


def test_penguins_is_a_table_with_missing_cells() -> None:
    penguins = pytest.importorskip("palmerpenguins")
    path = Path(penguins.__file__).parent / "data" / "penguins.csv"
    data = load_dataset(path)
    assert data.table is not None
    types = {c.name: c.type for c in data.table.columns}
    assert types["species"] == "categorical" and types["bill_length_mm"] == "positive"
    assert sum(data.split(s).shape[0] for s in ("train", "valid", "test")) == 344
    assert bool((torch.cat([data.train, data.valid, data.test])[:, -8:] == 0).any())


def test_new_rows_outside_a_columns_support_are_refused(tmp_path: Path) -> None:
    schema = infer_schema(read_cells(write_table(tmp_path / "t.csv", missing=False)))
    good = pd.DataFrame(
        {"height": [1.0], "weight": [2.0], "visits": [3], "smoker": [1.0], "colour": ["red"]}
    )
    assert encode_table(schema, table_cells(schema, good)).shape == (1, schema.width)
    for column, value, expected in (
        ("visits", 2.5, "not a count"),
        ("weight", -1.0, "not a positive number"),
        ("smoker", 2, "not one of the levels ['0', '1']"),
        ("colour", "mauve", "not one of the levels"),
        ("height", "tall", "not a number"),
    ):
        bad = good.astype(object).copy()
        bad.loc[0, column] = value
        with pytest.raises(DataError, match=f"line 2, column '{column}'") as info:
            encode_table(schema, table_cells(schema, bad))
        assert expected in str(info.value)


def test_train_takes_the_schema_from_a_file_or_the_configs_data_table(tmp_path: Path) -> None:
    data = write_table(tmp_path / "t.csv", n=30)
    types = tmp_path / "types.toml"
    types.write_text('visits = "categorical"\n')
    config = tmp_path / "c.toml"
    config.write_text(
        "[train]\nepochs = 1\nbatch_size = 8\neval_num_samples = 2\n"
        '[data]\nsmoker = "categorical"\n'
    )
    for name, flags in (
        ("file", ["--schema", str(types), "--epochs", "1"]),
        ("data", ["--config", str(config)]),
    ):
        run = tmp_path / name
        code, said, err = run_cli(
            "train", "--dataset", str(data), "--out", str(run), "--quiet", *flags
        )
        assert code == 0, err
        assert "columns of t (types inferred" in said and "colour" in said
        kinds = {c.name: c.type for c in TableSchema.load(run).columns}
        assert kinds["visits" if name == "file" else "smoker"] == "categorical"
        saved = json.loads((run / "config.json").read_text())
        assert saved["train"]["binarize"] == "none"
        assert saved["vae"]["likelihood"].startswith("table:columns=")
