"""Training on several processes with torchrun and gloo on 127.0.0.1 (CPU)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pyro_vae.training.checkpoint import load, read_tensors

WORKER = Path(__file__).resolve().parents[1] / "ddp_worker.py"
FAST = [
    "--hidden",
    "32",
    "--latent-dim",
    "2",
    "--quiet",
    "--eval-num-samples",
    "5",
    "--eval-num-points",
    "20",
    "--seed",
    "1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr",
        "127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def test_split_batch_step_equals_one_process_step(tmp_path: Path) -> None:
    """Global batch of 7 rows split 4/3 over two ranks: same gradients and update as one."""
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    r1 = _run([sys.executable, str(WORKER), str(one)])
    assert r1.returncode == 0, r1.stderr
    r2 = _run(_torchrun(str(WORKER), str(two)))
    assert r2.returncode == 0, r2.stderr
    a, b = load_file(one), load_file(two)
    assert a.keys() == b.keys() and any(k.startswith("grad.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_two_processes_train_resume_and_match(tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    r = _run(_torchrun("-m", "pyro_vae", "train", "--epochs", "3", "--out", str(full), *FAST))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("test split") == 1  # only rank 0 reports
    r = _run(_torchrun("-m", "pyro_vae", "train", "--epochs", "2", "--out", str(part), *FAST))
    assert r.returncode == 0, r.stderr
    r = _run(
        _torchrun(
            "-m", "pyro_vae", "train", "--epochs", "3", "--resume", "--out", str(part), "--quiet"
        )
    )
    assert r.returncode == 0, r.stderr
    assert (full / "metrics.jsonl").read_text() == (part / "metrics.jsonl").read_text()
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, meta = read_tensors(full / "checkpoint.safetensors")
    assert meta["world_size"] == 2 and meta["epoch"] == 3


def _child_with_local_rank(parent: int, local_rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"LOCAL_RANK={local_rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_killing_one_rank_fails_clearly_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = _torchrun("-m", "pyro_vae", "train", "--epochs", "500", "--out", str(out), *FAST)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    victim = _child_with_local_rank(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "lost contact with the other training processes" in output or "stopped by" in output
    assert "--resume" in output
    _, meta = read_tensors(out / "checkpoint.safetensors")  # whole and readable
    assert 1 <= meta["epoch"] <= len(metrics.read_text().splitlines())
    load(out)  # model.safetensors too
    lines = [json.loads(s) for s in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, len(lines) + 1))
