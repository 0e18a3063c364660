"""A run on a table: the ``table`` likelihood built from the data set's schema.

A table (``Dataset.table``) is scored by the ``table`` likelihood, whose
columns come from its schema, with no binarization. :func:`for_table` settles that on the
run's config once the data are loaded, so ``fit(RunConfig(train=TrainConfig(dataset=
'table.csv')))`` needs no other setting, and ``config.json`` says what the run did.
"""

from __future__ import annotations

import dataclasses

from pyro_vae.config import RunConfig
from pyro_vae.data import DataError, Dataset
from pyro_vae.registry import parse_spec

__all__ = ["for_table"]

# the likelihood of a config nobody chose one for: read as "the table's own" for a table
_DEFAULT_LIKELIHOOD = "bernoulli"


def for_table(config: RunConfig, dataset: Dataset) -> RunConfig:
    """``config`` with the table likelihood of ``dataset``'s schema and ``binarize='none'``.

    The likelihood's own parameters (``table:counts=poisson``) are kept; the default
    likelihood (``bernoulli``) means the table's. Any other likelihood is refused: a
    table's encoded rows hold one-hot blocks and observed indicators that only the
    ``table`` likelihood reads. A config of an array or images comes back unchanged.
    """
    if dataset.table is None:
        return config
    spec = parse_spec(config.vae.likelihood)
    if spec.name not in ("table", _DEFAULT_LIKELIHOOD):
        raise DataError(
            f"data set {dataset.name!r} is a table (typed columns, missing cells), scored by "
            f"VAEConfig(likelihood='table'), but VAEConfig(likelihood={config.vae.likelihood!r})"
            " was given. Leave the likelihood out (or use table:counts=poisson)."
        )
    params = (
        ""
        if spec.name != "table"
        else ",".join(f"{k}={v}" for k, v in spec.params.items() if k != "columns")
    )
    likelihood = dataset.table.likelihood_spec(params)
    vae = dataclasses.replace(config.vae, likelihood=likelihood, data_shape=dataset.data_shape)
    train = dataclasses.replace(config.train, binarize="none")
    return RunConfig(vae=vae, train=train)
