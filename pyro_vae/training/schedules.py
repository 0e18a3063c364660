r"""Learning-rate schedules: the learning rate as a pure function of the epoch number.

Because the rate depends on the epoch alone, a resumed run (``fit(..., resume=True)``) lands on the
same rate as an uninterrupted one: the trainer sets it on the optimizer's parameter
groups at the start of every epoch (:func:`learning_rate`), nothing else is stored.

``constant``
    :math:`\eta_e = \eta` for every epoch :math:`e`.

``burda``
    The schedule of Burda, Grosse & Salakhutdinov (2015, section 5): for
    :math:`i = 0, \dots, 7`, stage :math:`i` lasts :math:`3^i` epochs at
    :math:`\eta \cdot 10^{-i/7}`, 3280 epochs in all (with :math:`\eta = 10^{-3}` in the
    paper). ``stage_scale`` :math:`s` shortens (or lengthens) it in general: stage
    :math:`i` lasts :math:`\lceil s \cdot 3^i \rceil` epochs (at least one), so ``s = 1``
    is the paper's schedule, ``s = 1/27`` is 1+1+1+1+3+9+27+81 = 124 epochs, and any
    ``s <= 1/2187`` is one epoch per stage (8 epochs) with the paper's eight rates. Epochs
    after the last stage keep the last stage's rate.
"""

from __future__ import annotations

import math

from pyro_vae.checks import is_int, is_number

__all__ = [
    "BURDA_STAGES",
    "LR_SCHEDULES",
    "burda_stage_epochs",
    "learning_rate",
    "schedule_epochs",
]

LR_SCHEDULES: tuple[str, ...] = ("constant", "burda")
BURDA_STAGES = 8  # i = 0..7


def _check_scale(stage_scale: float) -> None:
    if not is_number(stage_scale) or not 0 < stage_scale < math.inf:
        raise ValueError(f"stage_scale must be a positive finite number, got {stage_scale!r}")


def burda_stage_epochs(stage_scale: float = 1.0) -> list[int]:
    r"""Epochs of the stages :math:`i = 0..7`: :math:`\lceil s \cdot 3^i \rceil`, at least 1.

    A relative tolerance of 1e-9 keeps e.g. ``s = 1/3`` from rounding ``3 * (1/3)`` up to 2.
    """
    _check_scale(stage_scale)
    return [max(1, math.ceil(stage_scale * 3**i * (1 - 1e-9))) for i in range(BURDA_STAGES)]


def schedule_epochs(schedule: str, stage_scale: float = 1.0) -> int | None:
    """Epochs a schedule spans (3280 for ``burda`` at scale 1); None for ``constant``."""
    _check_schedule(schedule)
    if schedule == "constant":
        return None
    return sum(burda_stage_epochs(stage_scale))


def learning_rate(lr: float, schedule: str, epoch: int, stage_scale: float = 1.0) -> float:
    r"""The learning rate of epoch ``epoch`` (1-based) under ``schedule`` from base rate ``lr``.

    ``burda``: :math:`\eta \cdot 10^{-i/7}` where stage :math:`i` holds the epoch.
    """
    _check_schedule(schedule)
    if not is_int(epoch) or epoch < 1:
        raise ValueError(f"epoch must be an int >= 1 (epochs count from 1), got {epoch!r}")
    if schedule == "constant":
        return lr
    end = 0
    for i, length in enumerate(burda_stage_epochs(stage_scale)):
        end += length
        if epoch <= end:
            return lr * 10 ** (-i / 7)
    return lr * 10 ** (-(BURDA_STAGES - 1) / 7)


def _check_schedule(schedule: str) -> None:
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
