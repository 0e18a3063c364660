"""Checkpoints: JSON and safetensors only, written atomically, never unpickled.

A run directory holds

- ``config.json``: the complete :class:`~pyro_vae.config.RunConfig` (or only the VAE part
  for :func:`save`), from which the architecture is rebuilt;
- ``model.safetensors``: the VAE's ``state_dict``;
- ``checkpoint.safetensors``: everything ``fit(..., resume=True)`` needs in one file, so that it is
  replaced in one atomic step: model and optimizer tensors, RNG states, and JSON metadata
  (epoch, step, optimizer hyper-parameters).

Every file is written to a temporary name in the same folder, flushed, fsynced and renamed
over the old one, so a crash at any moment leaves the old file or the new one.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from pyro_vae.config import ConfigError, RunConfig, VAEConfig, from_dict, to_dict
from pyro_vae.plugins import load_plugin, plugin_records, require_registered
from pyro_vae.vae import VAE

__all__ = [
    "CheckpointError",
    "DiskFullError",
    "atomic_write",
    "check_run_dir",
    "is_disk_full",
    "load",
    "load_config",
    "load_run_config",
    "read_tensors",
    "save",
    "write_tensors",
]

FORMAT = "pyro-vae/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or made for another architecture."""


class DiskFullError(OSError):
    """A file could not be written: its file system is full (``ENOSPC``) or over quota.

    Nothing half-written is left: :func:`atomic_write` removes its temporary file, and the
    file it was replacing is unchanged. ``path`` is the file, ``nbytes`` about the bytes it
    needed. The trainer adds the run directory and its last checkpoint
    (:meth:`in_run`), and the message then says how to continue once space is freed.
    """

    def __init__(self, path: str | Path, nbytes: int, code: int = errno.ENOSPC) -> None:
        super().__init__(code, os.strerror(code), str(path))
        self.path, self.nbytes = Path(path), nbytes
        self.run_dir: Path | None = None
        self.checkpoint: str | None = None  # e.g. "after epoch 2", "none written"

    def in_run(self, run_dir: str | Path, checkpoint: str) -> DiskFullError:
        """This error, told as a run's: ``checkpoint`` is the run's last one (a label)."""
        self.run_dir, self.checkpoint = Path(run_dir), checkpoint
        return self

    def describe(self, resume: str | None = None) -> str:
        """The message; ``resume`` is how the reader continues the run (default: the call
        ``fit(resume_config(RUN_DIR), resume=True)``; the CLI names its command)."""
        if resume is None and self.run_dir is not None:
            resume = f"fit(resume_config({str(self.run_dir)!r}), resume=True)"
        code = self.errno or errno.ENOSPC
        full = "over its disk quota" if code == errno.EDQUOT else "full"
        size = f" (about {_size(self.nbytes)})" if self.nbytes > 0 else ""
        text = (
            f"could not write {str(self.path)!r}{size}: its file system is {full}, with "
            f"{_size(_free(self.path))} free. The file was not changed and no partial file "
            "was left."
        )
        if self.run_dir is None:
            return text + " Free some space, then run the same command again."
        if self.checkpoint in (None, "none written"):
            return (
                f"{text} The run in {str(self.run_dir)!r} had not started (no checkpoint was "
                "written yet): free some space, then start it again."
            )
        return (
            f"{text} The run in {str(self.run_dir)!r} is intact at its last checkpoint "
            f"({self.checkpoint}): free some space, then continue it with {resume}."
        )

    def __str__(self) -> str:
        return self.describe()


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says a file system is full (``ENOSPC``) or a quota is used up (``EDQUOT``)."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _free(path: Path) -> int:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 0


