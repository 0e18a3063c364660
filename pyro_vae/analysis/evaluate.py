r"""The evaluation of a trained run: what ``pyro-vae evaluate`` does, as one Python call.

:func:`evaluate_run` scores a run directory (or a :class:`~pyro_vae.FitResult`) on a split:

1. the ELBO and its terms, :math:`\mathrm{ELBO} = \mathbb{E}_q[\log p(x|z)] -
   \mathrm{KL}(q(z|x)\,\|\,p(z))`, averaged over the points (:func:`pyro_vae.elbo_terms`);
2. the importance-weighted bound with ``num_samples`` draws per point (Burda et al. 2015),
   whose negative is the NLL (:func:`pyro_vae.log_likelihood`);
3. the diagnostics of :func:`~pyro_vae.analysis.report.run_diagnostics`: active units, KL
   per coordinate, :math:`I_q(x; z)`, PSIS :math:`\hat k` and its interpretation, and on
   request the inference gaps and NUTS, with their figures;
4. for a table run, the reconstruction of each column
   (:func:`~pyro_vae.analysis.columns.reconstruction_per_column`).

With ``write``, ``RUN_DIR/eval.json`` is written after step 2 and again after each
diagnostic, so a failure or Ctrl-C later loses nothing already computed; the figures go to
``RUN_DIR/plots`` and NUTS's draws to ``RUN_DIR/mcmc.nc``. The returned dict is what
eval.json holds (its keys are listed in :mod:`pyro_vae.analysis.report`).

For a semi-supervised VAE (M2) the ELBO and NLL sum the class out exactly,
:math:`\log p(x) = \operatorname{logsumexp}_y [\log p(y) + \log p(x|y)]`, each
:math:`p(x|y)` by importance weighting over z; ``accuracy`` scores the classifier
:math:`q(y|x)` on the split's labels (``plots/confusion.png``), and the latent
diagnostics run on z.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyro_vae.analysis.classes import confusion_matrix, plot_confusion
from pyro_vae.analysis.columns import is_table_vae, reconstruction_per_column
from pyro_vae.analysis.gaps import check_inference_gaps
from pyro_vae.analysis.report import ArgumentError, check_settings, run_diagnostics
from pyro_vae.checks import is_int
from pyro_vae.config import (
    DEVICE_NAME,
    EvaluateConfig,
    TrainConfig,
    from_dict,
    resolve_binarize,
)
from pyro_vae.data import DataError, Dataset, evaluation_split, load_dataset
from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.infer.importance import PointEstimateError, log_likelihood
from pyro_vae.plugins import load_plugin
from pyro_vae.training.checkpoint import check_run_dir, load, load_config, write_json
from pyro_vae.training.fit import (
    FitResult,
    check_run_paths,
    resolve_device,
    split_labels,
)
from pyro_vae.training.lock import run_lock
from pyro_vae.training.summary import accuracy
from pyro_vae.vae import VAE

__all__ = ["ArgumentError", "evaluate_run", "subset"]

_DEFAULTS = EvaluateConfig()  # the one source of the defaults, shared with the command line
_SPLITS = ("test", "valid")


def subset(total: int, n: int, seed: int) -> torch.Tensor:
    """Indices of a seeded random subset of ``n`` of ``total`` rows (never just the first n)."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


@dataclass
class _Run:
    """What is scored: the VAE, its training settings, where it came from and writes to."""

    vae: VAE
    train: TrainConfig
    source: str  # for messages: the run directory, or "the FitResult"
    out: Path | None  # where eval.json, plots/ and mcmc.nc go; None: nothing is written
    device: torch.device


