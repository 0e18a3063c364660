"""The generative side of a VAE: priors p(z), likelihoods p(x|z) and the model program."""

from .likelihoods import LIKELIHOODS, Bernoulli, Likelihood, Normal, SupportError
from .model import Model
from .priors import PRIORS, Prior, StandardNormal

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "Bernoulli",
    "Likelihood",
    "Model",
    "Normal",
    "Prior",
    "StandardNormal",
    "SupportError",
]
