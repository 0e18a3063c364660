"""Likelihoods p(x|z): modules mapping the decoder's raw output to a distribution over x.

:mod:`.base` holds the interface, the registry and the Bernoulli and Normal likelihoods;
:mod:`.continuous` the likelihoods of real values and values in [0, 1]; :mod:`.discrete`
those of 8-bit images and counts; :mod:`.tabular` the ``table`` likelihood of typed columns
with missing cells. Importing this package registers every one of them.
"""

from .base import (
    BINS,
    LIKELIHOODS,
    Bernoulli,
    BernoulliLogits,
    Likelihood,
    Normal,
    SupportError,
)
from .continuous import (
    Beta,
    ContinuousBernoulliLikelihood,
    Laplace,
    NormalDecoderScale,
    NormalLearnedScale,
)
from .discrete import (
    Categorical256,
    DiscretizedLogisticLikelihood,
    NegativeBinomial,
    Poisson,
)
from .tabular import COLUMNS, TableDistribution, TableLikelihood

__all__ = [
    "BINS",
    "COLUMNS",
    "LIKELIHOODS",
    "Bernoulli",
    "BernoulliLogits",
    "Beta",
    "Categorical256",
    "ContinuousBernoulliLikelihood",
    "DiscretizedLogisticLikelihood",
    "Laplace",
    "Likelihood",
    "NegativeBinomial",
    "Normal",
    "NormalDecoderScale",
    "NormalLearnedScale",
    "Poisson",
    "SupportError",
    "TableDistribution",
    "TableLikelihood",
]
