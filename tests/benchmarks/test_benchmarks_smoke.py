"""Every benchmark runs as ``python -m benchmarks.NAME`` from the repository root; the speed and
distributed benchmarks run end to end in smoke mode (no timing claims)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
needs_data = pytest.mark.skipif(
    not os.environ.get("PYRO_VAE_DATA"), reason="set PYRO_VAE_DATA to the shared data folder"
)


BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
# modules the benchmarks import, with no command line of their own: the hand-written VAE,
# and the tables, scores and other synthesizers of benchmarks.tabular
LIBRARIES = {"reference", "tabular_parts", "tabular_rivals"}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_runs_as_a_module(name: str) -> None:
    """The one way to run a benchmark, as every README shows it: ``python -m benchmarks.NAME``."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", "--help"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if name not in LIBRARIES:
        assert f"python -m benchmarks.{name}" in done.stdout


def test_docs_show_benchmarks_one_way() -> None:
    """No README or docs page runs a benchmark as a script path."""
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
    pages += sorted((ROOT / "docs").glob("*.rst"))
    for page in pages:
        text = page.read_text()
        assert "python benchmarks/" not in text, page


@needs_data
def test_speed_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "-m", "benchmarks.speed", "--smoke", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    archs = {r["architecture"] for r in result["training"]}
    assert archs == {"200-200-50 tanh (IWAE)", "400-50", "conv 32-64, fc 256, 50"}
    assert all(r["images_per_s"]["pyro-vae"] > 0 for r in result["training"])
    assert all(r["replayed"] for r in result["training"])  # the fast path was the one timed
    for r in result["training"]:  # paired step blocks: a median ratio with its spread
        assert r["pairs"] == len(r["pair_ratios"]["pyro-vae"]) >= 1
        assert r["ratio_spread"]["min"] <= r["ratio_vs_reference"] <= r["ratio_spread"]["max"]
    assert out.with_suffix(".md").read_text().count("|") > 10


def test_the_speed_verdict_needs_five_pairs_and_reports_their_spread() -> None:
    from benchmarks.speed import spread

    assert spread([1.0, 2.0, 3.0, 4.0, 5.0]) == {
        "min": 1.0,
        "q1": 2.0,
        "median": 3.0,
        "q3": 4.0,
        "max": 5.0,
    }
    cmd = [sys.executable, "-m", "benchmarks.speed", "--pairs", "3"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--pairs must be at least 5" in result.stderr


def test_speed_pool_pools_the_pairs_of_several_runs(tmp_path: Path) -> None:
    def run(name: str, pairs: list[float]) -> None:
        row = {"architecture": "a", "batch": 8, "pair_ratios": {"pyro-vae": pairs}}
        row["ratio_vs_reference"] = sorted(pairs)[len(pairs) // 2]
        (tmp_path / name).write_text(json.dumps({"training": [row]}))

    run("x-1.json", [0.9, 1.0, 1.1, 1.2, 1.3])
    run("x-2.json", [0.5, 0.6, 0.7, 0.8, 0.9])
    out = tmp_path / "pooled.json"
    cmd = [sys.executable, "-m", "benchmarks.speed_pool", "--out", str(out)]
    subprocess.run([*cmd, f"x={tmp_path}/x-*.json"], cwd=ROOT, check=True, capture_output=True)
    (row,) = json.loads(out.read_text())["labels"]["x"]
    assert len(row["pairs"]) == 10 and row["median"] == pytest.approx(0.9)
    assert row["spread"][0] == 0.5 and row["spread"][4] == 1.3
    assert row["share_at_least_1"] == pytest.approx(0.4)
    assert row["median_of_runs"] == pytest.approx((1.1 + 0.7) / 2)
    assert "**0.900**" in out.with_suffix(".md").read_text()
    missing = subprocess.run([*cmd, "y=/nonexistent-*.json"], cwd=ROOT, capture_output=True)
    assert missing.returncode == 2 and b"no file matches" in missing.stderr


def test_distributed_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "distributed.json"
    cmd = [sys.executable, "-m", "benchmarks.distributed", "--smoke", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["command"].startswith("python -m benchmarks.distributed --smoke")
    rows = result["rows"]
    assert [r["processes"] for r in rows] == [1, 1, 2] and all(r["images_per_s"] > 0 for r in rows)
    assert [r["step"] for r in rows] == ["replayed", "Pyro program", "Pyro program (DDP)"]
