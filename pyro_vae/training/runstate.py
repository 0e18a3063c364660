"""Everything a training run needs to continue exactly: captured, checked and restored.

``checkpoint.safetensors`` holds, in one file that is replaced atomically:

- ``model.*``: the VAE's ``state_dict`` (parameters and buffers);
- ``optim.<i>.<name>``: the optimizer's per-parameter state (Adam's moments and step);
- ``rng.torch``, ``rng.cuda``, ``rng.numpy`` and ``rng.data``: the global torch, CUDA and
  numpy RNGs, and the data generator (dynamic binarization and the batch order) as it was
  at the start of the epoch that runs next; the Python ``random`` state is in the metadata;
- ``partial.sums``: the running metric sums when the checkpoint was written mid-epoch;
- ``state.<name>.<key>``: the tensors of every *stateful component* (below);
- JSON metadata: the epochs done, the position inside a partial epoch, the number of
  skipped steps, the optimizer's hyper-parameters, and the non-tensor parts of the
  components' state.

A stateful component is anything the trainer holds, other than the VAE's parameters and
buffers, whose state changes during training (an annealing schedule with its own counter,
a running baseline): it exposes ``state_dict()`` and ``load_state_dict(state)``, and the
trainer lists it in :meth:`~pyro_vae.training.loop.Loop.stateful`. Tensors go to the
safetensors part, plain JSON values to the metadata, so such state is resumed exactly with
no per-component code here.
Schedules that are a function of the epoch alone need nothing: the epoch is restored.

:func:`restore` checks the file against the run's own model and optimizer before using
it, and turns every mismatch into a :class:`~pyro_vae.training.checkpoint.CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pyro_vae.checks import is_int, is_number
from pyro_vae.training.checkpoint import CheckpointError, load_state, read_tensors

__all__ = ["Partial", "Position", "Stateful", "capture", "last_checkpoint", "restore"]


class Stateful(Protocol):
    """Anything with torch's ``state_dict`` / ``load_state_dict`` pair (modules, optimizers)."""

    def state_dict(self) -> dict[str, Any]:
        """The object's state as a dict of tensors and plain values."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        """Restore the state that :meth:`state_dict` returned."""
        ...


@dataclass
class Partial:
    """Where a mid-epoch checkpoint stopped: ``steps_done`` steps of ``epoch`` are done."""

    epoch: int
    steps_done: int
    sums: torch.Tensor  # (4,) float64: loss, reconstruction, KL and rows of the good steps
    first_bad: int = 0  # the guard's counters for this epoch (pyro_vae.training.guard)
    bad: int = 0


@dataclass
class Position:
    """How far a run got: whole epochs, an optional partial one, and skipped steps."""

    epochs_done: int = 0
    partial: Partial | None = None
    skipped_total: int = 0


REQUIRED_META = (
    "world_size",
    "epoch",
    "step",
    "skipped_total",
    "partial",
    "param_groups",
    "optim_scalars",
    "rng_numpy",
    "rng_python",
    "states",
)


def capture(
    vae: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data_rng: torch.Tensor,
    position: Position,
    stateful: dict[str, Stateful],
    steps_per_epoch: int,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The run's state as (tensors, JSON metadata); tensors are references, not copies."""
    tensors = {f"model.{k}": v for k, v in vae.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = data_rng
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state: Any = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    version, py_state, gauss = random.getstate()
    partial = position.partial
    meta: dict[str, Any] = {
        "epoch": position.epochs_done,
        "step": position.epochs_done * steps_per_epoch + (partial.steps_done if partial else 0),
        "skipped_total": position.skipped_total,
        "partial": None,
        "param_groups": opt_state["param_groups"],
        "optim_scalars": scalars,
        "rng_numpy": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "rng_python": [version, list(py_state), gauss],
        "states": {},
    }
    if partial is not None:
        meta["partial"] = {
            "epoch": partial.epoch,
            "steps_done": partial.steps_done,
            "first_bad": partial.first_bad,
            "bad": partial.bad,
        }
        tensors["partial.sums"] = partial.sums
    for name, component in stateful.items():
        plain: dict[str, Any] = {}
        for key, value in component.state_dict().items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{name}.{key}"] = value
            else:
                plain[key] = value
        json.dumps(plain)  # a component's non-tensor state must be plain JSON
        meta["states"][name] = plain
    return tensors, meta


def _int(meta: dict[str, Any], key: str, low: int = 0) -> int:
    value: Any = meta.get(key)
    if not is_int(value) or value < low:
        raise ValueError(f"metadata {key!r} must be an int >= {low}, got {value!r}")
    return value


def _check_finite(tensors: dict[str, torch.Tensor]) -> None:
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"tensor {key!r} holds NaN or infinite values")


