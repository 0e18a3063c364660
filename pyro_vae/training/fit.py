r"""Training by stochastic variational inference: one code path for Python and the CLI.

Each step maximizes the ELBO of a mini-batch of ``B`` rows with Adam. The loss is the
objective's estimate divided by ``B``, which is the same as ``poutine.scale(scale=1/B)`` on
every site, so every figure is per data point (nats) and comparable across batch sizes.

The hot loop keeps everything on the device: the data are moved there once, batches are
indexed there, the metrics are summed there, and the host reads them only when the progress
bar refreshes and at the end of each epoch. Distribution validation is switched off inside
the loop only; the data are checked against the likelihood's support once, before it.

Reliability (README, "Reliability"):

- Non-finite steps. A device-side :class:`~pyro_vae.training.guard.StepGuard` checks every step's
  loss and gradient norm without a host sync, makes a bad step a no-op for the parameters
  and the optimizer state, and records the first bad step of the epoch. The host reads it
  where it synchronises anyway (progress refresh, at most twice a second, and epoch end).
  With ``on_nan="stop"`` training stops there: the trainer restores the in-memory state of
  the epoch's start, replays the epoch's good steps exactly (same batches, same draws) up
  to the bad one, and :func:`~pyro_vae.training.nonfinite.diagnose_step` names the term (reconstruction
  or KL) and the site that went non-finite first; nothing is written, so the last
  checkpoint stays as it was. With ``on_nan="skip"`` bad steps are skipped (counted in
  ``metrics.jsonl`` as ``skipped_steps``, and their total, if any, in the summary) until
  more than ``max_skipped_steps`` were.
- Checkpoints. A new run writes an epoch-0 checkpoint before it writes ``config.json``, so
  a directory with ``config.json`` always has a checkpoint to resume from. Every epoch
  replaces ``checkpoint.safetensors`` atomically (:mod:`pyro_vae.training.runstate` lists what it
  holds), so a SIGKILL leaves the previous or the new one.
- Ctrl-C. The first SIGINT asks the loop to stop after the current step (a flag, read on
  the host each step, no sync); the trainer then writes a checkpoint of that exact
  mid-epoch state, so ``--resume`` continues bit-identically. A second Ctrl-C aborts at
  once, leaving the last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pyro_vae.config import (
    DEVICE_NAME,
    ConfigError,
    RunConfig,
    TrainConfig,
    VAEConfig,
    from_dict,
)
from pyro_vae.data import (
    DataError,
    Dataset,
    TableSchema,
    dynamic_binarize,
    load_dataset,
    static_binarize,
)
from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.infer.importance import PointEstimateError, log_likelihood
from pyro_vae.infer.objectives import batch_terms, build_objective
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
from pyro_vae.training.distributed import (
    AFTER_FAILURE,
    DistributedError,
    World,
    all_reduce_sum,
    gather_rng_states,
    setup,
    teardown,
)
from pyro_vae.training.guard import StepGuard, fused_adam
from pyro_vae.training.nonfinite import Diagnosis, diagnose_step
from pyro_vae.training.replay import Replay
from pyro_vae.training.runstate import Partial, Position, Stateful, capture, restore
from pyro_vae.training.schedules import learning_rate
from pyro_vae.training.tabular import for_table
from pyro_vae.vae import VAE

__all__ = [
    "RESUME_OVERRIDES",
    "TEST_BINARIZATION_SEED",
    "VALID_BINARIZATION_SEED",
    "FitResult",
    "NonFiniteError",
    "TrainingError",
    "TrainingInterrupted",
    "TrainingNotice",
    "check_run_paths",
    "data_home",
    "evaluation_split",
    "fit",
    "mean_terms",
    "resolve_device",
    "resume_config",
    "split_labels",
    "training_labels",
    "training_split",
    "with_classes",
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
)

# Valid and test sets are binarized once with fixed seeds, independent of the run's seed,
# so that every run and every seed is scored on the same binary images.
VALID_BINARIZATION_SEED = 1_000_003
TEST_BINARIZATION_SEED = 1_000_033


class TrainingError(RuntimeError):
    """Training could not go on (a non-finite loss, a run directory in the way, ...)."""


class NonFiniteError(TrainingError):
    """A step's loss or gradient was not finite; ``diagnosis`` says which term and site."""

    def __init__(self, message: str, epoch: int, step: int, diagnosis: Diagnosis) -> None:
        super().__init__(message)
        self.epoch, self.step, self.diagnosis = epoch, step, diagnosis


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message says what was saved and how to continue."""


class TrainingNotice(UserWarning):
    """Something the user should know that is not an error (the CLI prints it as a note)."""


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained VAE, one metrics dict per epoch, test summary."""

    vae: VAE
    history: list[dict[str, float]]
    summary: dict[str, float]
    run_dir: Path | None
    config: RunConfig = field(default_factory=RunConfig)
    rank: int = 0  # this process's rank; only rank 0 has a summary and writes files


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    Any other name than ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` raises :class:`ConfigError`
    naming ``--device`` and the valid choices, for every command that takes the flag.
    """
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ConfigError(
            f"--device must be auto, cpu, cuda or cuda:N (N the GPU's index), got {name!r}. "
            "Pass one of those, e.g. --device cpu."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {name} was asked for, but torch sees no CUDA device")
    return torch.device(name)


def data_home(
    nbytes: int, device: torch.device, policy: str = "auto", free: int | None = None
) -> torch.device:
    """Where the data live: on ``device`` once, or in host memory with each batch copied.

    On a GPU, ``auto`` keeps the data there when they take at most half of its free memory
    (``free`` bytes, read from the device when not given); the other half is left for the
    activations. ``yes`` and ``no`` decide outright. On the CPU the two places are one.
    """
    if device.type == "cpu" or policy == "yes":
        return device
    if policy == "no":
        return torch.device("cpu")
    if free is None:
        free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= free // 2 else torch.device("cpu")


def _placed(x: torch.Tensor, home: torch.device) -> torch.Tensor:
    """``x`` at ``home``; in pinned host memory when it stays off the GPU it is used on."""
    x = x.to(home)
    return x.pin_memory() if home.type == "cpu" and torch.cuda.is_available() else x


def evaluation_split(dataset: Dataset, split: str, binarize: str) -> torch.Tensor:
    """A valid/test split as scored: binarized once with a fixed seed under ``dynamic``."""
    if binarize not in ("none", "dynamic"):
        raise ValueError(f"binarize must be 'none' or 'dynamic' here, got {binarize!r}")
    x = dataset.split(split)
    if binarize == "dynamic":
        seed = TEST_BINARIZATION_SEED if split == "test" else VALID_BINARIZATION_SEED
        return static_binarize(x, seed)
    return x


def training_split(dataset: Dataset, train_on: str = "train") -> torch.Tensor:
    """The rows trained on: the train split, or (``train+valid``) train and valid stacked.

    Burda et al. (2015) train on all 60,000 MNIST training images, i.e. ``train+valid``
    here; the valid split is then still scored each epoch, but it is no longer held out.
    """
    if train_on == "train":
        return dataset.split("train")
    if train_on == "train+valid":
        return torch.cat([dataset.split("train"), dataset.split("valid")])  # (N_t + N_v, ...)
    raise ValueError(f"train_on must be 'train' or 'train+valid', got {train_on!r}")


def training_labels(vae: VAE, dataset: Dataset, train_on: str = "train") -> torch.Tensor | None:
    """The labels of :func:`training_split`'s rows for a conditional VAE, else None."""
    if not vae.config.conditional:
        return None
    parts = [split_labels(vae, dataset, s) for s in train_on.split("+")]
    return torch.cat([y for y in parts if y is not None])  # (N,)


def _check_data(vae: VAE, dataset: Dataset, tc: TrainConfig) -> None:
    for split in ("train", "valid", "test"):
        x = dataset.split(split)
        if x.shape[0] == 0:
            raise DataError(
                f"the {split} split of {dataset.name!r} is empty, but training needs at least "
                "one row in each of train, valid and test. Provide more data."
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise DataError(
                f"the {split} split of {dataset.name!r} holds {int((~torch.isfinite(x)).sum())} "
                "NaN or infinite value(s), but only finite values can be scored. Remove or "
                "impute them."
            )
        if tc.binarize == "dynamic":
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise DataError(
                    f"--binarize dynamic needs values in [0, 1] (pixel intensities), but the "
                    f"{split} split of {dataset.name!r} ranges over [{float(x.min()):.4g}, "
                    f"{float(x.max()):.4g}]. Rescale the data, or use --binarize none with a "
                    "likelihood for continuous data."
                )
            vae.check_data(static_binarize(x[:2], 0))  # shape, dtype
        else:
            vae.check_data(x)
    rows = dataset.train.shape[0]
    if rows < tc.batch_size:
        warnings.warn(
            TrainingNotice(
                f"the train split of {dataset.name!r} has {rows} rows, fewer than --batch-size "
                f"{tc.batch_size}: each epoch is one step on all {rows} rows."
            ),
            stacklevel=3,
        )


def mean_terms(
    vae: VAE,
    x: torch.Tensor,
    batch_size: int = 1000,
    world: World | None = None,
    y: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean ELBO, reconstruction and KL over ``x`` (nats per data point), in chunks.

    ``y`` holds the labels ``(N,)`` of a conditional VAE. Under several processes each rank
    scores its share ``x[rank::world_size]`` and the sums are added across ranks.
    """
    world = world or World()
    device = next(vae.parameters()).device  # x may wait in host memory (see data_home)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    xs, ys = world.share(x), None if y is None else world.share(y)
    with torch.no_grad():
        for i, xb in enumerate(xs.split(batch_size)):
            rows = slice(i * batch_size, i * batch_size + xb.shape[0])
            labels = () if ys is None else (ys[rows].to(device, non_blocking=True),)
            xb = xb.to(device, non_blocking=True)  # (b, *data_shape); a no-op when there
            t = elbo_terms(vae.model, vae.guide, xb, *labels)
            parts = (t["elbo"], t["reconstruction"], t["kl"])
            sums += torch.stack([v.double().sum() for v in parts])
    elbo, recon, kl = (all_reduce_sum(sums, world) / x.shape[0]).tolist()
    return {"elbo": elbo, "reconstruction": recon, "kl": kl}


def with_classes(config: VAEConfig, dataset: Dataset) -> VAEConfig:
    """A conditional config gets ``num_classes`` from the data set, which must have labels;
    an unconditional one has none (0), whatever a rebuilt run's config said."""
    if not config.conditional:
        return dataclasses.replace(config, num_classes=0)
    splits = [dataset.labels(s) for s in ("train", "valid", "test")]
    if dataset.num_classes is None or any(y is None for y in splits):
        raise DataError(
            f"a conditional VAE (--conditional true) needs class labels, but data set "
            f"{dataset.name!r} has none. Use a data set with labels (digits, mnist, "
            "fashion-mnist, or an .npz with train_labels, valid_labels and test_labels), or "
            "train without --conditional."
        )
    for split, y in zip(("train", "valid", "test"), splits, strict=True):
        assert y is not None
        if y.numel() and not bool(((y >= 0) & (y < dataset.num_classes)).all()):
            raise DataError(
                f"the {split} labels of {dataset.name!r} must lie in 0..{dataset.num_classes - 1}"
            )
    return dataclasses.replace(config, num_classes=dataset.num_classes)


def split_labels(vae: VAE, dataset: Dataset, split: str) -> torch.Tensor | None:
    """The labels of ``split`` if ``vae`` is conditional, else None."""
    return dataset.labels(split) if vae.config.conditional else None


def _to(y: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if y is None else y.to(device)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    lines.append(json.dumps(record))
    atomic_write(path, lambda f: f.write("\n".join(lines) + "\n"), mode="w")


def _read_jsonl(path: Path, epochs: int) -> list[dict[str, Any]]:
    """The records of ``path`` up to ``epochs`` (a missing file has none)."""
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


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records)), "w")


def resume_config(run_dir: str | Path, **changes: Any) -> RunConfig:
    """The saved :class:`RunConfig` of the run in ``run_dir``, with ``changes`` applied.

    ``changes`` are field names of :class:`VAEConfig` or :class:`TrainConfig`. Pass the
    result to ``fit(config, resume=True)``, which refuses a change to any setting other
    than those in :data:`RESUME_OVERRIDES`, e.g.
    ``fit(resume_config("runs/x", epochs=200), resume=True)``.
    """
    saved = _load_run(Path(run_dir))
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


def _resumed(saved: RunConfig, given: RunConfig, run_dir: Path) -> RunConfig:
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
            "on resume. Drop the other flags, or start a new run with another --out."
        )
    overrides = {k: getattr(given.train, k) for k in RESUME_OVERRIDES}
    train = dataclasses.replace(saved.train, **overrides, out=str(run_dir))
    return dataclasses.replace(saved, train=train)


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
)
RUN_FOLDER = "plots"

# What a new run stopped before its config.json leaves (see _start_run): its epoch-0
# checkpoint (and a table's schema.json), and the temporary files of an atomic write
# (".NAME.XXXX.tmp").
_STARTED = re.compile(
    r"checkpoint\.safetensors|schema\.json|\.(checkpoint\.safetensors|config\.json|schema\.json)"
    r"\..+\.tmp"
)


def check_run_paths(run_dir: str | Path) -> None:
    """Refuse a run directory where a file pyro-vae writes is a folder, or ``plots`` a file.

    Checked before a command trains or scores anything, so that such a path fails at once
    (a :class:`~pyro_vae.training.checkpoint.CheckpointError` naming it) rather than after an epoch.
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


def _prepare_run_dir(config: RunConfig, resume: bool) -> tuple[Path, RunConfig]:
    """Check the run directory before anything is built or written; return it and the config."""
    run_dir = Path(config.train.out)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(
            f"--out {str(run_dir)!r} is a file, but a run directory is expected. Choose another "
            "--out."
        )
    check_run_dir(run_dir)
    check_run_paths(run_dir)
    if resume:
        return run_dir, _resumed(_load_run(run_dir), config, run_dir)
    if (run_dir / "config.json").exists():
        raise TrainingError(
            f"{str(run_dir)!r} already holds a run. Pass --resume to continue it, or choose "
            "another --out; nothing was changed."
        )
    _refuse_other_files(run_dir)
    return run_dir, config


def _refuse_other_files(run_dir: Path) -> None:
    """A new run needs an empty or new folder (or one a new run was stopped in)."""
    if not run_dir.is_dir():
        return
    other = sorted(p.name for p in run_dir.iterdir() if not _STARTED.fullmatch(p.name))
    if other:
        shown = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        raise TrainingError(
            f"--out {str(run_dir)!r} holds other files ({shown}) and is not a pyro-vae run "
            "(it has no config.json). A new run needs an empty or new folder: choose another "
            "--out (to continue a run, pass --resume RUN_DIR); nothing was changed."
        )


def _load_run(run_dir: Path) -> RunConfig:
    """The saved config of a run that can be resumed; CheckpointError if there is none."""
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(
            f"--resume: {str(run_dir)!r} is not a pyro-vae run directory (it needs "
            "config.json and checkpoint.safetensors). Start a new run without --resume."
        )
    saved = load_run_config(run_dir)
    if not (run_dir / "checkpoint.safetensors").is_file():
        raise CheckpointError(
            f"--resume: {str(run_dir)!r} has config.json but no checkpoint.safetensors, so "
            "the run cannot be continued (the file was removed). Restore it, or start a new "
            "run with another --out."
        )
    return saved


def _check_resumed_data(config: RunConfig, dataset: Dataset, run_dir: Path) -> None:
    if dataset.data_shape != config.vae.data_shape:
        raise DataError(
            f"the run in {str(run_dir)!r} was trained on items of shape {config.vae.data_shape}, "
            f"but its data set {config.train.dataset!r} now has items of shape "
            f"{dataset.data_shape}. Resume with the data the run was trained on, or start a "
            "new run with another --out."
        )


def fit(
    config: RunConfig | None = None,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    progress: bool = True,
    write: bool = True,
    on_epoch: Callable[[dict[str, float], VAE], None] | None = None,
) -> FitResult:
    """Train a VAE as ``config`` says; the CLI's ``pyro-vae train`` calls exactly this.

    A fresh run seeds Pyro's RNGs with ``config.train.seed`` (``pyro.set_rng_seed``) before
    building the model, so a seed fixes the initial weights, the data order, the dynamic
    binarization and the guide's noise. With ``write`` the run directory
    ``config.train.out`` receives ``checkpoint.safetensors`` (at epoch 0, then every epoch,
    atomically), ``model.safetensors``, ``config.json``, ``metrics.jsonl`` (one line per
    epoch), ``timing.jsonl`` and ``summary.json`` at the end; a new run needs a new or
    empty directory (one holding other files, or a run, is refused with
    :class:`TrainingError`). Everything is built and checked before the directory is
    touched. ``resume=True`` continues the run in ``config.train.out`` from its checkpoint,
    exactly where it stopped (build ``config`` with :func:`resume_config`). ``dataset``
    overrides loading ``config.train.dataset``. The trainer draws no plots;
    :func:`pyro_vae.analysis.plots.plot_run` writes the run's ``plots/`` as the CLI does.

    Raises :class:`NonFiniteError` when a step goes non-finite (see the module docstring),
    and :class:`TrainingInterrupted` on Ctrl-C, after writing a checkpoint of the exact state.
    """
    config = config or RunConfig()
    if resume and not write:
        raise ValueError("resume=True continues a run directory, so it needs write=True")
    build_objective(config.train.objective)  # a bad spec fails before anything is written
    world, device = setup(resolve_device(config.train.device))
    try:
        result = _fit(config, world, device, dataset, resume, progress, write, on_epoch)
        # No rank leaves the group while another still uses it: under load, a rank that
        # destroyed its gloo group while rank 0 was still summarizing sometimes aborted.
        _barrier(world)
        return result
    except RuntimeError as e:  # gloo/nccl report a dead peer as a bare RuntimeError
        if not world.enabled or isinstance(e, (DistributedError, TrainingError)):
            raise
        raise DistributedError(
            f"rank {world.rank} of {world.world_size} lost contact with the other training "
            f"processes ({str(e).splitlines()[0][:200]}); another rank probably failed, see "
            "its output or torchrun's report. " + AFTER_FAILURE
        ) from e
    finally:
        teardown(world)


def _barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()


def _fit(
    config: RunConfig,
    world: World,
    device: torch.device,
    dataset: Dataset | None,
    resume: bool,
    progress: bool,
    write: bool,
    on_epoch: Callable[[dict[str, float], VAE], None] | None,
) -> FitResult:
    run_dir, config = _prepare_run_dir(config, resume) if write else (None, config)
    _barrier(world)  # every rank has looked at the run directory before rank 0 writes to it
    tc = config.train
    if tc.batch_size < world.world_size:
        raise ValueError(
            f"--batch-size is the global batch and must be at least the number of processes "
            f"({world.world_size}), got {tc.batch_size}"
        )
    dataset = dataset or load_dataset(
        tc.dataset, progress=progress and world.is_main, schema=tc.schema
    )
    config = for_table(config, dataset)  # a table: its own likelihood, no binarization
    tc = config.train
    if resume and run_dir is not None:
        _check_resumed_data(config, dataset, run_dir)
    vae_config = dataclasses.replace(config.vae, data_shape=dataset.data_shape)
    vae_config = with_classes(vae_config, dataset)
    config = dataclasses.replace(config, vae=vae_config)
    if not resume:
        pyro.set_rng_seed(tc.seed)
    vae = VAE(vae_config)  # the same initial weights on every rank
    if world.rank > 0 and not resume:
        torch.manual_seed(tc.seed + 7919 * world.rank)  # each rank its own guide noise
    _check_data(vae, dataset, tc)
    vae.to(device)
    betas = (tc.adam_beta1, tc.adam_beta2)
    opt = fused_adam(list(vae.parameters()), tc.lr, betas=betas, eps=tc.adam_eps)
    train_x = training_split(dataset, tc.train_on)  # (N, *data_shape), host memory
    valid_x = evaluation_split(dataset, "valid", tc.binarize)
    home = data_home(train_x.nbytes + valid_x.nbytes, device, tc.data_on_device)
    if home != device and progress and world.is_main:
        print(f"pyro-vae: the data stay in host memory; each batch is copied to {device}")
    gen = torch.Generator(device=home).manual_seed(tc.seed)  # data order and binarization
    train_x, valid_x = _placed(train_x, home), _placed(valid_x, home)
    train_y = _to(training_labels(vae, dataset, tc.train_on), home)
    valid_y = _to(split_labels(vae, dataset, "valid"), home)
    loop = _Loop(vae, opt, gen, tc, train_x, progress and world.is_main, world, train_y)
    loop.probe()  # an objective that cannot score this model fails before a file is written
    history: list[dict[str, Any]] = []
    if run_dir is not None:
        history = (
            _resume_run(run_dir, loop)
            if resume
            else _start_run(run_dir, loop, config, dataset.table)
        )
    done = loop.position.epochs_done
    partial = loop.position.partial
    loop.bar.update(done * loop.steps_per_epoch + (partial.steps_done if partial else 0))
    with _sigint_stops(loop, world):
        try:
            for epoch in range(done + 1, tc.epochs + 1):
                result = loop.epoch(epoch)
                if result is None:
                    raise _interrupted(loop, run_dir)
                record, timing = result
                valid = mean_terms(vae, valid_x, world=world, y=valid_y)
                record.update({f"valid_{k}": v for k, v in valid.items()})
                history.append(record)
                if run_dir is not None:
                    _write_epoch(run_dir, loop, record, timing)
                if on_epoch is not None and world.is_main:
                    on_epoch(record, vae)
                if loop.stop_requested:
                    raise _interrupted(loop, run_dir)
        except _FaultError as fault:
            raise _nonfinite(loop, fault, run_dir) from None
        finally:
            loop.close()
    if not world.is_main:
        return FitResult(vae, history, {}, run_dir, config, rank=world.rank)
    summary = summarize(vae, dataset, tc, device, home)
    if loop.position.skipped_total:  # --on-nan skip: the run's total, resumed runs included
        summary["skipped_steps"] = loop.position.skipped_total
    if run_dir is not None:
        write_json(run_dir / "summary.json", summary)
    return FitResult(vae, history, summary, run_dir, config)


def _start_run(
    run_dir: Path, loop: _Loop, config: RunConfig, table: TableSchema | None = None
) -> list[dict[str, Any]]:
    """A new run: the epoch-0 checkpoint first (and a table's ``schema.json``), then
    ``config.json``, which marks a run, last."""
    if loop.world.is_main:  # a new or empty folder (see _prepare_run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    loop.write_checkpoint(run_dir)  # a collective under several processes
    if loop.world.is_main:
        if table is not None:
            write_json(run_dir / "schema.json", table.to_dict())
        save(loop.vae, run_dir, run_config=config)
    return []


def _resume_run(run_dir: Path, loop: _Loop) -> list[dict[str, Any]]:
    """Restore the checkpoint, then cut the logs back to it (nothing is written before)."""
    path = run_dir / "checkpoint.safetensors"
    loop.load_state(*read_tensors(path), path)
    done = loop.position.epochs_done
    history = _read_jsonl(run_dir / "metrics.jsonl", done)
    timing = _read_jsonl(run_dir / "timing.jsonl", done)
    _barrier(loop.world)  # every rank has read the files before rank 0 rewrites them
    if loop.world.is_main:
        _write_jsonl(run_dir / "metrics.jsonl", history)
        _write_jsonl(run_dir / "timing.jsonl", timing)
        write_tensors(run_dir / "model.safetensors", loop.vae.state_dict())
    return history


@contextlib.contextmanager
def _sigint_stops(loop: _Loop, world: World) -> Iterator[None]:
    """While training, the first Ctrl-C asks the loop to stop after its current step.

    Only in the main thread, only for a single process (under torchrun, ranks could see the
    flag at different steps; torchrun itself stops every rank on Ctrl-C, and the last
    epoch's checkpoint stays intact), and only when SIGINT has Python's default handler (a
    caller's own handler is left alone). The second Ctrl-C raises KeyboardInterrupt at once.
    """
    main = threading.current_thread() is threading.main_thread()
    default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if world.enabled or not main or not default:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        loop.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            "\npyro-vae: stopping after this step to save a checkpoint (Ctrl-C again aborts)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted(loop: _Loop, run_dir: Path | None) -> TrainingInterrupted:
    partial = loop.position.partial
    if partial is not None:
        where = f"at epoch {partial.epoch}, step {partial.steps_done} of {loop.steps_per_epoch}"
    else:
        where = f"after epoch {loop.position.epochs_done}"
    if run_dir is None:
        return TrainingInterrupted(f"interrupted {where}; nothing was written (write=False).")
    if partial is not None:
        loop.write_checkpoint(run_dir)
        write_tensors(run_dir / "model.safetensors", loop.vae.state_dict())
    return TrainingInterrupted(
        f"interrupted {where}; {str(run_dir / 'checkpoint.safetensors')!r} holds that exact "
        f"state. Continue with: pyro-vae train --resume {run_dir}"
    )


def _nonfinite(loop: _Loop, fault: _FaultError, run_dir: Path | None) -> NonFiniteError:
    diagnosis = loop.diagnose(fault)
    spe = loop.steps_per_epoch
    where = f"epoch {fault.epoch}, step {fault.step} of {spe}"
    if fault.skipped:
        head = (
            f"training stopped: {fault.skipped} steps were skipped for a non-finite loss or "
            f"gradient, more than --max-skipped-steps {loop.tc.max_skipped_steps}; the first "
            f"of this epoch was at {where}."
        )
    else:
        head = f"training stopped: the loss or its gradient became non-finite at {where}."
    if run_dir is None:
        keep = "Nothing was written (write=False)."
    else:
        keep = (
            f"The last good checkpoint, {str(run_dir / 'checkpoint.safetensors')!r} "
            f"({loop.checkpoint_label}), is intact."
        )
    if fault.skipped:  # --on-nan skip already: more bad steps than allowed
        advice = (
            "Raise --max-skipped-steps to allow more (--resume may change it), lower --lr, or "
            "check the data and the model's components."
        )
    else:
        advice = (
            "Lower --lr, check the data and the model's components, or pass --on-nan skip to "
            "skip such steps (at most --max-skipped-steps of them)."
        )
    message = f"{head} {diagnosis.describe()} {keep} {advice}"
    return NonFiniteError(message, fault.epoch, fault.step, diagnosis)


def summarize(
    vae: VAE,
    dataset: Dataset,
    tc: TrainConfig,
    device: torch.device,
    home: torch.device | None = None,
) -> dict[str, Any]:
    """Test ELBO terms over the whole test split and the IW NLL on a seeded subset.

    The test split is kept at ``home`` (default ``device``) and scored in chunks on ``device``.
    The guide's draws come from a generator seeded with ``tc.seed`` and forked from the
    global one, so the summary of a run is the same whether or not it was resumed.
    """
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(tc.seed)
        return _summarize(vae, dataset, tc, device, home or device)


def _summarize(
    vae: VAE, dataset: Dataset, tc: TrainConfig, device: torch.device, home: torch.device
) -> dict[str, Any]:
    test_x = evaluation_split(dataset, "test", tc.binarize).to(home)
    test_y = _to(split_labels(vae, dataset, "test"), home)
    terms = mean_terms(vae, test_x, y=test_y)
    summary: dict[str, Any] = {f"test_{k}": v for k, v in terms.items()}
    num_points = min(tc.eval_num_points, test_x.shape[0])
    if num_points > 0:
        idx = torch.randperm(test_x.shape[0], generator=torch.Generator().manual_seed(0))
        idx = idx[:num_points].to(test_x.device)
        labels = () if test_y is None else (test_y[idx].to(device),)
        try:
            ll = log_likelihood(
                vae.model,
                vae.guide,
                test_x[idx].to(device),
                *labels,
                num_samples=tc.eval_num_samples,
            )
        except PointEstimateError:  # a Delta guide: no importance-weighted bound exists
            summary["point_estimate"] = True  # test_elbo reads log p(x|z*) + log p(z*)
            return summary
        summary.update(
            test_nll=-float(ll.mean()),
            nll_num_samples=tc.eval_num_samples,
            nll_num_points=num_points,
        )
    return summary


def _write_epoch(
    run_dir: Path, loop: _Loop, record: dict[str, Any], timing: dict[str, Any]
) -> None:
    # metrics first, then the checkpoint: a crash in between re-runs the epoch on resume,
    # and the resumed run truncates metrics.jsonl to the checkpoint's epoch.
    if loop.world.is_main:
        _append_jsonl(run_dir / "metrics.jsonl", record)
        _append_jsonl(run_dir / "timing.jsonl", timing)
    loop.write_checkpoint(run_dir)  # a collective under several processes
    if loop.world.is_main:
        write_tensors(run_dir / "model.safetensors", loop.vae.state_dict())


class _FaultError(Exception):
    """The guard found a bad step: in-epoch ``step`` of ``epoch`` (``skipped``: skip limit)."""

    def __init__(self, epoch: int, step: int, skipped: int = 0) -> None:
        super().__init__(epoch, step, skipped)
        self.epoch, self.step, self.skipped = epoch, step, skipped


class _Loop:
    """The hot loop of one training run: device-resident data, no per-step host sync.

    It also owns the run's position (:class:`~pyro_vae.training.runstate.Position`) and its state
    for checkpoints (:meth:`state`, :meth:`load_state`), and keeps an in-memory copy of the
    state at the start of each epoch, from which :meth:`diagnose` replays a bad step.
    """

    def __init__(
        self,
        vae: VAE,
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
        tc: TrainConfig,
        train_x: torch.Tensor,
        progress: bool,
        world: World | None = None,
        train_y: torch.Tensor | None = None,
    ) -> None:
        self.vae, self.opt, self.gen, self.tc, self.train_x = vae, opt, gen, tc, train_x
        self.device = next(vae.parameters()).device  # train_x may stay in host memory
        self.world = world = world or World()
        self.train_y = train_y  # (N,) labels of a conditional VAE, on the device
        self.objective = build_objective(tc.objective, num_particles=tc.num_particles)
        self.module_loss = self.objective(vae.model, vae.guide)  # the ELBO as an nn.Module
        self.loss_fn: torch.nn.Module = self.module_loss
        if world.enabled:  # gradients averaged across ranks during backward
            self.loss_fn = DistributedDataParallel(self.module_loss)
        elif tc.replay:  # the Pyro program recorded once per batch shape, then replayed
            self.loss_fn = Replay(self.module_loss, self.objective)
        self.guard = StepGuard(opt, tc.on_nan)
        # a last batch smaller than the number of processes is dropped (some rank would
        # get no rows); with one process nothing is dropped
        n, b = train_x.shape[0], tc.batch_size
        self.steps_per_epoch = max(1, n // b + (n % b >= world.world_size))
        self.position = Position()
        self.gen_start = gen.get_state()  # the data RNG at the start of the current epoch
        self.stop_requested = False  # set by the Ctrl-C handler; read on the host each step
        self.checkpoint_label = "none written"
        self.snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        self.bar = tqdm(
            total=tc.epochs * self.steps_per_epoch,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )

    def close(self) -> None:
        """Close the progress bar and drop the DDP wrapper while the process group lives."""
        self.bar.close()
        self.loss_fn = self.module_loss  # DDP's reducer must die before destroy_process_group

    # ------------------------------------------------------------------ the hot loop

    def epoch(self, epoch: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Train one epoch (from a partial one's next step); None when Ctrl-C stopped it."""
        tc = self.tc
        self.bar.set_description(f"epoch {epoch}/{tc.epochs}")
        if hasattr(self.objective, "set_epoch"):  # e.g. a KL warm-up: a function of the epoch
            self.objective.set_epoch(epoch)
        lr = learning_rate(tc.lr, tc.lr_schedule, epoch, tc.lr_stage_scale)  # of the epoch alone
        for group in self.opt.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        self.gen_start = self.gen.get_state()
        self.snapshot = self._copy_state()
        partial, self.position.partial = self.position.partial, None
        first = partial.steps_done + 1 if partial else 1
        sums = partial.sums.clone() if partial else torch.zeros(4, dtype=torch.float64)
        sums = sums.to(self.device)  # (4,) loss, reconstruction, KL, rows
        self.guard.reset(first - 1, *((partial.first_bad, partial.bad) if partial else ()))
        x, perm = self._data()
        shown, last = first - 1, start
        with pyro.validation_enabled(False):
            for step, idx in enumerate(perm.split(tc.batch_size)[: self.steps_per_epoch], 1):
                if step < first:
                    continue
                sums += self._step(x, idx)
                if self.stop_requested:  # a host flag: no device sync
                    first_bad, bad = self.guard.poll()
                    self.position.partial = Partial(epoch, step, sums, first_bad, bad)
                    return None
                now = time.perf_counter()  # the host reads the device twice a second at most
                if now - last > 0.5:
                    self._sync(epoch, sums, step, shown)
                    shown, last = step, now
        bad = self._sync(epoch, sums, self.steps_per_epoch, shown)
        loss, recon, kl, rows = all_reduce_sum(sums, self.world).tolist()
        loss, recon, kl = (v / rows if rows else math.nan for v in (loss, recon, kl))
        seconds = time.perf_counter() - start
        self.position.epochs_done = epoch
        self.position.skipped_total += bad
        record = {
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "train_loss": loss,
            "train_elbo": recon - kl,
            "train_reconstruction": recon,
            "train_kl": kl,
            "skipped_steps": bad,
            "train_objective": -loss,  # the training objective's own value (a bound, nats)
        }
        if hasattr(self.objective, "kl_weight"):
            record["kl_weight"] = float(self.objective.kl_weight)
        timing = {"epoch": epoch, "seconds": seconds, "images_per_s": rows / seconds}
        return record, timing

    def probe(self) -> None:
        """Score the objective once on two rows, touching no RNG, weight, buffer or gradient.

        Some pairings only fail when scored (free bits with a VampPrior: no per-dimension
        KL); this makes them fail before the run directory is written.
        """
        buffers = {name: b.clone() for name, b in self.vae.named_buffers()}
        xb = self.train_x[:2].to(self.device)  # (2, *data_shape)
        if self.tc.binarize == "dynamic":
            xb = (xb > 0.5).to(xb.dtype)  # the model's support; no RNG drawn
        labels = () if self.train_y is None else (self.train_y[:2].to(self.device),)
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), pyro.validation_enabled(False):
            self.module_loss(xb, *labels)
            for name, b in self.vae.named_buffers():  # e.g. counters a forward pass moves
                b.copy_(buffers[name])

    def _data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's data and batch order, both drawn from the data RNG ``self.gen``."""
        x = self.train_x
        if self.tc.binarize == "dynamic":
            x = dynamic_binarize(x, self.gen)  # (N, *data_shape), redrawn each epoch
        perm = torch.randperm(x.shape[0], generator=self.gen, device=x.device)  # (N,)
        return x, perm

    def _step(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One step on the global batch ``x[idx]``; this rank trains on its share of it."""
        share = self.world.share(idx)  # all of idx for one process
        xb = x[share].to(self.device, non_blocking=True)  # (b, *data_shape)
        labels = () if self.train_y is None else (self.train_y[share].to(self.device),)
        total = self.loss_fn(xb, *labels)  # negative ELBO summed over the rows
        loss = total / idx.shape[0] * self.world.world_size  # nats per data point (distributed)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        ok = self.guard.check(loss)  # () bool on the device
        self.guard.step(ok)  # the optimizer step; a no-op if not ok
        # the true (unweighted) ELBO terms, whatever the objective
        recon, kl = batch_terms(self.objective, self.vae.model, self.vae.guide, xb, *labels)
        rows = torch.full_like(loss.detach(), xb.shape[0])
        values = torch.stack([total.detach(), recon, kl, rows])
        return torch.where(ok, values.double(), 0.0)  # (4,) bad steps count for nothing

    def _sync(self, epoch: int, sums: torch.Tensor, step: int, shown: int) -> int:
        """Host read: refresh the bar and act on the guard. Returns this epoch's bad steps."""
        first_bad, bad = self.guard.poll()
        if not self.bar.disable:
            _loss, recon, kl, rows = sums.tolist()
            if rows:
                recon, kl = recon / rows, kl / rows
                self.bar.set_postfix(elbo=f"{recon - kl:.2f}", rec=f"{recon:.2f}", kl=f"{kl:.2f}")
            self.bar.update(step - shown)
        if first_bad and self.tc.on_nan == "stop":
            raise _FaultError(epoch, first_bad)
        skipped = self.position.skipped_total + bad
        if skipped > self.tc.max_skipped_steps:
            raise _FaultError(epoch, first_bad, skipped)
        return bad

    # ------------------------------------------------------------------ state

    def stateful(self) -> dict[str, Stateful]:
        """Components with training state outside the VAE (see :mod:`pyro_vae.training.runstate`)."""
        parts = {"objective": self.objective}
        return {k: v for k, v in parts.items() if callable(getattr(v, "state_dict", None))}  # type: ignore[misc]

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The run's state now (tensors are references to the live ones)."""
        data_rng = self.gen_start if self.position.partial else self.gen.get_state()
        tensors, meta = capture(
            self.vae, self.opt, data_rng, self.position, self.stateful(), self.steps_per_epoch
        )
        meta["world_size"] = self.world.world_size  # processes that train the run
        return tensors, meta

    def load_state(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: Path
    ) -> None:
        self.position, self.gen_start = restore(
            where, tensors, meta, vae=self.vae, opt=self.opt, gen=self.gen, stateful=self.stateful()
        )
        if meta["world_size"] != self.world.world_size:
            raise CheckpointError(
                f"{str(where)!r} was written by a run of {meta['world_size']} process(es), but "
                f"this one has {self.world.world_size}. Resume with as many processes as the "
                "run had (each keeps its own random stream)."
            )
        if self.world.rank > 0:  # restore() set rank 0's RNG; this rank has its own
            torch.set_rng_state(tensors[f"rng.torch.{self.world.rank}"])
        self.checkpoint_label = self._label()

    def write_checkpoint(self, run_dir: Path) -> None:
        """Rank 0 writes the state; every rank's torch RNG goes in (a collective)."""
        rng = gather_rng_states(self.world, self.device)
        if self.world.is_main:
            tensors, meta = self.state()
            tensors.update({f"rng.torch.{r}": s for r, s in enumerate(rng) if r > 0})
            write_tensors(run_dir / "checkpoint.safetensors", tensors, meta)
        self.checkpoint_label = self._label()

    def _label(self) -> str:
        partial = self.position.partial
        if partial is not None:
            return f"epoch {partial.epoch}, step {partial.steps_done}"
        return f"after epoch {self.position.epochs_done}"

    def _copy_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = self.state()
        return {k: v.detach().clone() for k, v in tensors.items()}, json.loads(json.dumps(meta))

    # ------------------------------------------------------------------ diagnosis

    def diagnose(self, fault: _FaultError) -> Diagnosis:
        """Replay the epoch from its start up to ``fault.step`` and diagnose that step.

        The replay restores the state copied at the epoch's start (weights, optimizer, RNGs,
        data RNG) and re-runs the good steps before the bad one, so on CPU it sees exactly
        the batch, the parameters and the random draws of the bad step.
        """
        assert self.snapshot is not None
        label = self.checkpoint_label
        self.load_state(*self.snapshot, Path("<state at the start of the epoch>"))
        self.checkpoint_label = label
        partial, self.position.partial = self.position.partial, None
        first = partial.steps_done + 1 if partial else 1
        x, perm = self._data()
        self.guard.reset(first - 1)
        share = perm[:0]
        with pyro.validation_enabled(False):
            for step, idx in enumerate(perm.split(self.tc.batch_size), start=1):
                if step == fault.step:
                    share = self.world.share(idx)
                    break
                if step >= first:
                    self._step(x, idx)
            xb, b = x[share], max(share.shape[0], 1)
            labels = () if self.train_y is None else (self.train_y[share],)
            model, guide = self.vae.model, self.vae.guide
            return diagnose_step(
                lambda batch: self.module_loss(batch, *labels) / b,
                lambda batch: model(batch, *labels),
                lambda batch: guide(batch, *labels),
                xb,
                dict(self.vae.named_parameters()),
            )
