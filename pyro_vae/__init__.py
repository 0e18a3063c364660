"""pyro-vae: variational autoencoders written as Pyro programs.

The public API is listed in ``__all__``; everything else is an implementation detail.
"""

from pyro_vae import _compat
from pyro_vae.analysis.columns import reconstruction_per_column
from pyro_vae.analysis.evaluate import evaluate_run
from pyro_vae.analysis.impute import impute
from pyro_vae.compression import compress, decompress
from pyro_vae.config import ConfigError, RunConfig, TrainConfig, VAEConfig
from pyro_vae.data import DataError, Dataset, TableSchema, decode_table, load_dataset
from pyro_vae.infer.decomposition import ElboTerms, elbo_terms
from pyro_vae.infer.importance import log_likelihood, log_weights
from pyro_vae.plugins import PluginError, load_plugin
from pyro_vae.registry import Registry, SpecError
from pyro_vae.training.checkpoint import CheckpointError, load, save
from pyro_vae.training.fit import FitResult, TrainingError, fit
from pyro_vae.vae import VAE

__version__ = "0.1.0"

_compat.install()  # pyro_vae.train, pyro_vae.objectives, ...: the old flat paths

__all__ = [
    "VAE",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Dataset",
    "ElboTerms",
    "FitResult",
    "PluginError",
    "Registry",
    "RunConfig",
    "SpecError",
    "TableSchema",
    "TrainConfig",
    "TrainingError",
    "VAEConfig",
    "__version__",
    "compress",
    "decode_table",
    "decompress",
    "elbo_terms",
    "evaluate_run",
    "fit",
    "impute",
    "load",
    "load_dataset",
    "load_plugin",
    "log_likelihood",
    "log_weights",
    "reconstruction_per_column",
    "save",
]
