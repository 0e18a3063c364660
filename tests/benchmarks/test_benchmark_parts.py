"""``python -m benchmarks.parts`` runs end to end in its --smoke mode (no timing is asserted)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch


def test_parts_benchmark_smoke_writes_one_table(tmp_path: Path) -> None:
    module = importlib.import_module("benchmarks.parts")  # what python -m benchmarks.parts runs
    threads = torch.get_num_threads()
    assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # restored
    record = json.loads((tmp_path / "parts.json").read_text())
    rows = {r["name"]: r for r in record["rows"]}
    assert list(rows) == [
        "standard",
        "VampPrior",
        "mixture prior",
        "IAF guide",
        "two stochastic layers",
    ]
    assert rows["VampPrior"]["prior"].startswith("vamp") and rows["IAF guide"]["guide"].startswith(
        "iaf"
    )
    assert rows["two stochastic layers"]["latent_dims"] == [6, 3]
    for r in rows.values():
        assert (
            r["test_nll"] > 0
            and abs(r["test_elbo"] - (r["test_reconstruction"] - r["test_kl"])) < 1e-3
        )
    table = (tmp_path / "parts.md").read_text()
    assert table.count("\n| ") == 6 and "--smoke" in table  # header + five rows, and the command
    assert record["command"].startswith("python -m benchmarks.parts --smoke")
