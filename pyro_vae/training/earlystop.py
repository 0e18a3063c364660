r"""Early stopping on the validation bound, with the best weights kept.

With ``TrainConfig.early_stop`` :math:`= P > 0` a run stops after the first epoch :math:`e`
at which the validation ELBO has not improved for :math:`P` epochs,

.. math::

    e - e^\star \ge P, \qquad
    e^\star = \operatorname*{arg\,max}_{e' \le e} \mathrm{ELBO}_\text{valid}(e')
    \quad\text{(the first epoch that reached the maximum)},

the rule of Prechelt (1998), "Early stopping -- but when?", with the best epoch's weights
kept. An epoch *improves* when its validation ELBO is strictly greater than every earlier
one (a NaN never improves). The state is a function of ``metrics.jsonl`` alone, so a
resumed run (whose logs are cut back to its checkpoint's epoch) rebuilds it exactly and
continues the patience count as an uninterrupted run would: :meth:`EarlyStop.from_history`.

The best epoch's VAE weights go to ``RUN/best.safetensors`` (atomically, its metadata
naming the epoch) each time an epoch improves, before that epoch's checkpoint, so a run
killed in between re-runs the epoch and writes them again. ``model.safetensors`` and the
test summary stay those of the last epoch trained; ``summary.json`` says
``stopped_early``, ``best_epoch`` and ``best_valid_elbo`` (:meth:`EarlyStop.summary`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyro_vae.training.checkpoint import write_tensors

__all__ = ["BEST_FILE", "EarlyStop", "write_best"]

BEST_FILE = "best.safetensors"  # the best epoch's VAE weights, in the run directory


@dataclass
class EarlyStop:
    """The patience count of a run: its best epoch so far and that epoch's validation ELBO.

    ``patience`` is ``TrainConfig.early_stop`` (0: never stop early, but the best epoch is
    still tracked). ``epochs_done`` is the last epoch seen.
    """

    patience: int = 0
    best_epoch: int = 0
    best_valid_elbo: float = -math.inf
    epochs_done: int = 0

    @classmethod
    def from_history(cls, patience: int, history: list[dict[str, Any]]) -> EarlyStop:
        """The state after the epochs of ``history`` (``metrics.jsonl``'s records, in order)."""
        state = cls(patience)
        for record in history:
            state.update(int(record["epoch"]), float(record.get("valid_elbo", math.nan)))
        return state

    def update(self, epoch: int, valid_elbo: float) -> bool:
        """Count epoch ``epoch`` with its validation ELBO; True when it is the new best."""
        self.epochs_done = epoch
        if valid_elbo > self.best_valid_elbo:  # False for NaN
            self.best_epoch, self.best_valid_elbo = epoch, valid_elbo
            return True
        return False

    @property
    def stale(self) -> int:
        """Epochs since the best one (the patience used up)."""
        return self.epochs_done - self.best_epoch

    @property
    def exhausted(self) -> bool:
        """Whether the run must stop: early stopping is on and the patience is used up."""
        return self.patience > 0 and self.epochs_done > 0 and self.stale >= self.patience

    def summary(self, epochs: int) -> dict[str, Any]:
        """The keys ``summary.json`` gets when early stopping is on (``epochs``: the run's)."""
        best = self.best_valid_elbo if math.isfinite(self.best_valid_elbo) else None
        return {
            "stopped_early": self.exhausted and self.epochs_done < epochs,
            "stopped_epoch": self.epochs_done,
            "best_epoch": self.best_epoch,
            "best_valid_elbo": best,
            "early_stop_patience": self.patience,
        }

    def message(self) -> str:
        """Why the run stopped, in one line."""
        return (
            f"stopped early after epoch {self.epochs_done}: the validation ELBO has not "
            f"improved for {self.stale} epochs (TrainConfig(early_stop={self.patience})); the "
            f"best, {self.best_valid_elbo:.4f} at epoch {self.best_epoch}, is in {BEST_FILE}"
        )


def write_best(run_dir: Path, vae: torch.nn.Module, state: EarlyStop) -> None:
    """Atomically write the VAE's weights as the best epoch's (``RUN/best.safetensors``)."""
    meta = {"epoch": state.best_epoch, "valid_elbo": state.best_valid_elbo}
    write_tensors(run_dir / BEST_FILE, vae.state_dict(), meta)
