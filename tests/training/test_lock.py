"""One writer per run directory (the flock of pyro_vae.training.lock), and a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyro_vae.cli.main import main
from pyro_vae.training.checkpoint import DiskFullError, atomic_write, write_json
from pyro_vae.training.fit import fit, resume_config
from pyro_vae.training.lock import LOCK_NAME, RunLockedError, holder_of, run_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from pyro_vae.training.lock import run_lock
    with run_lock(sys.argv[1], command="pyro-vae train --resume " + sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
    """
)

RAW_FLOCK = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(600)
    """
)


def _holder(script: str, target: Path) -> subprocess.Popen[str]:
    """A process that holds the lock (``script`` given ``target``) until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A run directory whose lock another process holds (killed at teardown)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    proc = _holder(HOLD, run)
    yield run, proc
    _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_held_lock_refuses_a_second_writer_naming_the_holder(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    run, proc = held
    before = _listing(run)
    with pytest.raises(RunLockedError) as info, run_lock(run):
        pytest.fail("the lock was taken twice")
    message = str(info.value)
    assert f"process {proc.pid} on host {socket.gethostname()}" in message
    assert f"(command: pyro-vae train --resume {run})" in message
    assert repr(str(run)) in message and "is in use" in message
    since = holder_of(run)["since"]
    assert since.endswith("Z") and f"since {since}" in message  # ISO 8601, UTC
    assert "\n" not in message and "stopped before changing anything" in message
    assert _listing(run) == before  # the refused writer changed nothing


def test_kill_9_of_the_holder_releases_the_lock(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    run, proc = held
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / LOCK_NAME).exists()  # the killed holder's file stays: it blocks nothing
    with run_lock(run, command="second") as lock:
        assert lock is not None
        info = json.loads((run / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "second"
    assert not (run / LOCK_NAME).exists()
    assert (run / "config.json").exists()


def test_a_stale_lock_file_never_blocks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": 999999, "host": "elsewhere", "command": "pyro-vae train", "since": "2020"}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    with run_lock(run):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in run.iterdir()) == []


def test_a_lock_of_another_program_is_respected(tmp_path: Path) -> None:
    """A holder that wrote nothing into the file (yet) is still a holder."""
    run = tmp_path / "run"
    run.mkdir()
    proc = _holder(RAW_FLOCK, run / LOCK_NAME)
    try:
        with pytest.raises(RunLockedError, match="has not yet written its PID"), run_lock(run):
            pass
    finally:
        _stop(proc)


def test_the_lock_is_reentrant_and_leaves_no_trace(tmp_path: Path) -> None:
    run = tmp_path / "new" / "run"
    with run_lock(run) as outer, run_lock(run / ".." / "run") as inner:
        assert inner is outer and (run / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()  # the folders made for the lock, gone again
    with run_lock(run):
        (run / "config.json").write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_a_command_that_wrote_nothing_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """Names, bytes and modification times, the folder's own included (its mtime moves
    when an entry is created or removed, as the lock file is)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    os.utime(run, ns=(10**18, 10**18))

    def snapshot() -> list[tuple[str, int]]:
        return [(p.name, p.stat().st_mtime_ns) for p in [run, *sorted(run.iterdir())]]

    before = snapshot()
    with run_lock(run):
        assert snapshot() != before  # the lock file
    assert snapshot() == before
    with run_lock(run):
        write_json(run / "config.json", {})
    assert snapshot() != before and run.stat().st_mtime_ns != 10**18
    os.utime(tmp_path, ns=(10**18, 10**18))
    with run_lock(tmp_path / "new" / "run"):  # folders made for the lock, then removed
        pass
    assert tmp_path.stat().st_mtime_ns == 10**18


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    run, target = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    target.write_text("mine")
    (run / LOCK_NAME).symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"), run_lock(run):
        pass
    assert target.read_text() == "mine"


WORLD = textwrap.dedent(
    """
    import sys, torch
    from pyro_vae.training.distributed import setup, teardown
    from pyro_vae.training.lock import run_lock
    world, _ = setup(torch.device("cpu"))
    try:
        with run_lock(sys.argv[1], world=world) as lock:
            print(f"rank {world.rank} holds {lock is not None}", flush=True)
    finally:
        teardown(world)
    """
)


def _torchrun(script: Path, run: Path) -> subprocess.CompletedProcess[str]:
    """``script run`` under torchrun, two CPU processes (gloo on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += ["--master_addr", "127.0.0.1", f"--master_port={port}", str(script), str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_under_torchrun_rank_0_locks_for_the_group_and_a_refusal_stops_every_rank(
    tmp_path: Path,
) -> None:
    script, run = tmp_path / "world.py", tmp_path / "run"
    script.write_text(WORLD)
    done = _torchrun(script, run)
    assert done.returncode == 0, done.stderr
    assert "rank 0 holds True" in done.stdout and "rank 1 holds False" in done.stdout
    proc = _holder(HOLD, run)
    try:
        refused = _torchrun(script, run)
    finally:
        _stop(proc)
    assert refused.returncode != 0 and "holds" not in refused.stdout
    assert refused.stderr.count(f"RunLockedError: the run directory {str(run)!r}") == 2


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1200 kB tmpfs, mounted for the test (root only; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the tests as root)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_names_the_file_and_its_size_and_keeps_the_old_file(tiny_fs: Path) -> None:
    path = tiny_fs / "big.bin"
    write_json(tiny_fs / "small.json", {"ok": 1})
    atomic_write(path, lambda f: f.write(b"x" * 300_000), nbytes=300_000)
    with pytest.raises(DiskFullError) as info:
        atomic_write(path, lambda f: f.write(b"y" * 1_000_000), nbytes=1_000_000)
    message = str(info.value)
    assert f"could not write {str(path)!r} (about 1.0 MB)" in message
    assert "file system is full" in message and "Errno" not in message
    assert isinstance(info.value, OSError) and info.value.errno == 28
    assert path.read_bytes() == b"x" * 300_000
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["big.bin", "small.json"]


FLAGS = ["--hidden", "32", "--latent-dim", "2", "--quiet", "--seed", "7"]
FLAGS += ["--eval-num-samples", "2", "--eval-num-points", "10"]


def _fill(mount: Path, leave: int) -> Path:
    """A file that leaves about ``leave`` bytes free on ``mount``."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_stops_a_resume_with_exit_2_and_a_resume_after_is_exact(
    tiny_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained, full, run = tmp_path / "trained", tmp_path / "full", tiny_fs / "run"
    assert main(["train", "--out", str(trained), "--epochs", "2", *FLAGS]) == 0
    assert main(["train", "--out", str(full), "--epochs", "4", *FLAGS]) == 0
    shutil.copytree(trained, run)
    checkpoint = (run / "checkpoint.safetensors").read_bytes()
    model = (run / "model.safetensors").stat().st_size
    # room for the logs and the model, which a resume rewrites first, but not a checkpoint
    assert len(checkpoint) > model + 8 * 4096
    filler = _fill(tiny_fs, model + 6 * 4096)
    with pytest.raises(DiskFullError) as info:  # in Python: the call that continues
        fit(resume_config(run, epochs=4), resume=True, progress=False)
    said = str(info.value)
    assert "is intact at its last checkpoint (after epoch 2)" in said
    assert f"continue it with fit(resume_config({str(run)!r}), resume=True)." in said
    assert info.value.run_dir == run and info.value.path == run / "checkpoint.safetensors"
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    size = f"{len(checkpoint) / 1e3:.1f} kB"
    assert f"could not write {str(run / 'checkpoint.safetensors')!r} (about {size})" in err
    assert "its file system is full" in err
    assert "is intact at its last checkpoint (after epoch 2)" in err
    assert f"continue it with pyro-vae train --resume {run}." in err
    assert "OSError" not in err and "Errno" not in err and "Traceback" not in err
    assert err.startswith("pyro-vae: error: ") and err.count("\n") == 2  # one paragraph
    assert (run / "checkpoint.safetensors").read_bytes() == checkpoint
    assert not [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert not (run / LOCK_NAME).exists()
    filler.unlink()  # space freed: the same command continues exactly
    assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 0
    for name in ("metrics.jsonl", "model.safetensors", "checkpoint.safetensors"):
        assert (run / name).read_bytes() == (full / name).read_bytes(), name
