"""The GPU check in one command, at most 8 minutes: tests, speed and IW evaluation on CUDA.

Usage, from the repository root of a checkout on a machine with one GPU::

    bash benchmarks/gpu_check            # or: python -m benchmarks.gpu_check
    python -m benchmarks.gpu_check --dry-run   # the plan only, no GPU needed

It runs, each step in its own process with its own time limit, and writes everything under
``$OUT`` (default ``gpu_check_out/``):

1. ``install``: the wheels of ``shared/wheels/gpu-py312`` (or ``../shared/...``, or
   ``--wheels``; the machine has torch but not Pyro or ArviZ) into a fresh target folder
   put first on ``PYTHONPATH``, with no network and no dependencies resolved; skipped when
   Pyro already imports. A checkout without the ``pyro_vae/models`` and
   ``pyro_vae/guides`` links (an editable install makes them) gets them.
2. ``tests``: ``pytest -m cuda`` over ``tests/training/test_cuda.py`` (checkpoint and
   resume, the replayed step, the NaN guard, no host sync in a step, mixed devices) and
   ``tests/training/test_cudagraph.py`` (the step captured as a CUDA graph: the same
   losses and weights as the replayed step, the NaN guard under capture, no host sync).
   ``tests.xml`` and ``tests.log``.
3. ``speed``: ``python -m benchmarks.speed --device cuda`` at batch 128 and 1024, the IWAE
   architecture, pyro-vae (the replayed step, and the step as a CUDA graph) against the
   hand-written reference on the same GPU, paired step blocks (``speed.json``,
   ``speed.md``).
4. ``iw``: the importance-weighted bound with k = 5000 on the 10,000 MNIST test images,
   timed after a warm-up (``iw.json``).

``gpu_check.json`` gathers each step's status, seconds and figures, beside the goals of
issue 16: >= 1.0x the reference at batch 128, >= 300,000 images/s, IW evaluation <= 10 s.
A step that fails or runs out of time is recorded and the next one runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEELS = "wheels/gpu-py312"
BUDGET_S = 480  # the whole check: 8 minutes
GOALS = {"ratio_at_128": 1.0, "images_per_s": 300_000, "iw_seconds": 10.0}


@dataclass
class Step:
    """One step of the check: a command, its time limit, and what came of it."""

    name: str
    command: list[str]
    timeout_s: int
    status: str = "planned"  # planned | ok | failed | timed out | skipped
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def find_shared(start: Path, what: str, given: str | None = None) -> Path | None:
    """``given``, else ``shared/<what>`` in ``start`` or its parent (the first that exists)."""
    if given:
        return Path(given)
    for base in (start / "shared", start.parent / "shared"):
        if (base / what).is_dir():
            return base / what
    return None


def plan(out: Path, wheels: Path | None, target: Path) -> list[Step]:
    """The steps, with limits summing to at most :data:`BUDGET_S` (a margin for the rest)."""
    py = sys.executable
    found = sorted(str(w) for w in (wheels.glob("*.whl") if wheels else []))
    install = [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    install += ["--no-cache-dir", "--upgrade", "--target", str(target), *found]
    tests = [py, "-m", "pytest", "-q", "-m", "cuda", "-rs", "-p", "no:cacheprovider"]
    tests += ["tests/training/test_cuda.py", "tests/training/test_cudagraph.py"]
    tests += [f"--junitxml={out / 'tests.xml'}"]
    speed = [py, "-m", "benchmarks.speed", "--device", "cuda", "--batches", "128,1024"]
    speed += ["--architectures", "200-200-50 tanh (IWAE)", "--rows", "60000"]
    speed += ["--block-rows", "60000", "--pairs", "5", "--no-eager-column", "--no-memory"]
    speed += ["--iw-points", "100", "--out", str(out / "speed.json")]
    iw = [py, "-m", "benchmarks.gpu_check", "--iw-only", "--out", str(out)]
    return [
        Step("install", install, 60),
        Step("tests", tests, 150),
        Step("speed", speed, 150),
        Step("iw", iw, 90),
    ]


def environment(target: Path, data: str | None) -> dict[str, str]:
    """The steps' environment: the wheels' folder first, then the checkout, the data."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(target), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    if data:
        env["PYRO_VAE_DATA"] = data
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def link_packages(root: Path) -> list[str]:
    """Make ``pyro_vae/models`` and ``pyro_vae/guides`` links where a checkout lacks them."""
    made = []
    for name in ("models", "guides"):
        link = root / "pyro_vae" / name
        if not link.exists() and (root / name).is_dir():
            link.symlink_to(Path("..") / name)
            made.append(str(link))
    return made


def run_step(step: Step, env: dict[str, str], out: Path, deadline: float) -> None:
    """Run ``step`` with its limit (cut to the time left); log to ``out/<name>.log``."""
    limit = min(step.timeout_s, int(deadline - time.monotonic()))
    if limit <= 5:
        step.status = "skipped"
        step.detail["why"] = "no time left of the check's budget"
        return
    start = time.monotonic()
    with open(out / f"{step.name}.log", "w") as log:
        log.write("$ " + shlex.join(step.command) + "\n")
        log.flush()
        try:
            rc = subprocess.run(
                step.command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=limit,
                check=False,
            ).returncode
            step.status = "ok" if rc == 0 else "failed"
            step.detail["returncode"] = rc
        except subprocess.TimeoutExpired:
            step.status = "timed out"
            step.detail["limit_s"] = limit
    step.seconds = round(time.monotonic() - start, 1)


