"""The diagnostics of an evaluation: what goes into eval.json beside the ELBO and NLL.

:func:`run_diagnostics` runs them for :func:`pyro_vae.analysis.evaluate.evaluate_run` (and so
for ``pyro-vae evaluate``), one after another, saving after each.

``eval.json`` keys added here (nats per data point unless said otherwise):

- ``active_units`` (int), ``active_unit_variances`` (Cov_x E_q[z_j] per unit);
  ``latent_discrete_sites``, only when the guide has discrete latent sites (a class y):
  they are left out of the latent statistics, which are about the continuous z;
- ``kl_per_dim`` (list, mean KL per latent coordinate; empty when the KL does not split over
  coordinates), ``kl_per_dim_method`` (``analytic``, ``monte-carlo`` or null),
  ``kl_per_dim_sites`` (the latent site of each entry: ``z``, or ``z1``... ``z2``... in a
  hierarchy), ``kl_per_dim_marginal`` (true for a full or low-rank guide: each entry is
  the KL of the coordinate's marginal q(z_j|x), and their sum is below the KL),
  ``kl_per_dim_reason`` (why it is empty, when it is);
- ``mutual_information`` (I_q(x;z), null with ``mutual_information_reason`` when it cannot
  be estimated), ``mutual_information_points`` (N; the estimate is at most log N);
- ``psis_khat``: ``mean``, ``max``, ``frac_above_0.5``, ``frac_above_0.7``, ``num_samples``;
- ``psis_interpretation``: one sentence on what those figures mean for the IW NLL, and
  what to do about it (:func:`pyro_vae.analysis.psis.interpret_khat`);
- ``worst_points``: the points with the largest k̂, worst first: ``index`` (row of the
  split), ``khat``, ``elbo``, ``log_px``;
- with ``gaps=N``: ``gaps`` (see :func:`pyro_vae.analysis.gaps.inference_gaps`);
- with ``mcmc=N``: ``mcmc``: ``points``, ``num_chains``, ``num_samples``,
  ``warmup_steps``, ``inference_data`` (the file name of the NUTS draws in the run
  directory, ``mcmc.nc``), ``max_r_hat``, ``min_ess_bulk`` and ``moments`` (NUTS mean/sd
  with MCSE, ESS and r̂ beside q's mean/sd, per latent site, point and coordinate);
- ``diagnostic_errors`` (name -> message), only when a diagnostic failed.

Plots go to ``RUN_DIR/plots``: ``psis_khat.png`` and, with ``mcmc=N``,
``posterior_pairs_<index>.png`` per point (the 4 coordinates where q is narrowest, over
every latent site).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae.analysis import diagnostics, figures
from pyro_vae.checks import is_int
from pyro_vae.config import ConfigError
from pyro_vae.vae import VAE

__all__ = ["MIN_PSIS_SAMPLES", "ArgumentError", "check_settings", "run_diagnostics"]

MIN_PSIS_SAMPLES = 100  # draws per point below which the Pareto tail fit is not trusted


class ArgumentError(ConfigError):
    """An argument of an evaluation that cannot be used; the message starts with its name.

    ``field`` (and ``argument``) is that name: ``num_points``, ``psis_samples``, ..., each
    a field of :class:`~pyro_vae.config.EvaluateConfig`, so a caller that took the value
    under another name (a command-line flag) can say so.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument} {message}", field=argument)
        self.argument = argument


def check_settings(psis_samples: int, gaps: int, mcmc: int, num_points: int) -> None:
    """Refuse diagnostic settings that cannot work, before anything slow runs.

    Raises :class:`ArgumentError` naming ``psis_samples``, ``gaps`` or ``mcmc``.
    """
    for name, value in (("psis_samples", psis_samples), ("gaps", gaps), ("mcmc", mcmc)):
        if not is_int(value) or value < 0:
            raise ArgumentError(name, f"must be a non-negative int, got {value!r}")
    if psis_samples < MIN_PSIS_SAMPLES:
        raise ArgumentError(
            "psis_samples",
            f"must be at least {MIN_PSIS_SAMPLES}, got {psis_samples}: PSIS fits a Pareto "
            "tail to the largest 3*sqrt(S) weights, and with fewer draws k-hat is inf or "
            "noise, which would blame the guide for too few draws (Vehtari et al. 2024)",
        )
    for name, value in (("gaps", gaps), ("mcmc", mcmc)):
        if value > num_points:
            raise ArgumentError(
                name, f"can use at most the {num_points} evaluated points, got {value}"
            )


