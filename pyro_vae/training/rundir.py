"""The run directory: which folder a run may use, what a resumed run may change, and its logs.

A run lives in ``TrainConfig.out``. :func:`prepare_run_dir` checks it before anything is
built or written: a new run needs a new or empty folder (or one where a new run was stopped
before its ``config.json``); a resumed run (``fit(..., resume=True)``) needs ``config.json``
and ``checkpoint.safetensors``, and keeps every saved setting except those in
:data:`RESUME_OVERRIDES`. :func:`start_run`, :func:`resume_run` and :func:`write_epoch` are
the loop's writes, in the order that keeps a killed run resumable: a new run writes its
epoch-0 checkpoint before ``config.json`` (which marks a run), and each epoch appends its
metrics before it replaces the checkpoint, so a resumed run cuts the JSONL logs back to the
checkpoint's epoch.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_vae.config import ConfigError, RunConfig, TrainConfig, VAEConfig, from_dict
from pyro_vae.data import DataError, Dataset, TableSchema
from pyro_vae.training.checkpoint import (
    CheckpointError,
    atomic_write,
    check_run_dir,
    load_run_config,
    read_tensors,
    save,
    write_json,
    write_tensors,
)
from pyro_vae.training.errors import TrainingError
from pyro_vae.training.lock import LOCK_NAME

if TYPE_CHECKING:
    from pyro_vae.training.loop import Loop

__all__ = [
    "RESUME_OVERRIDES",
    "RUN_FILES",
    "RUN_FOLDER",
    "append_jsonl",
    "check_resumed_data",
    "check_run_paths",
    "load_run",
    "merge_resumed",
    "prepare_run_dir",
    "read_jsonl",
    "resume_config",
    "resume_run",
    "start_run",
    "write_epoch",
    "write_jsonl",
]

# The settings a resumed run may change; every other one is the run's saved setting.
RESUME_OVERRIDES = (
    "epochs",
    "device",
    "data_on_device",
    "on_nan",
    "max_skipped_steps",
    "eval_num_samples",
    "eval_num_points",
    "early_stop",
    "tensorboard",
    "cuda_graphs",
)

# The files pyro-vae writes in a run directory, and its one folder (see check_run_paths).
RUN_FILES = (
    "config.json",
    "model.safetensors",
    "checkpoint.safetensors",
    "metrics.jsonl",
    "timing.jsonl",
    "summary.json",
    "eval.json",
    "samples.png",
    "schema.json",
    "best.safetensors",
)
RUN_FOLDER = "plots"

# What a new run stopped before its config.json leaves (see start_run): its epoch-0
# checkpoint (and a table's schema.json), and the temporary files of an atomic write
# (".NAME.XXXX.tmp").
_STARTED = re.compile(
    r"checkpoint\.safetensors|schema\.json|\.(checkpoint\.safetensors|config\.json|schema\.json)"
    r"\..+\.tmp"
)

_CONTINUE = "fit(resume_config(RUN_DIR), resume=True)"  # how to continue a run, in Python


# ---------------------------------------------------------------------- checks


def check_run_paths(run_dir: str | Path) -> None:
    """Refuse a run directory where a file pyro-vae writes is a folder, or ``plots`` a file.

    Checked before a command trains or scores anything, so that such a path fails at once
    (a :class:`~pyro_vae.training.checkpoint.CheckpointError` naming it) rather than after an
    epoch.
    """
    root = Path(run_dir)
    for name in RUN_FILES:
        if (root / name).is_dir():
            raise CheckpointError(
                f"{str(root / name)!r} is a folder, but pyro-vae writes a file of that name in "
                "the run directory. Move or rename the folder, then run the command again; "
                "nothing was changed."
            )
    folder = root / RUN_FOLDER
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(
            f"{str(folder)!r} is a file, but pyro-vae writes the run's plots into a folder of "
            "that name. Move or rename the file, then run the command again; nothing was "
            "changed."
        )


def prepare_run_dir(config: RunConfig, resume: bool) -> tuple[Path, RunConfig]:
    """Check ``config.train.out`` before anything is built or written; return it and the config.

    With ``resume`` the config is the run's saved one, merged with ``config``'s
    :data:`RESUME_OVERRIDES` (:func:`merge_resumed`).
    """
    run_dir = Path(config.train.out)
    refuse_file_out(run_dir)
    check_run_dir(run_dir)
    check_run_paths(run_dir)
    if resume:
        return run_dir, merge_resumed(load_run(run_dir), config, run_dir)
    if (run_dir / "config.json").exists():
        raise TrainingError(
            f"{str(run_dir)!r} already holds a run. Continue it with fit(..., resume=True), or "
            "choose another TrainConfig.out; nothing was changed."
        )
    _refuse_other_files(run_dir)
    return run_dir, config


def refuse_file_out(run_dir: Path) -> None:
    """Raise :class:`TrainingError` if ``run_dir`` is a file (before a lock makes a folder)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(
            f"TrainConfig.out {str(run_dir)!r} is a file, but a run directory is expected. "
            "Choose another TrainConfig.out."
        )


