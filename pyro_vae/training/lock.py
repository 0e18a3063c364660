"""One writer per run directory: an exclusive operating-system lock held while a command writes.

Every command that writes a run directory (training, resuming, evaluating, comparing into
a folder) holds :func:`run_lock` on it for as long as it writes. The lock is the kernel's
advisory ``flock(LOCK_EX | LOCK_NB)`` on the file ``RUN/.pyro-vae.lock``:

- a second writer is refused at once, before it changes anything, with
  :class:`RunLockedError`, whose message names the holder (PID, host, command and since
  when), which the holder writes into the lock file once it holds the lock;
- the lock belongs to the open file, so the kernel releases it when the holder exits, however
  it exits (``kill -9`` included). The file's existence means nothing: a file left by a
  killed process never blocks a new command, which takes the lock and rewrites the file;
- the holder deletes the file when it releases the lock, and the folders it created for it
  when they are still empty; when nothing else in the folder was created, renamed or
  removed, it gives the folder back its modification time, so a command that failed before
  writing leaves no trace. A process that opened the old file in the meantime sees that the
  path no longer leads to it and opens the path again (the usual check of ``fstat``
  against ``stat``);
- readers (``load``, sampling to a file outside the run) take no lock: every file is
  replaced by an atomic rename, so a reader sees the old file or the new one;
- the lock is re-entrant within a process (a command that holds it may call
  :func:`~pyro_vae.training.fit.fit`,
  which takes it again), and under ``torchrun`` rank 0 takes it for the whole group: the
  other ranks wait for rank 0's answer and raise the same error if it was refused.

``flock`` locks are advisory and local to one kernel: they keep pyro-vae commands apart,
on one machine or on file systems whose ``flock`` is shared across machines (local disks,
recent NFS); they do not stop other programs from writing the files.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch.distributed as dist

from pyro_vae.training.checkpoint import CheckpointError, DiskFullError, is_disk_full
from pyro_vae.training.distributed import World

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "RunLockedError",
    "command_line",
    "holder_of",
    "naming_command",
    "run_lock",
]

LOCK_NAME = ".pyro-vae.lock"

_HELD: dict[Path, RunLock] = {}  # this process's locks, by resolved run directory
_HELD_GUARD = threading.Lock()
_COMMAND: contextvars.ContextVar[str | None] = contextvars.ContextVar("command", default=None)


class RunLockedError(CheckpointError):
    """Another process holds the run directory's lock; the message names it.

    A :class:`~pyro_vae.training.checkpoint.CheckpointError` (a run directory in the way,
    as a folder where a file belongs is), so every caller that reports one reports this.
    """


@dataclass
class RunLock:
    """A held lock: the open lock file and what was created to hold it."""

    run_dir: Path
    fd: int
    created: list[Path] = field(default_factory=list)  # folders made for it, innermost first
    depth: int = 1  # nested run_lock calls of this process
    before: _Listing | None = None  # the first folder that existed, as it was

    @property
    def path(self) -> Path:
        """The lock file, ``run_dir / LOCK_NAME``."""
        return self.run_dir / LOCK_NAME

    def release(self) -> None:
        """Delete the lock file and its empty new folders, then drop the lock (close)."""
        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # still under the lock: nobody else holds this inode
            for folder in self.created:
                try:
                    folder.rmdir()
                except OSError:  # not empty (the command wrote), or already gone
                    break
            if self.before is not None:
                self.before.restore_mtime()
        finally:
            os.close(self.fd)


@dataclass(frozen=True)
class _Listing:
    """A folder's entries (the lock file left out) and its times."""

    folder: Path
    entries: dict[str, tuple[int, int]]
    times_ns: tuple[int, int]  # (atime, mtime)

    @classmethod
    def of(cls, folder: Path) -> _Listing:
        st = os.stat(folder)
        return cls(folder, _entries(folder), (st.st_atime_ns, st.st_mtime_ns))

    def restore_mtime(self) -> None:
        """The folder's times as they were, if no entry but the lock file was created,
        renamed or removed (which is all that moves a folder's mtime)."""
        with contextlib.suppress(OSError):
            if _entries(self.folder) == self.entries:
                os.utime(self.folder, ns=self.times_ns)


def _entries(folder: Path) -> dict[str, tuple[int, int]]:
    """Name to (inode, mtime) of every entry but the lock file (an inode can be reused)."""
    with os.scandir(folder) as it:
        return {
            e.name: (e.inode(), e.stat(follow_symlinks=False).st_mtime_ns)
            for e in it
            if e.name != LOCK_NAME
        }


@contextlib.contextmanager
def naming_command(command: str) -> Iterator[None]:
    """Locks taken inside the block name ``command`` as their holder's command (the CLI
    names the command the user typed, also when :func:`~pyro_vae.cli.main.main` is called in a
    process)."""
    token = _COMMAND.set(command)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def command_line() -> str:
    """What a lock's holder runs: the command named by :func:`naming_command`, else this
    process's command line as a user would type it (``pyro-vae ...`` for the CLI)."""
    named = _COMMAND.get()
    if named is not None:
        return named
    argv = list(sys.argv) or ["python"]
    first = Path(argv[0])
    if first.name == "__main__.py" and first.parent.name == "pyro_vae":
        argv[0] = "pyro-vae"  # python -m pyro_vae
    elif first.name in ("pyro-vae", "pyro_vae"):
        argv[0] = "pyro-vae"
    return shlex.join(argv)


