r"""Training by stochastic variational inference: one code path for Python and the CLI.

:func:`fit` builds a run and wires it: it checks the run directory
(:mod:`~pyro_vae.training.rundir`), loads and checks the data, builds the VAE, the fused
Adam optimizer and the :class:`~pyro_vae.training.loop.Loop`, starts or resumes the run,
trains (:func:`~pyro_vae.training.loop.train`, the loop to read) and writes the test
summary (:mod:`~pyro_vae.training.summary`).

Each step maximizes the ELBO of a mini-batch of ``B`` rows with Adam. The loss is the
objective's estimate divided by ``B``, which is the same as ``poutine.scale(scale=1/B)`` on
every site, so every figure is per data point (nats) and comparable across batch sizes.
Distribution validation is switched off inside the loop only; the data are checked against
the likelihood's support once, before it (:func:`check_data`).

Reliability (README, "Reliability"):

- Non-finite steps. A device-side :class:`~pyro_vae.training.guard.StepGuard` checks every
  step's loss and gradient norm without a host sync, makes a bad step a no-op for the
  parameters and the optimizer state, and records the first bad step of the epoch. The host
  reads it where it synchronises anyway (progress refresh, at most twice a second, and epoch
  end). With ``TrainConfig(on_nan='stop')`` training stops there: the loop restores the
  in-memory state of the epoch's start, replays the epoch's good steps exactly (same
  batches, same draws) up to the bad one, and
  :func:`~pyro_vae.training.nonfinite.explain_step` names the term (reconstruction or KL)
  and the site that went non-finite first; nothing is written, so the last checkpoint stays
  as it was. With ``TrainConfig(on_nan='skip')`` bad steps are skipped (counted in
  ``metrics.jsonl`` as ``skipped_steps``, and their total, if any, in the summary) until
  more than ``TrainConfig.max_skipped_steps`` were.
- Checkpoints. A new run writes an epoch-0 checkpoint before it writes ``config.json``, so
  a directory with ``config.json`` always has a checkpoint to resume from. Every epoch
  replaces ``checkpoint.safetensors`` atomically (:mod:`pyro_vae.training.runstate` lists
  what it holds), so a SIGKILL leaves the previous or the new one.
- Ctrl-C. The first SIGINT asks the loop to stop after the current step; the trainer then
  writes a checkpoint of that exact mid-epoch state, so ``fit(..., resume=True)`` continues
  bit-identically (:mod:`pyro_vae.training.stops`). A second Ctrl-C aborts at once, leaving
  the last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from pyro_vae.config import DEVICE_NAME, ConfigError, RunConfig, TrainConfig, VAEConfig
from pyro_vae.data import (
    TEST_BINARIZATION_SEED,
    VALID_BINARIZATION_SEED,
    DataError,
    Dataset,
    evaluation_split,
    load_dataset,
    static_binarize,
    training_split,
)
from pyro_vae.infer.objectives import build_objective
from pyro_vae.training.checkpoint import DiskFullError, write_json
from pyro_vae.training.distributed import AFTER_FAILURE, DistributedError, World, setup, teardown
from pyro_vae.training.errors import (
    NonFiniteError,
    TrainingError,
    TrainingInterrupted,
    TrainingNotice,
)
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.labels import (
    check_labelled,
    classifier_weight,
    split_labels,
    training_labels,
    with_classes,
)
from pyro_vae.training.lock import run_lock
from pyro_vae.training.loop import Loop, train
from pyro_vae.training.rundir import (
    RESUME_OVERRIDES,
    check_resumed_data,
    check_run_paths,
    prepare_run_dir,
    refuse_file_out,
    resume_config,
    resume_run,
    start_run,
)
from pyro_vae.training.runstate import last_checkpoint
from pyro_vae.training.scalars import require_tensorboard
from pyro_vae.training.summary import mean_terms, summarize
from pyro_vae.training.tabular import for_table
from pyro_vae.vae import VAE

# The names the first layout's pyro_vae.train exported, importable from here still; those
# that live in other modules (rundir, summary, errors, pyro_vae.data.splits) are documented
# there.
__all__ = [
    "RESUME_OVERRIDES",
    "TEST_BINARIZATION_SEED",
    "VALID_BINARIZATION_SEED",
    "FitResult",
    "NonFiniteError",
    "TrainingError",
    "TrainingInterrupted",
    "TrainingNotice",
    "check_data",
    "check_run_paths",
    "data_home",
    "evaluation_split",
    "fit",
    "mean_terms",
    "resolve_device",
    "resume_config",
    "split_labels",
    "summarize",
    "training_labels",
    "training_split",
    "with_classes",
]


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained VAE, one metrics dict per epoch, test summary."""

    vae: VAE
    history: list[dict[str, float]]
    summary: dict[str, float]
    run_dir: Path | None
    config: RunConfig = field(default_factory=RunConfig)
    rank: int = 0  # this process's rank; only rank 0 has a summary and writes files


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
    :class:`TrainingError`). Everything is built and checked before a file is written.
    While it writes, ``fit`` holds the run directory's lock
    (:func:`~pyro_vae.training.lock.run_lock`): a second writer of the same directory is
    refused at once with :class:`~pyro_vae.training.lock.RunLockedError`. A full disk raises
    :class:`~pyro_vae.training.checkpoint.DiskFullError`, which names the file and the
    run's last checkpoint, from which ``resume=True`` continues once space is freed.
    ``resume=True`` continues the run in ``config.train.out`` from its checkpoint, exactly
    where it stopped (build ``config`` with :func:`resume_config`). ``dataset``
    overrides loading ``config.train.dataset``. The trainer draws no plots;
    :func:`pyro_vae.analysis.plots.plot_run` writes the run's ``plots/`` as the CLI does.

    Raises :class:`NonFiniteError` when a step goes non-finite (see the module docstring),
    and :class:`TrainingInterrupted` on Ctrl-C, after writing a checkpoint of the exact state.
    """
    config = config or RunConfig()
    if resume and not write:
        raise ValueError("resume=True continues a run directory, so it needs write=True")
    build_objective(config.train.objective)  # a bad spec fails before anything is written
    if config.train.tensorboard and write:
        require_tensorboard()  # a missing optional extra, too
    world, device = setup(resolve_device(config.train.device))
    try:
        with _writer(config, write, world):  # one writer per run directory (training.lock)
            result = _fit(config, world, device, dataset, resume, progress, write, on_epoch)
            # No rank leaves the group while another still uses it: under load, a rank that
            # destroyed its gloo group while rank 0 was still summarizing sometimes aborted.
            world.barrier()
        return result
    except DiskFullError as e:  # the message says where the run can continue from
        if write and e.run_dir is None:
            e.in_run(config.train.out, last_checkpoint(config.train.out))
        raise
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


def _writer(config: RunConfig, write: bool, world: World) -> contextlib.AbstractContextManager[Any]:
    """The run directory's lock when ``fit`` writes one (rank 0 holds it for the group)."""
    if not write:
        return contextlib.nullcontext()
    refuse_file_out(Path(config.train.out))  # before the lock would make a folder
    return run_lock(config.train.out, world=world)


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
    """Build the run, train it, summarize it (see :func:`fit`)."""
    run_dir, config = prepare_run_dir(config, resume) if write else (None, config)
    world.barrier()  # every rank has looked at the run directory before rank 0 writes to it
    tc = config.train
    if tc.batch_size < world.world_size:
        raise ValueError(
            f"TrainConfig.batch_size is the global batch and must be at least the number of "
            f"processes ({world.world_size}), got {tc.batch_size}"
        )
    dataset = dataset or load_dataset(
        tc.dataset, progress=progress and world.is_main, schema=tc.schema
    )
    config = for_table(config, dataset)  # a table: its own likelihood, no binarization
    tc = config.train
    check_labelled(config, dataset)
    if resume and run_dir is not None:
        check_resumed_data(config, dataset, run_dir)
    vae_config = with_classes(
        dataclasses.replace(config.vae, data_shape=dataset.data_shape), dataset
    )
    config = dataclasses.replace(config, vae=vae_config)
    vae = _build_vae(vae_config, tc, world, resume)
    check_data(vae, dataset, tc)
    vae.to(device)
    loop, home, (valid_x, valid_y) = _build_loop(vae, dataset, tc, world, device, progress)
    loop.probe()  # an objective that cannot score this model fails before a file is written
    history: list[dict[str, Any]] = []
    if run_dir is not None:
        history = (
            resume_run(run_dir, loop) if resume else start_run(run_dir, loop, config, dataset.table)
        )
    early = train(loop, run_dir, history, valid_x, valid_y, on_epoch)
    if not world.is_main:
        return FitResult(vae, history, {}, run_dir, config, rank=world.rank)
    summary = summarize(vae, dataset, tc, device, home)
    if loop.position.skipped_total:  # on_nan='skip': the run's total, resumed runs included
        summary["skipped_steps"] = loop.position.skipped_total
    if tc.early_stop:  # why and when it stopped, and the best epoch (RUN/best.safetensors)
        summary.update(early.summary(tc.epochs))
    if loop.graphs is not None:  # TrainConfig.cuda_graphs: whether the graphs ran, or why not
        summary["cuda_graphs"] = loop.graphs.report()
    if run_dir is not None:
        write_json(run_dir / "summary.json", summary)
    return FitResult(vae, history, summary, run_dir, config)


