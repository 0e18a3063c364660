"""Tests of pyro_vae.analysis.impute and ``pyro-vae impute``: MIWAE's importance resampling
fills the missing cells, and every observed cell comes back exactly as it was given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from table_helpers import run_cli, table_text, train_table_run

from pyro_vae import TableSchema, impute, load
from pyro_vae.data.tables import MISSING

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_table_run(tmp_path_factory.mktemp("impute"))


def _incomplete(path: Path) -> Path:
    """Odd but valid spellings in observed cells, and missing cells of every kind."""
    lines = table_text(n=30, seed=5).splitlines()
    lines[1] = "0.50,20.100,007,1,red"  # trailing zeros, a zero-padded count
    lines[2] = " 1.5e0,NA,3,,green"  # an exponent and a space
    lines[3] = "NaN,18.0,,0,"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_fills_every_missing_cell_and_keeps_the_others_byte_for_byte(
    run: Path, tmp_path: Path
) -> None:
    data = _incomplete(tmp_path / "incomplete.csv")
    out = tmp_path / "filled.csv"
    code, said, err = run_cli("impute", str(run), "--data", str(data), "--out", str(out))
    assert code == 0, err
    before = pd.read_csv(data, dtype=str, keep_default_na=False)
    after = pd.read_csv(out, dtype=str, keep_default_na=False)
    empty = before.apply(lambda s: s.str.strip().isin(MISSING)).to_numpy()
    assert empty.sum() > 5 and f"filled {int(empty.sum())} empty cell(s)" in said
    assert (before.to_numpy()[~empty] == after.to_numpy()[~empty]).all()
    assert not after.apply(lambda s: s.str.strip().isin(MISSING)).to_numpy().any()
    assert after.loc[0, "visits"] == "007" and after.loc[0, "height"] == "0.50"
    assert after.loc[1, "height"] == " 1.5e0"
    assert set(after["colour"]) <= {"red", "green", "blue"}


def test_cli_draws_write_m_tables(run: Path, tmp_path: Path) -> None:
    data = _incomplete(tmp_path / "incomplete.csv")
    out = tmp_path / "filled.csv"
    code, _, err = run_cli(
        "impute", str(run), "--data", str(data), "--out", str(out), "--draws", "3"
    )
    assert code == 0, err
    tables = [pd.read_csv(tmp_path / f"filled_{m}.csv", dtype=str) for m in (1, 2, 3)]
    assert not out.exists()
    assert not tables[0].equals(tables[1]) or not tables[1].equals(tables[2])
    code, _, err = run_cli(
        "impute", str(run), "--data", str(data), "--out", str(out), "--draws", "0"
    )
    assert code == 2 and "--draws must be a positive int" in err


def test_a_dataframe_keeps_its_observed_values(run: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(_incomplete(tmp_path / "incomplete.csv"))
    vae, schema = load(run), TableSchema.load(run)
    state = torch.random.get_rng_state()
    filled = impute(vae, frame, schema=schema, num_samples=20, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    assert isinstance(filled, pd.DataFrame)
    assert not filled.isna().any().any()
    observed = frame.notna()
    for name in frame.columns:
        rows = observed[name].to_numpy()
        assert frame[name][rows].tolist() == filled[name][rows].tolist()
    again = impute(vae, frame, schema=schema, num_samples=20, seed=1)
    assert isinstance(again, pd.DataFrame) and again.equals(filled)


def test_an_array_with_nans_keeps_its_observed_bits(run: Path) -> None:
    vae, schema = load(run), TableSchema.load(run)
    rng = np.random.default_rng(0)
    array = np.column_stack(
        [
            rng.normal(0, 2, 12),
            rng.lognormal(3, 0.3, 12),
            rng.poisson(3, 12).astype(float),
            rng.integers(0, 2, 12).astype(float),
            np.zeros(12),
        ]
    )
    array[2, 0] = array[5, 1] = array[7, 3] = np.nan
    with pytest.raises(Exception, match="level"):  # colour's levels are text: 0 is not one
        impute(vae, array, schema=schema)
    text = array.astype(object)
    text[:, 4] = "red"
    frame = pd.DataFrame(text, columns=schema.names)
    draws = impute(vae, frame, schema=schema, draws=2, num_samples=10)
    assert isinstance(draws, list) and len(draws) == 2
    numbers = array[:, :4]
    for table in draws:
        got = table.to_numpy()[:, :4].astype(float)
        seen = ~np.isnan(numbers)
        assert np.array_equal(got[seen].view(np.int64), numbers[seen].view(np.int64))
        assert not np.isnan(got).any()
