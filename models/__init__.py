"""The generative side of a VAE: priors p(z), likelihoods p(x|z) and the model program."""

from .likelihoods import LIKELIHOODS, Bernoulli, Likelihood, Normal, SupportError
from .model import ConditionalNormal, Model
from .priors import (
    PRIORS,
    FlowPrior,
    GaussianMixture,
    LearnedNormal,
    Prior,
    StandardNormal,
    VampPrior,
)

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "Bernoulli",
    "ConditionalNormal",
    "FlowPrior",
    "GaussianMixture",
    "LearnedNormal",
    "Likelihood",
    "Model",
    "Normal",
    "Prior",
    "StandardNormal",
    "SupportError",
    "VampPrior",
]