def _restore_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    fresh = opt.state_dict()
    groups = fresh["param_groups"]
    saved = meta.get("param_groups")
    if not isinstance(saved, list) or len(saved) != len(groups):
        raise ValueError("its optimizer parameter groups do not match this model's")
    for group, old in zip(groups, saved, strict=True):
        if not isinstance(old, dict) or len(old.get("params", ())) != len(group["params"]):
            raise ValueError("its optimizer parameter groups do not match this model's")
        for key, value in group.items():  # hyper-parameters only; implementation flags stay
            had = old.get(key)
            if is_number(value) and is_number(had):
                group[key] = had
            elif (
                isinstance(value, tuple)
                and isinstance(had, list)
                and len(had) == len(value)
                and all(is_number(v) for v in had)
            ):
                group[key] = tuple(had)
    params = [p for g in opt.param_groups for p in g["params"]]
    ids = [i for g in groups for i in g["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    scalars = meta.get("optim_scalars", {})
    if not isinstance(scalars, dict):
        raise ValueError("metadata 'optim_scalars' must be an object")
    for key, values in scalars.items():
        if not isinstance(values, dict):
            raise ValueError("metadata 'optim_scalars' must map ids to objects")
        state.setdefault(int(key), {}).update(values)
    names = {frozenset(entries) for entries in state.values()}
    if state and (len(names) != 1 or set(state) != set(ids)):
        raise ValueError("its optimizer state covers some parameters but not all")
    for pid, entries in state.items():
        if pid not in ids:
            raise ValueError(f"optimizer state for parameter {pid}, which this model lacks")
        param = params[ids.index(pid)]
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(
                    f"optimizer state {name!r} of parameter {pid} has shape "
                    f"{tuple(value.shape)}, but the parameter has {tuple(param.shape)}"
                )
    opt.load_state_dict({"state": state, "param_groups": groups})


def _restore_rngs(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], gen: torch.Generator
) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    _restore_data_rng(tensors["rng.data"], gen)
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    pos, has_gauss, cached = meta["rng_numpy"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))
    version, py_state, gauss = meta["rng_python"]
    random.setstate((int(version), tuple(int(v) for v in py_state), gauss))


# torch.Generator state sizes in bytes: the CPU Mersenne Twister (5056) and the CUDA Philox
# generator (a uint64 seed and an int64 offset, 16).
_GENERATOR_STATE_SIZES = frozenset({torch.Generator().get_state().numel(), 16})


def _restore_data_rng(state: torch.Tensor, gen: torch.Generator) -> None:
    """The data generator's state; or, when the data RNG moved between CPU and GPU (a
    resume on another device, or data kept in host memory this time), a seed derived from
    the saved state: CPU and CUDA generators have different state formats and streams, so
    the run goes on reproducibly, but not with the draws the other device would have made.
    Anything that is neither generator's state (a damaged file) is refused.
    """
    if (
        state.dtype != torch.uint8
        or state.dim() != 1
        or state.numel() not in _GENERATOR_STATE_SIZES
    ):
        raise ValueError(
            f"tensor 'rng.data' must be a CPU or CUDA generator state (uint8, "
            f"{' or '.join(map(str, sorted(_GENERATOR_STATE_SIZES)))} bytes), got "
            f"{state.dtype} of shape {tuple(state.shape)}"
        )
    if state.numel() == gen.get_state().numel():
        gen.set_state(state)
        return
    digest = hashlib.sha256(state.numpy().tobytes()).digest()
    gen.manual_seed(int.from_bytes(digest[:8], "little"))


def _read_partial(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Partial | None:
    raw = meta.get("partial")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("metadata 'partial' must be an object or null")
    sums = tensors["partial.sums"]
    if sums.shape != (4,) or sums.dtype != torch.float64:
        raise ValueError("tensor 'partial.sums' must be float64 of shape (4,)")
    return Partial(
        _int(raw, "epoch", 1),
        _int(raw, "steps_done", 1),
        sums,
        _int(raw, "first_bad"),
        _int(raw, "bad"),
    )


def restore(
    path: Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    vae: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    stateful: dict[str, Stateful],
) -> tuple[Position, torch.Tensor]:
    """Load a captured state into ``vae``, ``opt``, the RNGs and ``gen``.

    Returns the run's :class:`Position` and the data generator's state. Raises
    :class:`CheckpointError` naming ``path`` when the state is damaged, incomplete, holds
    NaN, or was made for another model.
    """
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state(vae, model, path)  # type: ignore[arg-type]  # names, shapes, finiteness
    try:
        _check_finite(tensors)
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise KeyError(missing[0])
        _int(meta, "world_size", low=1)  # the caller checks it against its own world
        position = Position(_int(meta, "epoch"), _read_partial(tensors, meta))
        position.skipped_total = _int(meta, "skipped_total")
        _int(meta, "step")
        _restore_optimizer(opt, tensors, meta)
        _restore_rngs(tensors, meta, gen)
        states = meta["states"]
        if not isinstance(states, dict):
            raise ValueError("metadata 'states' must be an object")
        for name, component in stateful.items():
            prefix = f"state.{name}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            state.update(states[name])
            component.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, OverflowError) as e:
        why = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
        raise CheckpointError(
            f"cannot resume from {str(path)!r}: {why}. The file is damaged, or was not "
            "written by this version of pyro-vae for this run. Restore the file from a backup, "
            "or start a new run with another TrainConfig.out."
        ) from None
    return position, tensors["rng.data"]


def last_checkpoint(run_dir: str | Path) -> str:
    """Where the run in ``run_dir`` would resume from, in words: ``"after epoch 2"``,
    ``"epoch 3, step 5"``, or ``"none written"`` (no run yet: no ``config.json`` or no
    checkpoint), as read from ``checkpoint.safetensors``."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoint.safetensors"
    if not (run_dir / "config.json").is_file() or not path.is_file():
        return "none written"
    try:
        _, meta = read_tensors(path)
        partial = meta.get("partial")
        if isinstance(partial, dict):
            return f"epoch {int(partial['epoch'])}, step {int(partial['steps_done'])}"
        return f"after epoch {int(meta['epoch'])}"
    except (CheckpointError, KeyError, TypeError, ValueError):
        return "unreadable"
