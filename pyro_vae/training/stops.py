"""How a run stops early, and what it keeps: Ctrl-C, and a non-finite step.

- Ctrl-C. The first SIGINT asks the loop to stop after the current step
  (:func:`stop_on_ctrl_c` sets ``loop.stop_requested``, read on the host each step, no
  sync); :func:`interrupted` then writes a checkpoint of that exact mid-epoch state, so
  ``fit(..., resume=True)`` continues bit-identically, and returns the
  :class:`~pyro_vae.training.errors.TrainingInterrupted` to raise. A second Ctrl-C aborts at
  once, leaving the last checkpoint.
- A non-finite step. :func:`nonfinite_error` words the
  :class:`~pyro_vae.training.errors.NonFiniteError` for a
  :class:`~pyro_vae.training.errors.BadStepError`: where, what the replayed step showed
  (:class:`~pyro_vae.training.nonfinite.StepReport`), which checkpoint is intact, and what
  to change. Nothing is written, so the last checkpoint stays as it was.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro_vae.training.checkpoint import write_tensors
from pyro_vae.training.errors import BadStepError, NonFiniteError, TrainingInterrupted
from pyro_vae.training.nonfinite import StepReport

if TYPE_CHECKING:
    from pyro_vae.training.loop import Loop

__all__ = ["interrupted", "nonfinite_error", "stop_on_ctrl_c"]


@contextlib.contextmanager
def stop_on_ctrl_c(loop: Loop) -> Iterator[None]:
    """While training, the first Ctrl-C asks the loop to stop after its current step.

    Only in the main thread, only for a single process (under torchrun, ranks could see the
    flag at different steps; torchrun itself stops every rank on Ctrl-C, and the last
    epoch's checkpoint stays intact), and only when SIGINT has Python's default handler (a
    caller's own handler is left alone). The second Ctrl-C raises KeyboardInterrupt at once.
    """
    main = threading.current_thread() is threading.main_thread()
    default = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if loop.world.enabled or not main or not default:
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


def interrupted(loop: Loop, run_dir: Path | None) -> TrainingInterrupted:
    """Checkpoint a stopped partial epoch in ``run_dir``; the error that says how to go on."""
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
        f"state. Continue with fit(resume_config({str(run_dir)!r}), resume=True)."
    )


def nonfinite_error(
    loop: Loop, fault: BadStepError, report: StepReport, run_dir: Path | None
) -> NonFiniteError:
    """The error for ``fault``: where, the replayed step's ``report``, what is kept, advice."""
    tc = loop.tc
    where = f"epoch {fault.epoch}, step {fault.step} of {loop.steps_per_epoch}"
    if fault.skipped:
        head = (
            f"training stopped: {fault.skipped} steps were skipped for a non-finite loss or "
            f"gradient, more than TrainConfig(max_skipped_steps={tc.max_skipped_steps}) "
            f"allows; the first of this epoch was at {where}."
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
    if fault.skipped:  # TrainConfig(on_nan='skip') already: more bad steps than allowed
        advice = (
            "Raise TrainConfig.max_skipped_steps to allow more (fit(..., resume=True) may "
            "change it), lower TrainConfig.lr, or check the data and the model's components."
        )
    else:
        advice = (
            "Lower TrainConfig.lr, check the data and the model's components, or skip such "
            "steps with TrainConfig(on_nan='skip') (at most TrainConfig.max_skipped_steps of "
            "them)."
        )
    message = f"{head} {report.describe()} {keep} {advice}"
    return NonFiniteError(message, fault.epoch, fault.step, report)
