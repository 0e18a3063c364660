"""What training raises and warns: the public errors of :func:`~pyro_vae.training.fit.fit`,
and :class:`BadStepError`, the loop's signal that its step guard found a bad step.
"""

from __future__ import annotations

from pyro_vae.training.nonfinite import StepReport

__all__ = [
    "BadStepError",
    "NonFiniteError",
    "TrainingError",
    "TrainingInterrupted",
    "TrainingNotice",
]


class TrainingError(RuntimeError):
    """Training could not go on (a non-finite loss, a run directory in the way, ...)."""


class NonFiniteError(TrainingError):
    """A step's loss or gradient was not finite; ``diagnosis`` says which term and site."""

    def __init__(self, message: str, epoch: int, step: int, diagnosis: StepReport) -> None:
        super().__init__(message)
        self.epoch, self.step, self.diagnosis = epoch, step, diagnosis


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message says what was saved and how to continue."""


class TrainingNotice(UserWarning):
    """Something the user should know that is not an error (the CLI prints it as a note)."""


class BadStepError(Exception):
    """The step guard found a bad step: in-epoch ``step`` of ``epoch``.

    ``skipped`` is nonzero when the run skipped more steps than
    ``TrainConfig.max_skipped_steps`` allows (``TrainConfig(on_nan='skip')``); zero when
    ``TrainConfig(on_nan='stop')`` stopped at the first bad step. The loop raises it; ``fit``
    turns it into a :class:`NonFiniteError` after explaining the step.
    """

    def __init__(self, epoch: int, step: int, skipped: int = 0) -> None:
        super().__init__(epoch, step, skipped)
        self.epoch, self.step, self.skipped = epoch, step, skipped
