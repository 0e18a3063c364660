"""How a run stops early (pyro_vae.training.stops), and what its messages say.

The library speaks Python: its messages name config fields (``TrainConfig.lr``,
``TrainConfig(on_nan='skip')``) and ``fit(..., resume=True)``, which the CLI turns into the
flags its user typed.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyro_vae.training.errors import BadStepError
from pyro_vae.training.nonfinite import StepReport
from pyro_vae.training.runstate import Partial, Position
from pyro_vae.training.stops import interrupted, nonfinite_error


def _loop(partial: Partial | None = None) -> Any:
    """What the messages read of a loop."""
    position = Position(epochs_done=1, partial=partial)
    tc = SimpleNamespace(max_skipped_steps=2)
    return SimpleNamespace(position=position, steps_per_epoch=13, tc=tc, checkpoint_label="x")


REPORT = StepReport(False, False, term="reconstruction", site="x", stage="value", detail="NaN")


def test_a_stop_at_the_first_bad_step_advises_skipping_in_python_terms() -> None:
    error = nonfinite_error(_loop(), BadStepError(2, 6), REPORT, None)
    message = str(error)
    assert (error.epoch, error.step, error.diagnosis) == (2, 6, REPORT)
    assert "non-finite at epoch 2, step 6 of 13" in message
    assert "Nothing was written (write=False)." in message
    assert "TrainConfig(on_nan='skip')" in message and "Lower TrainConfig.lr" in message
    assert "--" not in message


def test_too_many_skipped_steps_advise_raising_the_limit(tmp_path: Path) -> None:
    message = str(nonfinite_error(_loop(), BadStepError(2, 6, skipped=3), REPORT, tmp_path))
    assert "3 steps were skipped" in message
    assert "more than TrainConfig(max_skipped_steps=2) allows" in message
    assert "Raise TrainConfig.max_skipped_steps to allow more" in message
    assert "on_nan='skip'" not in message and "(x), is intact" in message


def test_an_interrupted_run_says_how_to_continue_in_python(tmp_path: Path) -> None:
    message = str(interrupted(_loop(), None))
    assert message == "interrupted after epoch 1; nothing was written (write=False)."
    message = str(interrupted(_loop(), tmp_path))  # after an epoch: its checkpoint is there
    assert message.startswith("interrupted after epoch 1; ")
    assert message.endswith(f"Continue with fit(resume_config({str(tmp_path)!r}), resume=True).")
