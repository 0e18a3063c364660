"""One writer per run directory, from the command line: a second writer exits 2 at once."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro_vae.cli.main import main
from pyro_vae.training.lock import LOCK_NAME

FAST = ["--hidden", "32", "--latent-dim", "2", "--quiet", "--seed", "7"]
FAST += ["--eval-num-samples", "2", "--eval-num-points", "10"]

HOLD = textwrap.dedent(
    """
    import sys, time
    from pyro_vae.training.lock import run_lock
    with run_lock(sys.argv[1], command="pyro-vae holder " + sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
    """
)

# pyro-vae: error: the run directory 'RUN' is in use: process PID on host HOST (command:
# COMMAND) has held it since ISO-TIME, ...
REFUSED = re.compile(
    r"pyro-vae: error: the run directory '(?P<run>[^']+)' is in use: process (?P<pid>\d+) on "
    r"host (?P<host>\S+) \(command: (?P<command>[^)]*)\) has held it since (?P<since>\S+Z)\b"
)


def _refused(err: str, run: Path, pid: int) -> re.Match[str]:
    """``err`` is the one-paragraph refusal naming ``run`` and its holder ``pid``."""
    match = REFUSED.search(err)
    assert match is not None, err
    assert match["run"] == str(run) and int(match["pid"]) == pid, err
    assert match["host"] == socket.gethostname(), err
    assert err.count("\n") == 2 and "Traceback" not in err and "Error:" not in err, err
    return match


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits run trained 2 epochs (tests copy it before they change it)."""
    run = tmp_path_factory.mktemp("lock") / "run"
    assert main(["train", "--out", str(run), "--epochs", "2", *FAST]) == 0
    return run


@pytest.fixture(scope="module")
def six_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run trained 6 epochs without a stop: what a resume to 6 must reproduce."""
    run = tmp_path_factory.mktemp("lock") / "full"
    assert main(["train", "--out", str(run), "--epochs", "6", *FAST]) == 0
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _same(a: Path, b: Path) -> None:
    for name in ("metrics.jsonl", "model.safetensors", "checkpoint.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Holders:
    """Processes that hold the lock of a folder until stopped (all stopped at teardown)."""

    def __init__(self) -> None:
        self.procs: dict[Path, subprocess.Popen[str]] = {}

    def hold(self, folder: Path) -> int:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
        )
        self.procs[folder] = proc
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc.pid

    def stop(self, folder: Path) -> None:
        proc = self.procs.pop(folder)
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def holders() -> Iterator[Holders]:
    held = Holders()
    yield held
    for folder in list(held.procs):
        held.stop(folder)


def _train(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pyro_vae", "train", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_resumes_started_together_one_runs_one_is_refused(run: Path, six_epochs: Path) -> None:
    procs = [_train("--resume", str(run), "--epochs", "6", "--quiet") for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    codes = sorted(proc.returncode for proc in procs)
    assert codes == [0, 2], outs
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    match = _refused(outs[loser][1], run, procs[winner].pid)
    assert match["command"] == f"pyro-vae train --resume {run} --epochs 6 --quiet"
    assert outs[loser][0] == ""  # refused before it said or did anything
    assert not (run / LOCK_NAME).exists()
    _same(run, six_epochs)


def test_a_held_lock_refuses_train_evaluate_and_sample_into_the_run(
    run: Path, tmp_path: Path, holders: Holders
) -> None:
    pid = holders.hold(run)
    before = _snapshot(run)
    for argv in (
        ["train", "--resume", str(run), "--epochs", "3"],
        ["evaluate", str(run), "--num-samples", "2", "--num-points", "5"],
        ["sample", str(run)],  # into the run (RUN/samples.png): a writer too
    ):
        _refused(_main_err(argv), run, pid)
    assert _snapshot(run) == before
    fresh = tmp_path / "fresh"
    pid = holders.hold(fresh)  # a new run's folder, taken by another command first
    _refused(_main_err(["train", "--out", str(fresh), "--epochs", "1", *FAST]), fresh, pid)
    assert sorted(p.name for p in fresh.iterdir()) == [LOCK_NAME]
    # a reader needs no lock: samples to a file outside the run, while it is held
    assert main(["sample", str(run), "--out", str(tmp_path / "s.npy"), "--num", "2"]) == 0


def test_compare_twice_on_one_folder_refuses_the_second_and_resumes_after(
    tmp_path: Path, holders: Holders, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", "--objectives", "elbo", "--seeds", "1", "--out", str(out), "--epochs", "1"]
    argv += FAST
    pid = holders.hold(out)  # another compare into the same folder
    _refused(_main_err(argv), out, pid)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    holders.stop(out)
    pid = holders.hold(out / "elbo" / "seed7")  # one of its runs, written by another command
    _refused(_main_err(argv), out / "elbo" / "seed7", pid)
    holders.stop(out / "elbo" / "seed7")
    capsys.readouterr()
    assert main(argv) == 0  # the first one ended: this one runs, and a third reads it back
    assert "elbo seed 7: trained" in capsys.readouterr().out
    assert main(argv) == 0
    assert "elbo seed 7: done" in capsys.readouterr().out
    assert not list(out.rglob(LOCK_NAME))


def _main_err(argv: list[str]) -> str:
    """Run ``pyro-vae ARGV`` in this process, which must exit 2; its stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    assert code == 2, (argv, err.getvalue())
    return err.getvalue()


def test_a_second_torchrun_group_on_a_held_run_is_refused(run: Path, holders: Holders) -> None:
    pid = holders.hold(run)  # the first group's rank 0, or any other writer
    before = _snapshot(run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += ["--master_addr", "127.0.0.1", f"--master_port={port}", "-m", "pyro_vae"]
    cmd += ["train", "--resume", str(run), "--epochs", "3", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    line = next(x for x in done.stderr.splitlines() if x.startswith("pyro-vae: error:"))
    _refused(line + "\n(run with --debug for the traceback)\n", run, pid)
    assert _snapshot(run) == before