def run_diagnostics(
    vae: VAE,
    x: torch.Tensor,
    point_ids: Sequence[int],
    elbo: torch.Tensor,
    log_px: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    psis_samples: int = 1000,
    num_worst: int = 10,
    gaps: int = 0,
    mcmc: int = 0,
    mcmc_samples: int = 200,
    plots_dir: Path | None = None,
    mcmc_path: Path | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Diagnostics of ``vae`` on the rows ``x`` (row i is point ``point_ids[i]`` of the split).

    ``elbo`` and ``log_px`` are the per-point figures already computed; ``labels`` are the
    rows' class labels for a conditional VAE (passed to the model and guide as ``y``);
    ``gaps`` and ``mcmc`` are the numbers of points (the first rows of ``x``) for the
    inference gaps and for NUTS, whose ``InferenceData`` goes to ``mcmc_path`` (netCDF).
    Returns the eval.json entries listed in the module docstring. Each diagnostic runs in
    turn and ``save`` gets everything so far after each one, so a later failure or Ctrl-C
    loses nothing already computed. With ``strict=False`` a diagnostic that raises is
    recorded in ``diagnostic_errors`` (name -> message) and the others still run.
    """
    check_settings(psis_samples, gaps, mcmc, x.shape[0])
    args = () if labels is None else (labels,)
    if gaps:  # refused before any slow work if the per-point guide cannot be built
        diagnostics.check_inference_gaps(vae.guide, x[:1], *_head(args, 1))
    data = _Data(vae, x, args, list(point_ids))
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("active_units", lambda: _active_units(data)),
        ("kl_per_dim", lambda: _kl_per_dim(data)),
        ("mutual_information", lambda: _mutual_information(data)),
        ("psis_khat", lambda: _psis(data, elbo, log_px, psis_samples, num_worst, plots_dir)),
    ]
    if gaps:
        steps.append(("gaps", lambda: _gaps(data, gaps)))
    if mcmc:
        steps.append(("mcmc", lambda: _mcmc(data, mcmc, mcmc_samples, plots_dir, mcmc_path)))
    out: dict[str, Any] = {}
    for name, step in steps:
        try:
            out.update(step())
        except Exception as error:
            if strict:
                raise
            out.setdefault("diagnostic_errors", {})[name] = f"{type(error).__name__}: {error}"
        if save is not None:
            save(out)
    return out


@dataclass
class _Data:
    """The VAE and the evaluated rows, with the per-row model arguments (labels) if any."""

    vae: VAE
    x: torch.Tensor
    args: tuple[torch.Tensor, ...]
    ids: list[int]


def _head(args: tuple[torch.Tensor, ...], n: int) -> tuple[torch.Tensor, ...]:
    return tuple(a[:n] for a in args)


def _active_units(d: _Data) -> dict[str, Any]:
    units = diagnostics.active_units(d.vae.guide, d.x, *d.args)
    out = {"active_units": units.count, "active_unit_variances": units.variances}
    if units.discrete:  # a class y: not a unit; the latent statistics are about z
        out["latent_discrete_sites"] = units.discrete
    return out


def _kl_per_dim(d: _Data) -> dict[str, Any]:
    kl = diagnostics.kl_per_dim(d.vae.model, d.vae.guide, d.x, *d.args)
    out: dict[str, Any] = {
        "kl_per_dim": kl.values,
        "kl_per_dim_method": kl.method,
        "kl_per_dim_sites": kl.site_of,
        "kl_per_dim_marginal": kl.marginal,
    }
    if kl.reason:
        out["kl_per_dim_reason"] = kl.reason
    return out


def _mutual_information(d: _Data) -> dict[str, Any]:
    mi = diagnostics.mutual_information(d.vae.guide, d.x, *d.args)
    out: dict[str, Any] = {
        "mutual_information": mi.value,
        "mutual_information_points": mi.num_points,
    }
    if mi.reason:
        out["mutual_information_reason"] = mi.reason
    return out


def _psis(
    d: _Data,
    elbo: torch.Tensor,
    log_px: torch.Tensor,
    samples: int,
    num_worst: int,
    plots_dir: Path | None,
) -> dict[str, Any]:
    khat = diagnostics.psis_khat(d.vae.model, d.vae.guide, d.x, *d.args, num_samples=samples)
    worst = diagnostics.worst_points(khat, num_worst, elbo=elbo.tolist(), log_px=log_px.tolist())
    rows = [int(r["index"]) for r in worst]
    if plots_dir is not None:
        labels = [a[rows] for a in d.args]
        figures.plot_psis_khat(
            khat,
            plots_dir / "psis_khat.png",
            originals=d.x[rows],
            recons=d.vae.reconstruct(d.x[rows], *labels),
            worst=rows,
            labels=[d.ids[r] for r in rows],
            point_ids=d.ids,
        )
    summary = diagnostics.khat_summary(khat)
    return {
        "psis_khat": {**summary, "num_samples": samples},
        "psis_interpretation": diagnostics.interpret_khat(summary),
        "worst_points": [{**r, "index": d.ids[r["index"]]} for r in worst],
    }


def _gaps(d: _Data, n: int) -> dict[str, Any]:
    return {
        "gaps": diagnostics.inference_gaps(d.vae.model, d.vae.guide, d.x[:n], *_head(d.args, n))
    }


def _mcmc(
    d: _Data, n: int, num_samples: int, plots_dir: Path | None, path: Path | None
) -> dict[str, Any]:
    chains = 2
    x, args, ids = d.x[:n], _head(d.args, n), d.ids[:n]
    nuts = diagnostics.nuts_posterior(
        d.vae.model,
        x,
        *args,
        num_samples=num_samples,
        warmup_steps=num_samples,
        num_chains=chains,
        point_ids=ids,
    )
    if path is not None:
        _write_netcdf(nuts, path)
    report = diagnostics.compare_posteriors(nuts, d.vae.guide, x, *args)
    if plots_dir is not None:
        q = diagnostics.posterior_samples(
            d.vae.guide, x, *args, num_samples=num_samples, point_ids=ids
        )
        for i, point in enumerate(ids):
            a, names = _point_draws(nuts, i)  # (S, units) over every latent site
            b, _ = _point_draws(q, i, names=list(nuts.posterior.data_vars))
            dims = np.argsort(b.std(0), kind="stable")[:4]  # q's most informative
            figures.plot_posterior_pairs(
                a[:, dims],
                b[:, dims],
                plots_dir / f"posterior_pairs_{point}.png",
                title=f"point {point}: NUTS p(z|x) and q(z|x), q's 4 narrowest coordinates",
                names=[names[j] for j in dims.tolist()],
            )
    return {
        "mcmc": {
            "points": ids,
            "num_chains": chains,
            "num_samples": num_samples,
            "warmup_steps": num_samples,
            **({"inference_data": path.name} if path is not None else {}),
            **report,
        }
    }


def _point_draws(
    idata: Any, i: int, names: list[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Draws of point ``i`` of every latent site, side by side: ``(S, units)`` and labels."""
    columns, labels = [], []
    for site in names or list(idata.posterior.data_vars):
        v = idata.posterior[site].isel(point=i).stack(s=("chain", "draw")).values.T  # (S, L)
        v = np.asarray(v).reshape(v.shape[0], -1)
        columns.append(v)
        labels += [f"{site}[{j}]" for j in range(v.shape[1])]
    return np.concatenate(columns, axis=1), labels


def _write_netcdf(idata: Any, path: Path) -> None:
    """``idata.to_netcdf`` through a temporary file in the same folder, then a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        idata.to_netcdf(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


diagnose = run_diagnostics  # its first name, which a reader took for the NaN-step report's