def _refuse_other_files(run_dir: Path) -> None:
    """A new run needs an empty or new folder (or one a new run was stopped in); the lock
    file (this command's, or one a killed command left) is no other file."""
    if not run_dir.is_dir():
        return
    other = sorted(
        p.name for p in run_dir.iterdir() if p.name != LOCK_NAME and not _STARTED.fullmatch(p.name)
    )
    if other:
        shown = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        raise TrainingError(
            f"TrainConfig.out {str(run_dir)!r} holds other files ({shown}) and is not a "
            "pyro-vae run (it has no config.json). A new run needs an empty or new folder: "
            f"choose another TrainConfig.out (to continue a run, {_CONTINUE}); nothing was "
            "changed."
        )


def load_run(run_dir: Path) -> RunConfig:
    """The saved config of a run that can be resumed; CheckpointError if there is none."""
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(
            f"fit(..., resume=True): {str(run_dir)!r} is not a pyro-vae run directory (it "
            "needs config.json and checkpoint.safetensors). Start a new run without "
            "fit(..., resume=True)."
        )
    saved = load_run_config(run_dir)
    if not (run_dir / "checkpoint.safetensors").is_file():
        raise CheckpointError(
            f"fit(..., resume=True): {str(run_dir)!r} has config.json but no "
            "checkpoint.safetensors, so the run cannot be continued (the file was removed). "
            "Restore it, or start a new run with another TrainConfig.out."
        )
    return saved


def check_resumed_data(config: RunConfig, dataset: Dataset, run_dir: Path) -> None:
    """A resumed run's data must have the item shape it was trained on (DataError if not)."""
    if dataset.data_shape != config.vae.data_shape:
        raise DataError(
            f"the run in {str(run_dir)!r} was trained on items of shape {config.vae.data_shape}, "
            f"but its data set {config.train.dataset!r} now has items of shape "
            f"{dataset.data_shape}. Resume with the data the run was trained on, or start a "
            "new run with another TrainConfig.out."
        )


# ---------------------------------------------------------------------- resuming


