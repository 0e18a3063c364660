"""The diagnostics of ``pyro-vae evaluate``: what goes into eval.json beside the ELBO and NLL.

``eval.json`` keys added here (nats per data point unless said otherwise):

- ``active_units`` (int), ``active_unit_variances`` (Cov_x E_q[z_j] per unit);
- ``kl_per_dim`` (list, mean KL per latent coordinate; empty when the KL does not split over
  coordinates), ``kl_per_dim_method`` (``analytic``, ``monte-carlo`` or null),
  ``kl_per_dim_reason`` (why it is empty, when it is);
- ``mutual_information`` (I_q(x;z), null with ``mutual_information_reason`` when it cannot
  be estimated), ``mutual_information_points`` (N; the estimate is at most log N);
- ``psis_khat``: ``mean``, ``max``, ``frac_above_0.5``, ``frac_above_0.7``, ``num_samples``;
- ``worst_points``: the points with the largest k̂, worst first: ``index`` (row of the
  split), ``khat``, ``elbo``, ``log_px``;
- with ``--gaps N``: ``gaps`` (see :func:`pyro_vae.diagnostics.inference_gaps`);
- with ``--mcmc N``: ``mcmc``: ``points``, ``num_chains``, ``num_samples``,
  ``warmup_steps``, ``max_r_hat``, ``min_ess_bulk`` and ``moments`` (NUTS mean/sd with
  MCSE, ESS and r̂ beside q's mean/sd, per point and coordinate).

Plots go to ``RUN_DIR/plots``: ``psis_khat.png`` and, with ``--mcmc``,
``posterior_pairs_<index>.png`` per point (the 4 coordinates where q is narrowest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyro_vae import diagnostic_plots, diagnostics
from pyro_vae.vae import VAE

__all__ = ["MIN_PSIS_SAMPLES", "check_settings", "diagnose"]

MIN_PSIS_SAMPLES = 100  # draws per point below which the Pareto tail fit is not trusted


def check_settings(psis_samples: int, gaps: int, mcmc: int, num_points: int) -> None:
    """Refuse diagnostic settings that cannot work, before anything slow runs."""
    for name, value in (("psis_samples", psis_samples), ("gaps", gaps), ("mcmc", mcmc)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if psis_samples < MIN_PSIS_SAMPLES:
        raise ValueError(
            f"--psis-samples must be at least {MIN_PSIS_SAMPLES}, got {psis_samples}: PSIS fits "
            "a Pareto tail to the largest 3*sqrt(S) weights, and with fewer draws k-hat is "
            "inf or noise, which would blame the guide for too few draws (Vehtari et al. 2024)"
        )
    if max(gaps, mcmc) > num_points:
        raise ValueError(f"--gaps and --mcmc can use at most the {num_points} evaluated points")


def diagnose(
    vae: VAE,
    x: torch.Tensor,
    point_ids: Sequence[int],
    elbo: torch.Tensor,
    log_px: torch.Tensor,
    *,
    psis_samples: int = 1000,
    num_worst: int = 10,
    gaps: int = 0,
    mcmc: int = 0,
    mcmc_samples: int = 200,
    plots_dir: Path | None = None,
) -> dict[str, Any]:
    """Diagnostics of ``vae`` on the rows ``x`` (row i is point ``point_ids[i]`` of the split).

    ``elbo`` and ``log_px`` are the per-point figures already computed; ``gaps`` and
    ``mcmc`` are the numbers of points (the first rows of ``x``) for the inference gaps and
    for NUTS. Returns the eval.json entries listed in the module docstring.
    """
    check_settings(psis_samples, gaps, mcmc, x.shape[0])
    model, guide = vae.model, vae.guide
    out: dict[str, Any] = {}
    units = diagnostics.active_units(guide, x)
    out.update(active_units=units.count, active_unit_variances=units.variances)
    kl = diagnostics.kl_per_dim(model, guide, x)
    out.update(kl_per_dim=kl.values, kl_per_dim_method=kl.method)
    if kl.reason:
        out["kl_per_dim_reason"] = kl.reason
    mi = diagnostics.mutual_information(guide, x)
    out.update(mutual_information=mi.value, mutual_information_points=mi.num_points)
    if mi.reason:
        out["mutual_information_reason"] = mi.reason
    khat = diagnostics.psis_khat(model, guide, x, num_samples=psis_samples)
    out["psis_khat"] = {**diagnostics.khat_summary(khat), "num_samples": psis_samples}
    worst = diagnostics.worst_points(khat, num_worst, elbo=elbo.tolist(), log_px=log_px.tolist())
    rows = [int(r["index"]) for r in worst]
    out["worst_points"] = [{**r, "index": int(point_ids[r["index"]])} for r in worst]
    if plots_dir is not None:
        diagnostic_plots.psis_khat(
            khat,
            plots_dir / "psis_khat.png",
            originals=x[rows],
            recons=vae.reconstruct(x[rows]),
            worst=rows,
            labels=[int(point_ids[r]) for r in rows],
        )
    if gaps:
        out["gaps"] = diagnostics.inference_gaps(model, guide, x[:gaps])
    if mcmc:
        out["mcmc"] = _mcmc(vae, x[:mcmc], list(point_ids[:mcmc]), mcmc_samples, plots_dir)
    return out


def _mcmc(
    vae: VAE, x: torch.Tensor, ids: list[int], num_samples: int, plots_dir: Path | None
) -> dict[str, Any]:
    chains = 2
    nuts = diagnostics.nuts_posterior(
        vae.model,
        x,
        num_samples=num_samples,
        warmup_steps=num_samples,
        num_chains=chains,
        point_ids=ids,
    )
    report = diagnostics.compare_posteriors(nuts, vae.guide, x)
    if plots_dir is not None:
        q = diagnostics.posterior_samples(vae.guide, x, num_samples=num_samples, point_ids=ids)
        for i, point in enumerate(ids):
            a = nuts.posterior["z"].isel(point=i).stack(s=("chain", "draw")).values.T  # (S, L)
            b = q.posterior["z"].isel(point=i).stack(s=("chain", "draw")).values.T  # (S, L)
            dims = np.argsort(np.asarray(b).std(0), kind="stable")[:4]  # q's most informative
            diagnostic_plots.posterior_pairs(
                np.asarray(a)[:, dims],
                np.asarray(b)[:, dims],
                plots_dir / f"posterior_pairs_{point}.png",
                title=f"point {point}: NUTS p(z|x) and q(z|x), q's 4 narrowest coordinates",
                names=[f"z[{j}]" for j in dims.tolist()],
            )
    return {
        "points": ids,
        "num_chains": chains,
        "num_samples": num_samples,
        "warmup_steps": num_samples,
        **report,
    }
