"""benchmarks/gpu_check: its CPU-side logic (the plan, the budget, the report) in dry-run
mode and piece by piece; the GPU steps themselves run only on a GPU machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import gpu_check
from benchmarks.gpu_check import BUDGET_S, Step, find_shared, link_packages, plan, run_step

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_plans_every_step_within_the_budget(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("pyro_ppl-1.9.2-py3-none-any.whl", "arviz-0.23.4-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    out = tmp_path / "out"
    cmd = ["bash", "benchmarks/gpu_check", "--dry-run", "--wheels", str(wheels), "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=120)
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["install", "tests", "speed", "iw"]
    assert all(s["status"] == "planned" for s in steps.values())
    assert sum(s["timeout_s"] for s in steps.values()) <= BUDGET_S - 20
    install = steps["install"]["command"]
    assert {"--no-index", "--no-deps", "--target"} <= set(install)
    assert sum(c.endswith(".whl") for c in install) == 2
    assert "-m" in steps["tests"]["command"] and "cuda" in steps["tests"]["command"]
    speed = steps["speed"]["command"]
    assert speed[speed.index("--batches") + 1] == "128,1024"
    assert speed[speed.index("--device") + 1] == "cuda"
    assert str(out) in " ".join(speed)  # everything goes under $OUT
    assert report["wheels"] == str(wheels) and report["dry_run"] is True


def test_the_wheels_are_found_in_shared_or_beside_the_checkout(tmp_path: Path) -> None:
    checkout = tmp_path / "repo"
    (tmp_path / "shared" / "wheels" / "gpu-py312").mkdir(parents=True)
    checkout.mkdir()
    assert find_shared(checkout, "wheels/gpu-py312") == tmp_path / "shared/wheels/gpu-py312"
    (checkout / "shared" / "wheels" / "gpu-py312").mkdir(parents=True)
    assert find_shared(checkout, "wheels/gpu-py312") == checkout / "shared/wheels/gpu-py312"
    assert find_shared(checkout, "data") is None
    assert find_shared(checkout, "data", "/given") == Path("/given")


def test_a_checkout_gets_the_package_links_it_lacks(tmp_path: Path) -> None:
    for name in ("pyro_vae", "models", "guides"):
        (tmp_path / name).mkdir()
    assert len(link_packages(tmp_path)) == 2
    assert (tmp_path / "pyro_vae" / "models").resolve() == (tmp_path / "models").resolve()
    assert link_packages(tmp_path) == []  # there now


def test_a_step_past_its_limit_is_recorded_and_the_check_goes_on(tmp_path: Path) -> None:
    slow = Step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=6)
    run_step(slow, {}, tmp_path, time.monotonic() + 60)
    assert slow.status == "timed out" and slow.seconds < 20
    late = Step("late", [sys.executable, "-c", "pass"], timeout_s=60)
    run_step(late, {}, tmp_path, time.monotonic() + 2)  # no time left
    assert late.status == "skipped"
    ok = Step("ok", [sys.executable, "-c", "print('hi')"], timeout_s=60)
    run_step(ok, {}, tmp_path, time.monotonic() + 60)
    assert ok.status == "ok" and "hi" in (tmp_path / "ok.log").read_text()


def test_the_report_reads_the_figures_against_the_goals(tmp_path: Path) -> None:
    row = {
        "batch": 128,
        "ratio_vs_reference": 1.1,
        "ratio_spread": {"min": 1.0},
        "images_per_s": {"pyro-vae": 350_000.0},
    }
    (tmp_path / "speed.json").write_text(json.dumps({"training": [row]}))
    (tmp_path / "iw.json").write_text(json.dumps({"seconds": 7.5}))
    found = gpu_check.verdict(plan(tmp_path, None, tmp_path / "t"), tmp_path)
    assert found["figures"] == {
        "batch_128": {
            "ratio_vs_reference": 1.1,
            "ratio_spread": {"min": 1.0},
            "images_per_s": 350_000.0,
        },
        "iw_seconds": 7.5,
    }
    assert found["goals"]["images_per_s"] == 300_000


def test_the_cuda_graph_contender_is_tested_timed_and_reported(tmp_path: Path) -> None:
    """The step as a CUDA graph (TrainConfig.cuda_graphs): its CUDA tests run, and its row
    of speed.json reaches gpu_check.json and speed.md."""
    from benchmarks.speed import GRAPH, markdown

    tests = {s.name: s for s in plan(tmp_path, None, tmp_path / "t")}["tests"].command
    assert "tests/training/test_cudagraph.py" in tests
    spread = {"min": 1.2, "q1": 1.3, "median": 1.4, "q3": 1.5, "max": 1.6}
    row = {
        "architecture": "200-200-50 tanh (IWAE)",
        "batch": 128,
        "rows": 60000,
        "steps_per_block": 469,
        "pairs": 5,
        "ratio_vs_reference": 1.1,
        "ratio_spread": spread,
        "ratio_vs_reference_fused": 1.0,
        "pair_ratios": {},
        "images_per_s": {"pyro-vae": 3e5, "reference": 2.7e5, "reference (fused Adam)": 2.8e5},
        "cuda_graph": "used for batches (128, 1, 28, 28)",
        "ratio_vs_reference_cuda_graph": 1.4,
        "cuda_graph_spread": spread,
    }
    row["images_per_s"][GRAPH] = 3.8e5  # type: ignore[index]
    (tmp_path / "speed.json").write_text(json.dumps({"training": [row]}))
    graph = gpu_check.verdict([], tmp_path)["figures"]["batch_128"]["cuda_graph"]
    assert graph["used"].startswith("used") and graph["images_per_s"] == 3.8e5
    assert graph["ratio_vs_reference"] == 1.4
    result = {"command": "c", "machine": "m", "date": "d", "load_start": [], "load_end": []}
    iw = {"k": 5000, "points": 10, "images_per_s": {"pyro-vae": 1.0, "reference": 1.0}}
    text = markdown({**result, "training": [row], "iw": {**iw, "ratio_vs_reference": 1.0}})
    assert f"{GRAPH}: TrainConfig(cuda_graphs=True)" in text
    assert "| 200-200-50 tanh (IWAE) | 128 | 380000 | **1.40** |" in text