def resume_config(run_dir: str | Path, **changes: Any) -> RunConfig:
    """The saved :class:`RunConfig` of the run in ``run_dir``, with ``changes`` applied.

    ``changes`` are field names of :class:`VAEConfig` or :class:`TrainConfig`. Pass the
    result to ``fit(config, resume=True)``, which refuses a change to any setting other
    than those in :data:`RESUME_OVERRIDES`, e.g.
    ``fit(resume_config("runs/x", epochs=200), resume=True)``.
    """
    saved = load_run(Path(run_dir))
    sections: dict[str, dict[str, Any]] = {"vae": {}, "train": {}}
    names = {"vae": VAEConfig, "train": TrainConfig}
    for key, value in changes.items():
        owners = [k for k, cls in names.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if not owners:
            raise ConfigError(f"resume_config: unknown setting {key!r}")
        sections[owners[0]][key] = value
    vae = {**dataclasses.asdict(saved.vae), **sections["vae"]}
    train = {**dataclasses.asdict(saved.train), **sections["train"], "out": str(run_dir)}
    return RunConfig(from_dict(VAEConfig, vae, "vae"), from_dict(TrainConfig, train, "train"))


def merge_resumed(saved: RunConfig, given: RunConfig, run_dir: Path) -> RunConfig:
    """``saved`` with the overridable settings of ``given``; any other difference is an error."""
    differ = []
    for section in ("vae", "train"):
        old, new = getattr(saved, section), getattr(given, section)
        for f in dataclasses.fields(old):
            if f.name in (*RESUME_OVERRIDES, "out", "data_shape"):
                continue
            was, now = getattr(old, f.name), getattr(new, f.name)
            if was != now:
                differ.append(f"{f.name} (run: {was!r}, given: {now!r})")
    if differ:
        raise ConfigError(
            f"a resumed run keeps the settings saved in {str(run_dir / 'config.json')!r}, but "
            f"these differ: {'; '.join(differ)}. Only {', '.join(RESUME_OVERRIDES)} can change "
            "on resume. Drop the other changes, or start a new run with another TrainConfig.out."
        )
    overrides = {k: getattr(given.train, k) for k in RESUME_OVERRIDES}
    train = dataclasses.replace(saved.train, **overrides, out=str(run_dir))
    return dataclasses.replace(saved, train=train)


# ---------------------------------------------------------------------- the loop's writes


def start_run(
    run_dir: Path, loop: Loop, config: RunConfig, table: TableSchema | None = None
) -> list[dict[str, Any]]:
    """A new run: the epoch-0 checkpoint first (and a table's ``schema.json``), then
    ``config.json``, which marks a run, last."""
    if loop.world.is_main:  # a new or empty folder (see prepare_run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    loop.write_checkpoint(run_dir)  # a collective under several processes
    if loop.world.is_main:
        if table is not None:
            write_json(run_dir / "schema.json", table.to_dict())
        save(loop.vae, run_dir, run_config=config)
    return []


def resume_run(run_dir: Path, loop: Loop) -> list[dict[str, Any]]:
    """Restore the checkpoint, then cut the logs back to it; return the kept metrics."""
    path = run_dir / "checkpoint.safetensors"
    loop.load_state(*read_tensors(path), path)
    done = loop.position.epochs_done
    history = read_jsonl(run_dir / "metrics.jsonl", done)
    timing = read_jsonl(run_dir / "timing.jsonl", done)
    loop.world.barrier()  # every rank has read the files before rank 0 rewrites them
    if loop.world.is_main:
        write_jsonl(run_dir / "metrics.jsonl", history)
        write_jsonl(run_dir / "timing.jsonl", timing)
        write_tensors(run_dir / "model.safetensors", loop.vae.state_dict())
    return history


def write_epoch(run_dir: Path, loop: Loop, record: dict[str, Any], timing: dict[str, Any]) -> None:
    """Log an epoch, then checkpoint it (a crash in between re-runs the epoch on resume)."""
    if loop.world.is_main:
        append_jsonl(run_dir / "metrics.jsonl", record)
        append_jsonl(run_dir / "timing.jsonl", timing)
    loop.write_checkpoint(run_dir)  # a collective under several processes
    if loop.world.is_main:
        write_tensors(run_dir / "model.safetensors", loop.vae.state_dict())


# ---------------------------------------------------------------------- JSONL logs


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record to ``path``, replacing the file atomically."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines.append(json.dumps(record))
    atomic_write(path, lambda f: f.write("\n".join(lines) + "\n"), mode="w")


def read_jsonl(path: Path, epochs: int) -> list[dict[str, Any]]:
    """The records of ``path`` up to epoch ``epochs`` (a missing file has none)."""
    if not path.exists():
        return []
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if int(r["epoch"]) <= epochs]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{str(path)!r} is not a pyro-vae log of one JSON record per epoch ({e!r}). Restore "
            "the file, or delete it to resume without the earlier records."
        ) from None


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` to ``path``, one JSON object a line, atomically."""
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records)), "w")
