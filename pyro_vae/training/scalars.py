"""TensorBoard scalars of a run, when asked: ``TrainConfig(tensorboard=True)``.

Each epoch, every number of its ``metrics.jsonl`` record (``train_elbo``,
``valid_elbo``, ``skipped_steps``, ...) and the epoch's learning rate ``lr`` go to
``RUN/tensorboard/`` as scalars at step ``epoch``, through ``torch.utils.tensorboard``. The
``tensorboard`` package is an optional extra (``pip install 'pyro-vae[tensorboard]'``);
:func:`require_tensorboard` says so before a run writes anything. A resumed run appends a
new event file; TensorBoard shows the epochs of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyro_vae.training.errors import TrainingError

__all__ = ["TENSORBOARD_FOLDER", "Scalars", "require_tensorboard"]

TENSORBOARD_FOLDER = "tensorboard"  # in the run directory

_MISSING = (
    "TrainConfig(tensorboard=True) writes through torch.utils.tensorboard, which needs the "
    "tensorboard package ({why}). Install the optional extra: pip install "
    "'pyro-vae[tensorboard]' (or pip install tensorboard), or leave TensorBoard off."
)


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; TrainingError naming the extra if missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises it when the tensorboard package is absent
        raise TrainingError(_MISSING.format(why=str(e).splitlines()[0][:120])) from None
    return SummaryWriter


class Scalars:
    """The event file of one run's session: :meth:`epoch` adds an epoch, :meth:`close` ends."""

    def __init__(self, run_dir: Path) -> None:
        writer = require_tensorboard()
        self.writer = writer(log_dir=str(run_dir / TENSORBOARD_FOLDER))

    def epoch(self, record: dict[str, Any], lr: float) -> None:
        """Add the record's numbers (``epoch`` is the step) and the learning rate; flush."""
        step = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, float(value), step)
        self.writer.add_scalar("lr", float(lr), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
