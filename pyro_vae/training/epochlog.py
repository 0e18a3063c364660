"""What each trained epoch leaves behind, in order, and whether the run goes on.

:class:`EpochLog` is the part of :func:`~pyro_vae.training.loop.train` that runs between
epochs: it appends the epoch's record to the history, updates the early-stopping count
(:mod:`~pyro_vae.training.earlystop`), writes the best weights when the epoch improved,
then the epoch's logs and checkpoint (:func:`~pyro_vae.training.rundir.write_epoch`), then
the TensorBoard scalars when asked (:mod:`~pyro_vae.training.scalars`). Only rank 0 writes
files; every rank keeps the same count (the validation scores are summed across ranks).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_vae.training.earlystop import EarlyStop, write_best
from pyro_vae.training.rundir import write_epoch
from pyro_vae.training.scalars import Scalars

if TYPE_CHECKING:
    from pyro_vae.training.loop import Loop

__all__ = ["EpochLog"]


class EpochLog:
    """The between-epoch writes of a run in ``run_dir`` (None: nothing is written)."""

    def __init__(self, loop: Loop, run_dir: Path | None, history: list[dict[str, Any]]) -> None:
        self.loop, self.run_dir, self.history = loop, run_dir, history
        self.early = EarlyStop.from_history(loop.tc.early_stop, history)  # exact on resume
        self.writes = run_dir is not None and loop.world.is_main
        self.scalars = Scalars(run_dir) if run_dir and self.writes and loop.tc.tensorboard else None
        early = self.early
        if self.writes and early.patience and early.best_epoch == early.epochs_done > 0:
            self._write_best()  # resumed: the checkpoint's weights are the best ones

    def add(self, record: dict[str, Any], timing: dict[str, Any]) -> None:
        """Count and write a trained and scored epoch."""
        self.history.append(record)
        improved = self.early.update(int(record["epoch"]), float(record["valid_elbo"]))
        if self.run_dir is None:
            return
        if improved and self.early.patience and self.writes:
            self._write_best()  # before the epoch's checkpoint (see earlystop)
        write_epoch(self.run_dir, self.loop, record, timing)
        if self.scalars is not None:
            self.scalars.epoch(record, self.loop.opt.param_groups[0]["lr"])

    def close(self) -> None:
        """Close the TensorBoard event file, if any."""
        if self.scalars is not None:
            self.scalars.close()

    def _write_best(self) -> None:
        assert self.run_dir is not None
        write_best(self.run_dir, self.loop.vae, self.early)
