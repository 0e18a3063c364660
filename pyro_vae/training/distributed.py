r"""Scale-out on PyTorch's own distributed engine, as launched by ``torchrun``.

``torchrun --nproc_per_node=N -m pyro_vae train ...`` starts N processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; :func:`setup` joins the process
group (gloo on CPU, nccl on CUDA) and the trainer wraps the ``Trace_ELBO()(model, guide)``
loss module in :class:`~torch.nn.parallel.DistributedDataParallel`. No process management
happens here: torchrun starts, watches and stops the processes.

The arithmetic that makes N processes equal one. ``TrainConfig.batch_size`` B is the *global*
batch. Every rank draws the same permutation (a shared seed), takes the same global batch of B
rows, and keeps its own share ``batch[rank::N]``. It scales its loss by ``N / B``:

.. math::

    \frac{1}{N}\sum_{r=1}^{N} \frac{N}{B} \sum_{n \in \text{share}_r} \ell_n
        = \frac{1}{B} \sum_{n \in \text{batch}} \ell_n ,

so DDP's gradient average is the gradient of the global per-data-point loss, whatever the
shares' sizes. Only rank 0 writes logs, plots and checkpoints; metrics are summed across
ranks before they are written.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistributedError", "World", "all_reduce_sum", "gather_rng_states", "setup", "teardown"]


class DistributedError(RuntimeError):
    """Another training process failed, or torchrun stopped this one."""


AFTER_FAILURE = (
    "Checkpoints are written atomically by rank 0, so the last complete one in the run "
    "directory is intact: start the same processes again with fit(..., resume=True) to "
    "continue."
)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains (``world_size > 1``)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and prints."""
        return self.rank == 0

    def share(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch of indices: ``indices[rank::world_size]``."""
        return indices[self.rank :: self.world_size]

    def barrier(self) -> None:
        """Wait until every rank got here (a no-op for one process)."""
        if self.enabled:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup(device: torch.device, timeout_s: float = 300.0) -> tuple[World, torch.device]:
    """Join the process group when launched with ``WORLD_SIZE > 1``; pick this rank's device.

    On CUDA each rank uses ``cuda:LOCAL_RANK`` and the nccl backend; on CPU, gloo.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return World(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    world = World(rank, world_size, local_rank)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stopped_by_torchrun(world))
    return world, device


def _stopped_by_torchrun(world: World):  # type: ignore[no-untyped-def]
    def handler(signum: int, frame: object) -> None:
        raise DistributedError(
            f"this process (rank {world.rank} of {world.world_size}) was stopped by torchrun, "
            "usually because another rank failed (torchrun's report names the root cause). "
            + AFTER_FAILURE
        )

    return handler


def teardown(world: World) -> None:
    """Leave the process group (a no-op for one process)."""
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (in place; returned for chaining)."""
    if world.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_rng_states(world: World, device: torch.device) -> list[torch.Tensor]:
    """Every rank's torch CPU RNG state, in rank order (on every rank)."""
    state = torch.get_rng_state()  # (S,) uint8
    if not world.enabled:
        return [state]
    local = state.to(device)
    out = [torch.empty_like(local) for _ in range(world.world_size)]
    dist.all_gather(out, local)
    return [s.cpu() for s in out]