def iw_timing(out: Path, k: int = 5000, points: int = 10_000) -> dict[str, Any]:
    """Time the IW bound (k draws) on the MNIST test images on CUDA; write ``iw.json``."""
    import pyro
    import torch

    from pyro_vae import VAE, VAEConfig, load_dataset, log_likelihood
    from pyro_vae.data import static_binarize

    device = torch.device("cuda")
    test = load_dataset("mnist", progress=False).test[:points]
    x = static_binarize(test, 0).to(device)  # (10000, 1, 28, 28)
    pyro.set_rng_seed(0)
    config = VAEConfig(data_shape=(1, 28, 28), latent_dim=50, hidden=(200, 200))
    vae = VAE(config).to(device)  # untrained: the time does not depend on the weights
    result: dict[str, Any] = {"k": k, "points": x.shape[0], "device": torch.cuda.get_device_name()}
    for max_elements in (2**25, 2**28):
        with torch.no_grad():
            log_likelihood(vae.model, vae.guide, x[:100], num_samples=k, max_elements=max_elements)
            torch.cuda.synchronize()
            start = time.perf_counter()
            ll = log_likelihood(vae.model, vae.guide, x, num_samples=k, max_elements=max_elements)
            torch.cuda.synchronize()
        result[f"seconds_max_elements_2^{max_elements.bit_length() - 1}"] = round(
            time.perf_counter() - start, 3
        )
        result["mean_log_likelihood"] = float(ll.mean())
    result["seconds"] = min(v for key, v in result.items() if key.startswith("seconds_"))
    result["goal_s"] = GOALS["iw_seconds"]
    (out / "iw.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def verdict(steps: list[Step], out: Path) -> dict[str, Any]:
    """Read the steps' files into the figures set against :data:`GOALS`."""
    found: dict[str, Any] = {}
    speed = out / "speed.json"
    if speed.is_file():
        rows = json.loads(speed.read_text())["training"]
        for r in rows:
            found[f"batch_{r['batch']}"] = {
                "ratio_vs_reference": r["ratio_vs_reference"],
                "ratio_spread": r["ratio_spread"],
                "images_per_s": r["images_per_s"]["pyro-vae"],
            }
            if "cuda_graph" in r:  # the step as a CUDA graph (TrainConfig.cuda_graphs)
                found[f"batch_{r['batch']}"]["cuda_graph"] = {
                    "used": r["cuda_graph"],
                    "ratio_vs_reference": r["ratio_vs_reference_cuda_graph"],
                    "ratio_spread": r["cuda_graph_spread"],
                    "images_per_s": r["images_per_s"]["pyro-vae (CUDA graph)"],
                }
    iw = out / "iw.json"
    if iw.is_file():
        found["iw_seconds"] = json.loads(iw.read_text())["seconds"]
    return {"goals": GOALS, "figures": found}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    p.add_argument("--wheels", help=f"the wheel folder (default: shared/{WHEELS} or ../shared/...)")
    p.add_argument("--dry-run", action="store_true", help="write the plan only; run nothing")
    p.add_argument("--iw-only", action="store_true", help="(internal) the IW timing step")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.iw_only:
        print(json.dumps(iw_timing(out)))
        return 0
    deadline = time.monotonic() + BUDGET_S - 20  # a margin to write the report
    wheels = find_shared(ROOT, WHEELS, args.wheels)
    data_dir = find_shared(ROOT, "data")
    data = os.environ.get("PYRO_VAE_DATA") or (str(data_dir) if data_dir else None)
    target = Path(os.environ.get("TMPDIR", "/tmp")) / f"pyro_vae_gpu_wheels_{os.getpid()}"
    steps = plan(out, wheels, target)
    env = environment(target, data)
    report: dict[str, Any] = {
        "root": str(ROOT),
        "wheels": str(wheels) if wheels else None,
        "data": data,
        "target": str(target),
        "budget_s": BUDGET_S,
        "dry_run": args.dry_run,
    }
    if not args.dry_run:
        report["linked"] = link_packages(ROOT)
        has_pyro = (
            subprocess.run(
                [sys.executable, "-c", "import pyro, arviz"],
                env=env,
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
        for step in steps:
            if step.name == "install" and (has_pyro or wheels is None):
                step.status = "skipped"
                step.detail["why"] = "Pyro imports already" if has_pyro else "no wheel folder"
                continue
            run_step(step, env, out, deadline)
            print(f"gpu_check: {step.name}: {step.status} in {step.seconds} s", flush=True)
        report.update(verdict(steps, out))
    report["steps"] = [asdict(s) for s in steps]
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({s.name: s.status for s in steps}))
    return 0 if all(s.status in ("ok", "skipped", "planned") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