def evaluate_run(
    run: str | os.PathLike[str] | FitResult,
    *,
    dataset: str | Dataset | None = None,
    split: str = _DEFAULTS.split,
    num_samples: int = _DEFAULTS.num_samples,
    num_points: int | None = _DEFAULTS.num_points,
    seed: int = _DEFAULTS.seed,
    psis_samples: int = _DEFAULTS.psis_samples,
    gaps: int = _DEFAULTS.gaps,
    mcmc: int = _DEFAULTS.mcmc,
    mcmc_samples: int = _DEFAULTS.mcmc_samples,
    device: str = _DEFAULTS.device,
    plugins: Sequence[str | os.PathLike[str]] = (),
    progress: bool = True,
    write: bool = True,
    strict: bool = False,
) -> dict[str, Any]:
    """Score a trained run on a split, as ``pyro-vae evaluate`` does; return eval.json's dict.

    ``run`` is a run directory written by :func:`~pyro_vae.fit` (or ``pyro-vae train``),
    or the :class:`~pyro_vae.FitResult` itself: its VAE is scored where it is (``device``
    applies to a run directory only), and files are written only if it has a run
    directory. ``dataset`` (a name, a path or a :class:`~pyro_vae.Dataset`) replaces the
    run's data set, which it must match in shape. ``split`` is ``"test"`` or ``"valid"``
    (binarized with its fixed seed where the run binarizes); ``num_points`` scores a
    subset of that many points drawn with ``seed`` (default: every point), which also
    seeds the guide's noise. ``num_samples`` is k of the IW bound; ``psis_samples`` the
    draws per point for PSIS k̂; ``gaps`` and ``mcmc`` the numbers of points (of the
    subset) for the inference gaps and for NUTS, with ``mcmc_samples`` draws (and as many
    warm-up steps) per chain. ``plugins`` are files of the run's own components, imported
    first. ``progress`` shows the IW bound's progress bar.

    With ``write`` (and a run directory), eval.json is written before the diagnostics and
    after each one, and their figures go to ``RUN_DIR/plots``, under the run directory's
    lock (:func:`~pyro_vae.training.lock.run_lock`: another writer of the run makes this
    raise :class:`~pyro_vae.training.lock.RunLockedError` at once). With ``strict`` a failing
    diagnostic raises; otherwise its error is recorded under ``diagnostic_errors`` (name
    -> message) and the others still run. A point-mass (Delta) guide has no IW bound and
    no diagnostics: ``nll`` is None and ``diagnostics_skipped`` says why.

    Raises :class:`~pyro_vae.analysis.report.ArgumentError` (a ValueError whose message
    starts with the argument's name: ``num_points``, ``num_samples``, ``psis_samples``,
    ``gaps``, ``mcmc``, ``mcmc_samples``, ``split``, ``seed``, ``device``) before anything
    slow runs.
    """
    _check_arguments(split, num_samples, num_points, seed, mcmc_samples, device)
    for plugin in plugins:
        load_plugin(Path(plugin))
    with _writing(run, write):  # one writer of a run directory at a time
        target = _target(run, device, write)
        x, y, names, truth = _split_rows(target, dataset, split)
        n = x.shape[0] if num_points is None else num_points
        if not 0 < n <= x.shape[0]:
            raise ArgumentError("num_points", f"must be in 1..{x.shape[0]} for this split, got {n}")
        check_settings(psis_samples, gaps, mcmc, n)  # before the slow IW bound
        idx = subset(x.shape[0], n, seed)
        x = x[idx].to(target.device)
        labels = () if y is None else (y[idx].to(target.device),)
        target.vae.check_data(x)
        if gaps:  # a guide the gaps cannot use is refused now, not after the IW bound
            with contextlib.suppress(PointEstimateError):  # Delta: no diagnostics at all (below)
                check_inference_gaps(target.vae.guide, x[:1], *(lab[:1] for lab in labels))
        torch.manual_seed(seed)
        result, elbo, ll = _scores(target.vae, x, labels, num_samples, split, progress)
        plots_dir = None if target.out is None else target.out / "plots"
        if truth is not None:  # M2: its classifier q(y|x) against the split's labels
            result.update(_accuracy(target.vae, x, truth[idx], plots_dir))
        if names is not None:  # a table: eval.json's reconstruction_per_column
            result["reconstruction_per_column"] = reconstruction_per_column(target.vae, x, names)
        path = None if target.out is None else target.out / "eval.json"
        if path is not None:
            write_json(path, result)  # the ELBO and NLL are kept whatever the diagnostics do
        if ll is None:  # the diagnostics need a guide with a density
            result["diagnostics_skipped"] = "a Delta guide has no density"
        else:
            result.update(
                run_diagnostics(
                    target.vae,
                    x,
                    idx.tolist(),
                    elbo,
                    ll,
                    labels=labels[0] if labels else None,
                    psis_samples=psis_samples,
                    gaps=gaps,
                    mcmc=mcmc,
                    mcmc_samples=mcmc_samples,
                    plots_dir=plots_dir,
                    mcmc_path=None if target.out is None else target.out / "mcmc.nc",
                    save=None
                    if path is None
                    else lambda part: write_json(path, {**result, **part}),
                    strict=strict,
                )
            )
        if path is not None:
            write_json(path, result)
        return result


def _writing(
    run: str | os.PathLike[str] | FitResult, write: bool
) -> contextlib.AbstractContextManager[Any]:
    """The lock of the run directory that ``evaluate_run`` writes, if it writes one."""
    if not write:
        return contextlib.nullcontext()
    if isinstance(run, FitResult):
        return contextlib.nullcontext() if run.run_dir is None else run_lock(run.run_dir)
    if not isinstance(run, (str, os.PathLike)):
        return contextlib.nullcontext()  # _target says what run must be
    load_config(Path(run))  # a run, before its lock is taken
    return run_lock(Path(run))


