"""Inference on any Pyro (model, guide) pair: the training objectives, the ELBO split into
reconstruction and KL, and the importance-weighted estimator of log p(x).

Imports only the core (registry, guides' posterior helpers): never training, analysis or cli.
"""
