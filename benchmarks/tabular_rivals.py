r"""The other synthesizers of ``python -m benchmarks.tabular``: TVAE (Xu et al. 2019, from
``ctgan``), timed epoch by epoch, and SDV's Gaussian copula.

TVAE's wall time splits into a setup, :math:`t_0` (its ``DataTransformer``: a Bayesian
Gaussian mixture per numeric column, fit and applied, then the networks), and the epochs,
:math:`t_1, \dots, t_E`. :class:`EpochClock` stamps the start of each epoch by standing in
for the ``tqdm`` iterator that ``TVAE.fit`` runs its epochs through
(``ctgan.synthesizers.tvae.tqdm``).

TVAE at equal wall time, the decision: ``TVAE.fit`` rebuilds its transformer and both
networks on every call, so a loop of one-epoch ``fit`` calls cannot continue a run. A
prediction from the equal-epoch run, :math:`E_T = \max(1, \lfloor (T - t_0) / \bar t
\rfloor)` with :math:`\bar t` its mean epoch, undershoots: the first fit in a process pays
one-time costs (in the smoke run, 9 predicted epochs took 0.67 s of a 2.87 s budget). So
:func:`train_tvae_for` gives the clock a deadline instead: TVAE gets a budget of
:math:`T` seconds (pyro-vae's whole ``fit`` on that table and seed, measured), and an
epoch starts only while the time spent so far, setup included, plus the mean epoch so far
stays within :math:`T` (the first epoch always runs). The epochs it reached are reported
with its own wall time. If a later ctgan drops the ``tqdm`` name, there is no clock: the
whole fit counts as epochs and :func:`equal_time_epochs` predicts :math:`E_T` from the
equal-epoch run (with :math:`t_0 = 0`, fewer epochs, never more).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import torch

__all__ = [
    "EpochClock",
    "TvaeFit",
    "batch_size",
    "clock_available",
    "equal_time_epochs",
    "sample_copula",
    "train_copula",
    "train_tvae",
    "train_tvae_for",
]

BATCH = 500  # TVAE's batch size
DISCRETE = ("categorical", "binary")
MAX_EPOCHS = 1_000_000  # the cap of a TVAE run that the clock stops at its budget


def batch_size(rows: int) -> int:
    """The batch that both VAEs train with on ``rows`` train rows: TVAE's default 500, or an
    eighth of the rows (rounded down to even, at least 16) where that is smaller.

    The decision: at 500, the 275 train rows of penguins are one step per epoch, so 50
    epochs are 50 Adam steps, and both VAEs stop long before they fit (pyro-vae's TSTR
    was 0.58 against 0.98 on real rows). Eight steps per epoch at the least gives either
    method a fair number of steps; TVAE gets the same batch, so it is not left at a batch
    larger than the table. Diamonds (4,000 train rows and more) keeps 500."""
    return min(BATCH, max(16, rows // 16 * 2))


@dataclass
class TvaeFit:
    """A fitted ``ctgan.TVAE`` and its clock: the whole ``fit`` (``seconds``), the part
    before the first epoch (``setup``) and each epoch (``epochs``), in seconds."""

    model: Any
    seconds: float
    setup: float
    epochs: list[float]

    @property
    def per_epoch(self) -> float:
        """The mean epoch, :math:`\\bar t`."""
        return float(np.mean(self.epochs))


class EpochClock:
    """A stand-in for ``tqdm(iterable, **options)`` that stamps the start of each item, and
    with a ``budget`` (seconds since :meth:`start`) stops before an item predicted to end
    past it: after the first, one starts only if the time so far plus the mean so far fits.
    """

    def __init__(self, budget: float | None = None) -> None:
        self.budget = budget
        self.begin = time.perf_counter()
        self.stamps: list[float] = []

    def start(self) -> None:
        """Start the clock (the fit begins)."""
        self.begin = time.perf_counter()

    def __call__(self, iterable: Iterable[Any], *_args: Any, **_options: Any) -> Iterator[Any]:
        for item in iterable:
            now = time.perf_counter()
            if self.budget is not None and self.stamps:
                mean = (now - self.stamps[0]) / len(self.stamps)
                if now - self.begin + mean > self.budget:
                    return
            self.stamps.append(now)
            yield item


def train_tvae(
    train: pd.DataFrame,
    kinds: dict[str, str],
    epochs: int,
    seed: int,
    budget: float | None = None,
) -> TvaeFit:
    """``ctgan.TVAE`` with its defaults (widths 128-128, latent 128) and
    :func:`batch_size` of the train rows for ``epochs`` epochs on the complete train rows
    (TVAE cannot read missing cells), timed per epoch; with a ``budget`` in seconds,
    ``epochs`` is a cap and the clock stops it at the budget."""
    from ctgan import TVAE
    from ctgan.synthesizers import tvae as module

    torch.manual_seed(seed)
    np.random.seed(seed)
    complete = train.dropna().reset_index(drop=True)
    discrete = [c for c, k in kinds.items() if k in DISCRETE]
    model = TVAE(epochs=epochs, batch_size=batch_size(len(train)))
    clock = EpochClock(budget)
    patch = (
        mock.patch.object(module, "tqdm", clock)
        if hasattr(module, "tqdm")
        else contextlib.nullcontext()
    )
    with patch:
        clock.start()
        model.fit(complete, discrete_columns=discrete)
        end = time.perf_counter()
    seconds, stamps = end - clock.begin, clock.stamps
    if not stamps:  # no clock: the fit counts as epochs, with no setup
        return TvaeFit(model, seconds, 0.0, [seconds / epochs] * epochs)
    return TvaeFit(model, seconds, stamps[0] - clock.begin, np.diff([*stamps, end]).tolist())


def clock_available() -> bool:
    """Whether :class:`EpochClock` can stand in for ctgan's ``tqdm`` (see the module)."""
    from ctgan.synthesizers import tvae as module

    return hasattr(module, "tqdm")


def equal_time_epochs(fit: TvaeFit, budget: float) -> int:
    """TVAE's epochs in ``budget`` seconds as predicted from ``fit``: :math:`\\max(1,
    \\lfloor (T - t_0)/\\bar t \\rfloor)` (the fallback without a clock)."""
    return max(1, int((budget - fit.setup) // fit.per_epoch))


def train_tvae_for(
    train: pd.DataFrame, kinds: dict[str, str], seed: int, budget: float, measured: TvaeFit
) -> TvaeFit:
    """TVAE for as many epochs as fit in ``budget`` seconds (see the module): stopped by
    the clock, or without one for the epochs predicted from the ``measured`` run."""
    if clock_available():
        return train_tvae(train, kinds, MAX_EPOCHS, seed, budget)
    return train_tvae(train, kinds, equal_time_epochs(measured, budget), seed)


def train_copula(train: pd.DataFrame, seed: int) -> tuple[Any, float]:
    """SDV's ``GaussianCopulaSynthesizer`` (SDV 2's API) with its defaults, on the train
    rows as they are (it models missing cells itself) and the metadata SDV detects from
    them (no keys); the model and its fit's seconds."""
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SDV's advice to save the detected metadata as JSON
        start = time.perf_counter()
        metadata = Metadata.detect_from_dataframes({"table": train}, infer_keys=None)
        model = GaussianCopulaSynthesizer(metadata)
        model.fit({"table": train})
        return model, time.perf_counter() - start


def sample_copula(model: Any, rows: int) -> pd.DataFrame:
    """``rows`` synthetic rows of a fitted Gaussian copula."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.sample(rows)
    return out["table"] if isinstance(out, dict) else out