def _build_vae(vae_config: VAEConfig, tc: TrainConfig, world: World, resume: bool) -> VAE:
    """The VAE with the seed's initial weights (the same on every rank; resumed: restored)."""
    if not resume:
        pyro.set_rng_seed(tc.seed)
    vae = VAE(vae_config)
    if world.rank > 0 and not resume:
        torch.manual_seed(tc.seed + 7919 * world.rank)  # each rank its own guide noise
    return vae


def _build_loop(
    vae: VAE,
    dataset: Dataset,
    tc: TrainConfig,
    world: World,
    device: torch.device,
    progress: bool,
) -> tuple[Loop, torch.device, tuple[torch.Tensor, torch.Tensor | None]]:
    """The optimizer, the data at their home and the loop; returns it, the home, valid rows."""
    betas = (tc.adam_beta1, tc.adam_beta2)
    opt = fused_adam(list(vae.parameters()), tc.lr, betas=betas, eps=tc.adam_eps)
    train_x = training_split(dataset, tc.train_on)  # (N, *data_shape), host memory
    valid_x = evaluation_split(dataset, "valid", tc.binarize)
    home = data_home(train_x.nbytes + valid_x.nbytes, device, tc.data_on_device)
    if home != device and progress and world.is_main:
        print(f"pyro-vae: the data stay in host memory; each batch is copied to {device}")
    gen = torch.Generator(device=home).manual_seed(tc.seed)  # data order and binarization
    train_x, valid_x = _placed(train_x, home), _placed(valid_x, home)
    train_y = _to(training_labels(vae, dataset, tc.train_on, tc.labelled, tc.seed), home)
    m2 = vae.config.semi_supervised  # its classifier is scored on the valid labels
    valid_y = _to(dataset.labels("valid") if m2 else split_labels(vae, dataset, "valid"), home)
    loop = Loop(vae, opt, gen, tc, train_x, progress and world.is_main, world, train_y)
    if m2 and hasattr(loop.objective, "classifier_weight"):
        loop.objective.classifier_weight = classifier_weight(tc, train_x.shape[0])
    return loop, home, (valid_x, valid_y)


