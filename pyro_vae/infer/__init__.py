"""Inference on any Pyro (model, guide) pair: the training objectives, the ELBO split into
reconstruction and KL, and the importance-weighted estimator of log p(x).

* :mod:`~pyro_vae.infer.sites`: the one rule that reads plates and sites from Pyro traces
  (the data plate, per-point log densities, latent, observed and enumerated sites);
  every estimator and diagnostic uses it.
* :mod:`~pyro_vae.infer.decomposition`: :func:`~pyro_vae.infer.decomposition.elbo_terms`.
* :mod:`~pyro_vae.infer.importance`: :func:`~pyro_vae.infer.importance.log_likelihood`
  and :func:`~pyro_vae.infer.importance.log_weights`.
* :mod:`~pyro_vae.infer.objectives`: the registry of training objectives and
  ``build_objective``; the classes live in :mod:`~pyro_vae.infer.base`,
  :mod:`~pyro_vae.infer.elbos`, :mod:`~pyro_vae.infer.bounds`,
  :mod:`~pyro_vae.infer.regularized` and :mod:`~pyro_vae.infer.enumerated` (``elbo-enum``:
  ``TraceEnum_ELBO``, the one objective that sums enumerated sites, with M2's classifier term).

Imports only the core (registry, checks), models and guides: never training, analysis or cli.
"""
