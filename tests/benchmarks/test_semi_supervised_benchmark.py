"""``python -m benchmarks.semi_supervised --smoke`` runs end to end (no accuracy claims)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_semi_supervised_benchmark_smoke(tmp_path: Path) -> None:
    results = tmp_path / "res"
    cmd = [sys.executable, "-m", "benchmarks.semi_supervised", "--smoke"]
    cmd += ["--out", str(tmp_path / "runs"), "--results", str(results)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    summary = json.loads(results.with_suffix(".json").read_text())
    assert [(r["labelled"], r["status"]) for r in summary["rows"]] == [
        (20, "complete"),
        ("all", "complete"),
    ]
    for row in summary["rows"]:
        assert 0 <= row["test_error_pct"] <= 100 and row["test_nll"] > 0
    assert "python -m benchmarks.semi_supervised" in summary["command"]
    assert "| 20 | 0.1 N | 0 | 1 |" in results.with_suffix(".md").read_text()
    # run again: the finished runs are read back, not trained again
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    again = json.loads(results.with_suffix(".json").read_text())
    assert [r["test_nll"] for r in again["rows"]] == [r["test_nll"] for r in summary["rows"]]


def test_alpha_gets_its_own_run_and_no_ceiling_skips_the_ceiling(tmp_path: Path) -> None:
    """Also ``--first-seed``: seed 2 alone, as a second process beside seed 0 would run it."""
    results = tmp_path / "res"
    cmd = [sys.executable, "-m", "benchmarks.semi_supervised", "--smoke", "--alpha", "460"]
    cmd += ["--no-ceiling", "--first-seed", "2"]
    cmd += ["--out", str(tmp_path / "runs"), "--results", str(results)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    summary = json.loads(results.with_suffix(".json").read_text())
    rows = [(r["labelled"], r["alpha"], r["seed"]) for r in summary["rows"]]
    assert rows == [(20, 460.0, 2)]
    assert summary["rows"][0]["run_dir"].endswith("labelled-20-alpha-460/seed-2")
    assert "--alpha 460.0 --no-ceiling" in summary["command"]
    config = json.loads((tmp_path / "runs/labelled-20-alpha-460/seed-2/config.json").read_text())
    assert config["train"]["alpha"] == 460.0 and config["train"]["seed"] == 2


def test_a_copied_finished_run_trains_on_to_more_epochs(tmp_path: Path) -> None:
    """A finished run copied without its summary.json continues from its checkpoint to the
    larger ``--epochs`` (every epoch kept in metrics.jsonl), not back to its saved ones."""
    base = [sys.executable, "-m", "benchmarks.semi_supervised", "--smoke", "--no-ceiling"]
    first = tmp_path / "runs"
    subprocess.run(
        [*base, "--out", str(first), "--results", str(tmp_path / "a")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    on = tmp_path / "on"
    shutil.copytree(first, on)
    (on / "labelled-20/seed-0/summary.json").unlink()
    cmd = [*base, "--epochs", "2", "--out", str(on), "--results", str(tmp_path / "b")]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert (row["status"], row["epochs_done"]) == ("complete", 2)