def holder_of(run_dir: str | Path, wait_s: float = 1.0) -> dict[str, Any]:
    """What the lock file of ``run_dir`` says about its holder (``{}`` if it says nothing).

    The holder writes the file just after it takes the lock; a reader that comes in between
    finds it empty and reads again, for at most ``wait_s`` seconds.
    """
    path = Path(run_dir) / LOCK_NAME
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(info, dict):
                return info
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.02)


def _refusal(run_dir: Path) -> RunLockedError:
    info = holder_of(run_dir)
    if info:
        since = str(info.get("since", "an unknown time"))
        ago = _ago(since)
        who = (
            f"process {info.get('pid', '?')} on host {info.get('host', '?')} (command: "
            f"{info.get('command', '?')}) has held it since {since}{ago}"
        )
    else:
        who = "another process holds it (it has not yet written its PID and host)"
    return RunLockedError(
        f"the run directory {str(run_dir)!r} is in use: {who}. Only one command may write a "
        "run directory at a time, so this one stopped before changing anything. Wait until "
        "that command ends, or stop it (a process that is killed releases the lock by "
        "itself), then run this one again."
    )


def _ago(since: str) -> str:
    try:
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(0, round((datetime.now(timezone.utc) - start).total_seconds()))
    return f", {seconds} s ago" if seconds < 120 else f", {seconds // 60} min ago"


def _new_folders(run_dir: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``run_dir``, innermost first."""
    missing = []
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _open_locked(run_dir: Path) -> tuple[int, list[Path], _Listing | None]:
    """Open, lock and check the lock file of ``run_dir``; raise RunLockedError if held."""
    path = run_dir / LOCK_NAME
    for _ in range(100):  # each retry follows a holder that released in between
        created = _new_folders(run_dir)
        try:  # the first folder that exists, as it is before the lock (and folders) made
            before = _Listing.of(created[-1].parent if created else run_dir)
        except FileNotFoundError:
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # a releasing holder removed the folder it had made
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refusal(run_dir) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            return fd, created, before
        os.close(fd)  # the holder deleted that file as it released: open the path again
    raise CheckpointError(f"could not take the lock {str(path)!r}: it kept being replaced")


def _write_holder(fd: int, command: str | None) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command if command is not None else command_line(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    data = (json.dumps(info) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as e:  # a full disk: the lock holds all the same, only unnamed
        if not is_disk_full(e):
            raise


def acquire(run_dir: str | Path, *, command: str | None = None) -> RunLock:
    """Take the lock of ``run_dir`` (creating the folder) or raise :class:`RunLockedError`.

    Re-entrant: a process that holds it gets the same :class:`RunLock` back (release it as
    many times). ``command`` is what the holder's entry says it runs (default: this
    process's command line).
    """
    key = Path(run_dir).resolve()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held.depth += 1
            return held
        if key.exists() and not key.is_dir():
            raise CheckpointError(
                f"{str(run_dir)!r} is a file, but a run directory is expected; nothing was changed."
            )
        try:
            fd, created, before = _open_locked(Path(run_dir))
        except OSError as e:
            raise _lock_os_error(Path(run_dir), e) from e
        lock = RunLock(Path(run_dir), fd, created, before=before)
        try:
            _write_holder(fd, command)
        except BaseException:
            lock.release()
            raise
        _HELD[key] = lock
        return lock


def release(lock: RunLock) -> None:
    """Undo one :func:`acquire`; the last one deletes the lock file and drops the lock."""
    key = lock.run_dir.resolve()
    with _HELD_GUARD:
        lock.depth -= 1
        if lock.depth > 0:
            return
        _HELD.pop(key, None)
        lock.release()


def _lock_os_error(run_dir: Path, e: OSError) -> Exception:
    path = run_dir / LOCK_NAME
    if is_disk_full(e):
        return DiskFullError(path, 0, e.errno or errno.ENOSPC)
    if e.errno == errno.ELOOP:
        return CheckpointError(
            f"{str(path)!r} is a symbolic link; pyro-vae keeps its lock there and never follows "
            "a link in a run directory. Remove the link, then run the command again."
        )
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CheckpointError(
            f"cannot create {str(path)!r} ({os.strerror(e.errno)}): a command that writes a "
            "run directory needs write access to it, for its files and its lock. Choose a "
            "folder you can write, or fix its permissions."
        )
    return e


@contextlib.contextmanager
def run_lock(
    run_dir: str | Path, *, command: str | None = None, world: World | None = None
) -> Iterator[RunLock | None]:
    """Hold the exclusive lock of ``run_dir`` for the ``with`` block.

    Raises :class:`RunLockedError` at once if another process holds it, before anything is
    written. Under several processes (``world``), rank 0 takes the lock and the other ranks
    wait for its answer: if rank 0 was refused, every rank raises. Only rank 0 gets the
    :class:`RunLock`; the others get None.
    """
    world = world or World()
    lock: RunLock | None = None
    failure: BaseException | None = None
    if world.is_main:
        try:
            lock = acquire(run_dir, command=command)
        except Exception as e:  # told to the other ranks before it is raised
            failure = e
    if world.enabled:
        said = [None if failure is None else f"{type(failure).__name__}: {failure}"]
        dist.broadcast_object_list(said, src=0)
        if failure is None and said[0] is not None:
            kind, _, text = said[0].partition(": ")
            failure = (
                RunLockedError(text)
                if kind == "RunLockedError"
                else CheckpointError(
                    f"rank 0 could not lock the run directory {str(run_dir)!r}: {said[0]}"
                )
            )
    if failure is not None:
        raise failure
    try:
        yield lock
    finally:
        if lock is not None:
            release(lock)
