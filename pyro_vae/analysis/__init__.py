"""What a trained VAE gets wrong: latent statistics, PSIS, the inference gaps, MCMC, the
evaluation of a run, the comparison of runs, and their figures.
"""