def atomic_write(
    path: str | Path, write: Callable[[Any], None], mode: str = "wb", *, nbytes: int = 0
) -> None:
    """Write ``path`` through a temporary file, fsync, rename, and fsync the folder.

    The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask), not
    the ``0o600`` of ``tempfile.mkstemp``. A full file system raises :class:`DiskFullError`
    naming ``path`` and ``nbytes`` (the size being written; when 0, the size of the file
    it replaces), with the old file unchanged and no temporary file left.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path, nbytes or _old_size(path), e.errno or errno.ENOSPC) from e
        raise
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            assert isinstance(e, OSError)
            raise DiskFullError(path, nbytes or _old_size(path), e.errno or errno.ENOSPC) from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _old_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _umask() -> int:
    """The process's umask, read by setting a strict one for an instant and restoring it."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as standard JSON: NaN and infinities become ``null``.

    (Python's ``json`` would write ``NaN``/``Infinity``, which other JSON readers refuse.)
    """
    text = json.dumps(_finite_or_null(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w", nbytes=len(text.encode()))


def _finite_or_null(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite_or_null(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite_or_null(v) for v in data]
    return data


def write_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None
) -> None:
    """Atomically write tensors (moved to CPU, made contiguous) and JSON metadata."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "json": json.dumps(metadata or {})}
    blob = _canonical(save_safetensors(cpu, metadata=meta))
    atomic_write(path, lambda f: f.write(blob), nbytes=len(blob))


def _canonical(blob: bytes) -> bytes:
    """``blob`` with its header rewritten so that equal content gives equal bytes.

    safetensors keeps the metadata in a Rust ``HashMap``, whose order changes from one
    process to the next (``{"format", "json"}`` or ``{"json", "format"}``); here its keys are
    sorted and the header is written as compact JSON, space-padded to a multiple of 8 bytes
    as safetensors does. Tensor entries and data are left exactly as they are.
    """
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read tensors and metadata written by :func:`write_tensors`; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"missing checkpoint file {str(path)!r}. A pyro-vae model directory holds "
            "config.json and model.safetensors (a run also checkpoint.safetensors); the file "
            "was deleted or never written. Restore it, or train the model again."
        )
    data = path.read_bytes()
    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("json", "{}"))
    except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(
            f"{str(path)!r} is not a valid safetensors file ({str(e)[:200]}); it may be "
            "truncated, or not a pyro-vae checkpoint (pyro-vae never reads pickles, such as "
            "files written by torch.save). Use the files pyro-vae wrote, or train again."
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{str(path)!r} has metadata that is not a JSON object")
    return tensors, meta


def save(vae: VAE, directory: str | Path, *, run_config: RunConfig | None = None) -> Path:
    """Save ``vae`` to ``directory``: ``config.json`` and ``model.safetensors``."""
    if not isinstance(vae, VAE):
        raise TypeError(f"save needs a pyro_vae.VAE, got {type(vae).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"format": FORMAT}
    config.update(to_dict(run_config) if run_config else {"vae": to_dict(vae.config)})
    plugins = plugin_records(vae.config)  # components from outside pyro-vae, for load()
    if plugins:
        config["plugins"] = plugins
    write_json(directory / "config.json", config)
    write_tensors(directory / "model.safetensors", vae.state_dict())
    return directory


def load_config(directory: str | Path) -> tuple[VAEConfig, dict[str, Any]]:
    """The VAE config and the raw JSON of ``directory/config.json``."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{str(directory)!r} is not a pyro-vae run or checkpoint: it has no config.json. "
            "Pass a directory written by fit() (or pyro_vae.save)."
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(
            f"{str(path)!r} is not valid JSON ({str(e)[:200]}). Restore the file pyro-vae wrote."
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or "vae" not in raw:
        raise CheckpointError(
            f"{str(path)!r} is not a {FORMAT} config (expected a JSON object with "
            f'"format": "{FORMAT}" and a "vae" table). Pass a directory pyro-vae wrote.'
        )
    # nothing in config.json is ever resolved as a class, module or path to run: "plugins"
    # only names the files a run's own parts came from, for the error that asks for them
    unknown = sorted(set(raw) - {"format", "vae", "train", "plugins"})
    if unknown:
        raise CheckpointError(
            f"{str(path)!r} has unknown top-level key(s) {[k[:40] for k in unknown]}; expected "
            "only format, vae, train and plugins. Remove them, or use a config.json pyro-vae "
            "wrote."
        )
    # a VAEConfig checks its components in their registries: a plugin's must be there first,
    # and if it is not, the error names the plugin file recorded at saving
    require_registered(raw, where=f"the run in {str(directory)!r}")
    try:
        return from_dict(VAEConfig, raw["vae"], where=f"{path} vae"), raw
    except ConfigError as e:
        raise CheckpointError(f"{e} Fix config.json, or use the one pyro-vae wrote.") from None


def load_run_config(directory: str | Path) -> RunConfig:
    """The full :class:`RunConfig` of a training run directory (``config.json``)."""
    _, raw = load_config(directory)
    require_registered(raw, where=f"the run in {str(directory)!r}")
    if "train" not in raw:
        raise CheckpointError(
            f"{str(directory)!r} holds a saved model (pyro_vae.save), not a training run: its "
            "config.json has no train settings. Start a new run with fit() and another "
            "TrainConfig.out."
        )
    try:
        return from_dict(RunConfig, {k: raw[k] for k in ("vae", "train")}, f"{directory} config")
    except ConfigError as e:
        raise CheckpointError(f"{e} Fix config.json, or use the one pyro-vae wrote.") from None


def check_run_dir(directory: str | Path) -> None:
    """Refuse a run directory holding a symbolic link that leads outside of it.

    Every file pyro-vae writes for a run lies inside the run directory, and it never writes
    through a link: atomic writes replace a linked file rather than its target, and this
    check covers linked folders (such as ``plots``).
    """
    root = Path(directory)
    if not root.is_dir():
        return
    top = root.resolve()
    entries = [Path(d) / n for d, ds, fs in os.walk(root) for n in ds + fs]
    for path in entries:
        if path.is_symlink() and not path.resolve().is_relative_to(top):
            raise CheckpointError(
                f"{str(path)!r} is a symbolic link to {str(path.resolve())!r}, outside the run "
                f"directory {str(root)!r}; pyro-vae writes only inside a run directory. Replace "
                "the link with a plain file or folder."
            )


def load(
    directory: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    plugins: Sequence[str | Path] = (),
) -> VAE:
    """Rebuild the VAE saved in ``directory`` and load its weights (no pickle involved).

    A run built from a user's own components needs them registered first: import their
    module, or name their files in ``plugins`` (each is imported with
    :func:`~pyro_vae.plugins.load_plugin`). The plugin files recorded in ``config.json``
    are never imported unasked; a missing one is named in the error.
    """
    for plugin in plugins:
        load_plugin(plugin)
    config, raw = load_config(directory)
    require_registered(raw, where=f"the run in {str(directory)!r}")
    vae = VAE(config)
    tensors, _ = read_tensors(Path(directory) / "model.safetensors")
    load_state(vae, tensors, Path(directory) / "model.safetensors")
    return vae.to(map_location)


def load_state(vae: VAE, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Load a state dict, explaining mismatches rather than dumping torch's message."""
    own = vae.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or extra or wrong:
        details = "; ".join(
            f"{label}: {names[:5]}"
            for label, names in (("missing", missing), ("unexpected", extra), ("shape", wrong))
            if names
        )
        raise CheckpointError(
            f"the weights in {str(where)!r} do not fit the architecture in config.json "
            f"({details}). The checkpoint was made for a different model: use the config.json "
            "that was saved with these weights, or train this architecture."
        )
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not _finite(v))
    if bad:
        raise CheckpointError(
            f"the weights in {str(where)!r} hold NaN or infinite values (in {bad[:5]}): the "
            "file is damaged, or came from a run that diverged. Use an earlier checkpoint."
        )
    vae.load_state_dict(tensors)


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())