# ---------------------------------------------------------------------- devices and data


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    Any other name than ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` raises :class:`ConfigError`
    naming ``TrainConfig.device`` and the valid choices, for every command that takes it.
    """
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ConfigError(
            f"TrainConfig.device must be auto, cpu, cuda or cuda:N (N the GPU's index), got "
            f"{name!r}. Pass one of those, e.g. TrainConfig(device='cpu')."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(
            f"TrainConfig(device='{name}') was asked for, but torch sees no CUDA device"
        )
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


def _to(y: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if y is None else y.to(device)


def check_data(vae: VAE, dataset: Dataset, tc: TrainConfig) -> None:
    """Refuse data the run cannot train on or score (DataError); note a tiny train split."""
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
                    f"TrainConfig(binarize='dynamic') needs values in [0, 1] (pixel "
                    f"intensities), but the {split} split of {dataset.name!r} ranges over "
                    f"[{float(x.min()):.4g}, {float(x.max()):.4g}]. Rescale the data, or use "
                    "TrainConfig(binarize='none') with a likelihood for continuous data."
                )
            vae.check_data(static_binarize(x[:2], 0))  # shape, dtype
        else:
            vae.check_data(x)
    rows = dataset.train.shape[0]
    if rows < tc.batch_size:
        warnings.warn(
            TrainingNotice(
                f"the train split of {dataset.name!r} has {rows} rows, fewer than "
                f"TrainConfig(batch_size={tc.batch_size}): each epoch is one step on all "
                f"{rows} rows."
            ),
            stacklevel=3,
        )
