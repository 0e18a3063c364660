"""Training throughput with 1 and 2 processes (torchrun, gloo, CPU).

Usage (from the repository root)::

    PYRO_VAE_DATA=../shared/data python -m benchmarks.distributed --epochs 2 \\
        --out benchmarks/results/distributed.json

Each configuration runs ``torchrun --nproc_per_node=P -m pyro_vae train`` on
binarized MNIST with the IWAE paper's one-layer network (200-200 tanh, 50 latents,
global batch 100) and reads the images per second of the last epoch from the run's
``timing.jsonl``. With 2 processes each gets ``--threads-per-process`` threads (default:
cores / P), so both configurations use the same cores. ``--smoke`` is a tiny run for CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    nproc: int, epochs: int, dataset: str, extra: list[str], threads: int, replay: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_addr",
            "127.0.0.1",
            f"--master_port={_free_port()}",
            "-m",
            "pyro_vae",
            "train",
            "--dataset",
            dataset,
            "--epochs",
            str(epochs),
            "--out",
            str(out),
            "--quiet",
            "--replay",
            str(replay).lower(),
            *extra,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        timing = [json.loads(s) for s in (out / "timing.jsonl").read_text().splitlines()]
    return {
        "processes": nproc,
        "step": "replayed"
        if replay and nproc == 1
        else "Pyro program (DDP)"
        if nproc > 1
        else "Pyro program",
        "threads_per_process": threads,
        "images_per_s": timing[-1]["images_per_s"],
        "epoch_seconds": timing[-1]["seconds"],
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.distributed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distributed.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny run on digits, for CI")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.smoke:
        dataset, epochs = "digits", 1
        extra = ["--hidden", "32", "--eval-num-samples", "2", "--eval-num-points", "10"]
    else:
        dataset, epochs = "binarized-mnist", args.epochs
        extra = [
            "--hidden",
            "200,200",
            "--latent-dim",
            "50",
            "--batch-size",
            "100",
            "--binarize",
            "none",
            "--eval-num-samples",
            "10",
            "--eval-num-points",
            "100",
        ]
    # the replay (pyro_vae.training.replay) is a one-process fast path; under DDP every step
    # runs the Pyro program, so the like-for-like one-process row is the one with --replay false
    plan = [(1, True), (1, False), (2, True)]
    rows = [run(p, epochs, dataset, extra, max(1, cores // p), r) for p, r in plan]
    result = {
        "benchmark": "distributed",
        "command": " ".join(["python -m benchmarks.distributed", *sys.argv[1:]]),
        "dataset": dataset,
        "epochs": epochs,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cores": cores,
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "rows": rows,
        "speedup_2_over_1": rows[2]["images_per_s"] / rows[1]["images_per_s"],
        "speedup_2_over_1_replayed": rows[2]["images_per_s"] / rows[0]["images_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['processor']}, {cores} cores, torch {torch.__version__}  ",
        f"Date: {result['date']}  ",
        f"Load average: {', '.join(f'{v:.2f}' for v in result['load_average'])}",
        "",
        "| processes | step | threads each | images/s | s/epoch |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['processes']} | {r['step']} | {r['threads_per_process']} | "
        f"{r['images_per_s']:.0f} | {r['epoch_seconds']:.1f} |"
        for r in rows
    ]
    lines += [
        "",
        f"2 processes over 1 running the same step: {result['speedup_2_over_1']:.2f}x; "
        f"over 1 with the replay: {result['speedup_2_over_1_replayed']:.2f}x.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