def _check_arguments(
    split: str,
    num_samples: int,
    num_points: int | None,
    seed: int,
    mcmc_samples: int,
    device: str,
) -> None:
    """The arguments checked before anything is loaded (the others need the data)."""
    if not isinstance(device, str) or not DEVICE_NAME.fullmatch(device):
        raise ArgumentError(
            "device", f"must be auto, cpu, cuda or cuda:N (N the GPU's index), got {device!r}"
        )
    if split not in _SPLITS:
        raise ArgumentError("split", f"must be 'test' or 'valid', got {split!r}")
    if not is_int(num_samples) or num_samples < 1:
        raise ArgumentError("num_samples", f"must be a positive int, got {num_samples!r}")
    if num_points is not None and not is_int(num_points):
        raise ArgumentError("num_points", f"must be an int or None, got {num_points!r}")
    if not is_int(seed):
        raise ArgumentError("seed", f"must be an int, got {seed!r}")
    if not is_int(mcmc_samples) or mcmc_samples < 1:
        raise ArgumentError("mcmc_samples", f"must be a positive int, got {mcmc_samples!r}")


def _target(run: str | os.PathLike[str] | FitResult, device: str, write: bool) -> _Run:
    """The VAE to score and where its files go, checked before anything slow runs."""
    if isinstance(run, FitResult):
        out = run.run_dir if write else None
        if out is not None:
            check_run_paths(out)
        where = "the FitResult" if run.run_dir is None else repr(str(run.run_dir))
        home = next(run.vae.parameters()).device
        return _Run(run.vae, run.config.train, where, out, home)
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(
            f"run must be a run directory (str or path) or a FitResult, got {type(run).__name__}"
        )
    run_dir = Path(run)
    _, raw = load_config(run_dir)
    check_run_dir(run_dir)
    check_run_paths(run_dir)  # eval.json a file, plots a folder: before the slow part
    train = from_dict(TrainConfig, raw.get("train", {}), "config.json train")
    home = resolve_device(device)
    vae = load(run_dir, map_location=home)
    return _Run(vae, train, repr(str(run_dir)), run_dir if write else None, home)


def _split_rows(
    target: _Run, dataset: str | Dataset | None, split: str
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None, torch.Tensor | None]:
    """The split's rows as scored (binarized as the run was), the labels the model is given
    (a conditional VAE's), a table's column names (None for arrays and images), and the
    labels a semi-supervised VAE's classifier is scored on (else None)."""
    if not isinstance(dataset, Dataset):
        name = dataset or target.train.dataset
        dataset = load_dataset(name, progress=False, schema=target.train.schema)
    shape = target.vae.config.data_shape
    if dataset.data_shape != shape:
        raise DataError(
            f"data set {dataset.name!r} has items of shape {dataset.data_shape}, but the model "
            f"in {target.source} was trained on items of shape {shape} (data set "
            f"{target.train.dataset!r}). Evaluate it on data of that shape, e.g. "
            f"evaluate_run(..., dataset={target.train.dataset!r})."
        )
    binarize = resolve_binarize(target.train.binarize, target.vae.config.likelihood)
    names = dataset.table.names if dataset.table is not None and is_table_vae(target.vae) else None
    truth = dataset.labels(split) if target.vae.config.semi_supervised else None
    if target.vae.config.semi_supervised and truth is None:
        raise DataError(
            f"the run in {target.source} is a semi-supervised VAE, whose accuracy needs the "
            f"labels of the {split} split, but data set {dataset.name!r} has none"
        )
    x = evaluation_split(dataset, split, binarize)
    return x, split_labels(target.vae, dataset, split), names, truth


def _accuracy(
    vae: VAE, x: torch.Tensor, truth: torch.Tensor, plots_dir: Path | None
) -> dict[str, Any]:
    """eval.json's ``accuracy`` of q(y|x), and ``plots/confusion.png`` where there is a run."""
    acc, guess = accuracy(vae, x, truth)
    if plots_dir is not None:
        counts = confusion_matrix(truth, guess, vae.config.num_classes)
        plot_confusion(counts, plots_dir / "confusion.png")
    return {"accuracy": acc}


def _scores(
    vae: VAE,
    x: torch.Tensor,
    labels: tuple[torch.Tensor, ...],
    k: int,
    split: str,
    progress: bool,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]:
    """eval.json's ELBO, terms and NLL, with the per-point ELBO ``(N,)`` and log p(x) ``(N,)``.

    log p(x) is None for a guide without a density (Delta), which has no IW bound.
    """
    with torch.no_grad():
        chunks = zip(x.split(1000), *(lab.split(1000) for lab in labels), strict=True)
        terms = [elbo_terms(vae.model, vae.guide, *chunk) for chunk in chunks]
        try:
            ll = log_likelihood(vae.model, vae.guide, x, *labels, num_samples=k, progress=progress)
        except PointEstimateError:
            ll = None
    elbo = torch.cat([t["elbo"] for t in terms])  # (N,)
    result: dict[str, Any] = {
        "elbo": float(elbo.mean()),
        "reconstruction": float(torch.cat([t["reconstruction"] for t in terms]).mean()),
        "kl": float(torch.cat([t["kl"] for t in terms]).mean()),
        "nll": None if ll is None else -float(ll.mean()),  # null for a Delta guide
        "num_samples": k,
        "num_points": int(x.shape[0]),
        "split": split,
        "point_estimate": ll is None,  # a Delta guide: elbo reads log p(x|z*) + log p(z*)
    }
    return result, elbo, ll
