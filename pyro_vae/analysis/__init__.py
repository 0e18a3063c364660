"""What a trained VAE gets wrong: latent statistics, PSIS, the inference gaps, MCMC, the
evaluation of a run, the comparison of runs, and their figures.

- :mod:`~pyro_vae.analysis.latent`: KL per coordinate, active units, I(x; z)
  (:mod:`~pyro_vae.analysis.information`);
- :mod:`~pyro_vae.analysis.psis`: Pareto k̂ of the importance weights, and what it means;
- :mod:`~pyro_vae.analysis.gaps`: the approximation and amortization gaps (the per-point
  guide they fit: :mod:`~pyro_vae.analysis.localguide`);
- :mod:`~pyro_vae.analysis.mcmc`: NUTS on the exact posterior, beside the guide;
- :mod:`~pyro_vae.analysis.diagnostics`: all of the above under one name;
  :mod:`~pyro_vae.analysis.common`: what they share;
- :mod:`~pyro_vae.analysis.report`: the diagnostics of an evaluation, for eval.json;
- :mod:`~pyro_vae.analysis.evaluate`: :func:`~pyro_vae.analysis.evaluate.evaluate_run`,
  what ``pyro-vae evaluate`` does;
- :mod:`~pyro_vae.analysis.compare`: objectives compared over seeds;
- :mod:`~pyro_vae.analysis.plots`: a run's plots; :mod:`~pyro_vae.analysis.figures`: the
  diagnostics' figures; :mod:`~pyro_vae.analysis.drawing`: how both are drawn.
"""
