r"""The likelihood of a table with typed columns and missing cells.

A table row is encoded (:mod:`pyro_vae.data.tables`) as value blocks :math:`v_1..v_C` and
observed indicators :math:`o_1..o_C`. The ``table`` likelihood gives each column its own
part, all read from one decoder output, and scores only the observed cells:

.. math::
    \log p(x \mid z) = \sum_{j=1}^{C} o_j \, \log p_j(v_j \mid z).

A missing cell (:math:`o_j = 0`) contributes nothing, as under ``poutine.mask``; the mask
rides in the observation itself, so the observed site stays the one site ``"x"`` that every
objective, the ELBO split and the importance-weighted bound read, and every batch carries
its own mask. The indicators are not modelled (missing at random): a draw has every cell
observed. The encoder reads the zero-filled values and the indicators, as in MIWAE (Mattei
& Frellsen 2019).

The parts (registry :data:`COLUMNS`) score the encoded values: a real column's
standardized value, a positive column's standardized log (add :math:`-\log s - \log x` per
cell for the density of the raw value, as the parts' docstrings say), a count, a 0/1, a
one-hot row.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn
from torch.nn import functional as F

from pyro_vae.registry import Registry, SpecError

from .base import LIKELIHOODS, Likelihood, SupportError, _LearnedScale, _positive

__all__ = [
    "COLUMNS",
    "BinaryColumn",
    "CategoricalColumn",
    "ColumnPart",
    "NegativeBinomialColumn",
    "PoissonColumn",
    "PositiveColumn",
    "RealColumn",
    "TableDistribution",
    "TableLikelihood",
]


class ColumnPart(nn.Module):
    """One column's :math:`p_j(v_j|z)` from its ``num_params`` decoder outputs.

    ``raw`` is ``(..., num_params)`` and a value ``(..., width)``; ``log_prob`` gives
    ``(...)``.
    """

    num_params: int = 1
    width: int = 1

    def log_prob(self, raw: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def sample(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover


COLUMNS: Registry[ColumnPart] = Registry("column")


@COLUMNS.register("real")
class RealColumn(ColumnPart):
    r"""Normal with a learned scale, :math:`p(v|z) = \mathcal{N}(v; \mu(z), \sigma^2)`.

    :math:`v = (x - m)/s` is the standardized value, :math:`\sigma = \mathrm{softplus}(\rho)
    + \sigma_{\min}` one learned scalar per column (TVAE's choice too, Xu et al. 2019). In
    the raw unit, :math:`x \sim \mathcal{N}(m + s\mu, (s\sigma)^2)`.
    """

    def __init__(self, *, min_scale: float = 1e-2) -> None:
        super().__init__()
        self.scale = _LearnedScale(max(1.0, 2 * min_scale), min_scale)

    def dist(self, raw: torch.Tensor) -> dist.Normal:
        return dist.Normal(raw[..., 0], self.scale())

    def log_prob(self, raw: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return self.dist(raw).log_prob(value[..., 0])

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return raw[..., :1]

    def sample(self, raw: torch.Tensor) -> torch.Tensor:
        return self.dist(raw).sample()[..., None]


@COLUMNS.register("positive")
class PositiveColumn(RealColumn):
    r"""Log-normal: a Normal with a learned scale on the standardized log, :math:`v = (\log x
    - m)/s`.

    :math:`p(v|z) = \mathcal{N}(v; \mu(z), \sigma^2)`, so in the raw unit
    :math:`p(x|z) = \mathrm{LogNormal}(x; m + s\mu, s\sigma) = p(v|z) / (s\,x)`.
    """


@COLUMNS.register("count")
class NegativeBinomialColumn(ColumnPart):
    r"""Negative binomial, :math:`p(x|z) = \frac{\Gamma(x + r)}{x!\,\Gamma(r)}
    \big(\frac{r}{r + m}\big)^{r} \big(\frac{m}{r + m}\big)^{x}`.

    Mean :math:`m = \mathrm{softplus}(\cdot) + 10^{-6}` and total count :math:`r =
    \mathrm{softplus}(\cdot) + 10^{-3}` from two decoder outputs (scipy's ``nbinom(n=r,
    p=r/(r+m))``); scVI's form, Lopez et al. (2018).
    """

    num_params = 2

    def dist(self, raw: torch.Tensor) -> dist.NegativeBinomial:
        mean = F.softplus(raw[..., 0]) + 1e-6
        total = F.softplus(raw[..., 1]) + 1e-3
        return dist.NegativeBinomial(total_count=total, logits=mean.log() - total.log())

    def log_prob(self, raw: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return self.dist(raw).log_prob(value[..., 0])

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return self.dist(raw).mean[..., None]

    def sample(self, raw: torch.Tensor) -> torch.Tensor:
        return self.dist(raw).sample()[..., None]


@COLUMNS.register("poisson")
class PoissonColumn(NegativeBinomialColumn):
    r"""Poisson, :math:`p(x|z) = \lambda^x e^{-\lambda}/x!`, :math:`\lambda =
    \mathrm{softplus}(\cdot) + 10^{-6}` (``TableLikelihood(counts='poisson')``)."""

    num_params = 1

    def dist(self, raw: torch.Tensor) -> dist.Poisson:  # type: ignore[override]
        return dist.Poisson(F.softplus(raw[..., 0]) + 1e-6)


@COLUMNS.register("binary")
class BinaryColumn(ColumnPart):
    r"""Bernoulli, :math:`p(x|z) = \sigma(\ell)^x (1 - \sigma(\ell))^{1-x}`, logit
    :math:`\ell(z)`."""

    def dist(self, raw: torch.Tensor) -> dist.Bernoulli:
        return dist.Bernoulli(logits=raw[..., 0])

    def log_prob(self, raw: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(raw[..., 0], value[..., 0], reduction="none")

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw[..., :1])

    def sample(self, raw: torch.Tensor) -> torch.Tensor:
        return self.dist(raw).sample()[..., None]


@COLUMNS.register("categorical")
class CategoricalColumn(ColumnPart):
    r"""Categorical over ``levels``, :math:`p(x = k|z) = \mathrm{softmax}(\ell(z))_k`.

    The value is the one-hot row :math:`e_k`, so :math:`\log p = \sum_i (e_k)_i
    \log\mathrm{softmax}(\ell)_i`; its mean is the vector of probabilities.
    """

    def __init__(self, *, levels: int) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        self.num_params = self.width = levels

    def log_prob(self, raw: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return (value * F.log_softmax(raw, dim=-1)).sum(-1)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softmax(raw, dim=-1)

    def sample(self, raw: torch.Tensor) -> torch.Tensor:
        k = dist.Categorical(logits=raw).sample()
        return F.one_hot(k, raw.shape[-1]).to(raw.dtype)


def _part(token: str, counts: str, min_scale: float) -> ColumnPart:
    if token.startswith("categorical") and token[len("categorical") :].isdigit():
        return COLUMNS.build(f"categorical:levels={token[len('categorical') :]}")
    if token == "count":
        return COLUMNS.build("poisson" if counts == "poisson" else "count")
    if token not in ("real", "positive", "binary"):
        raise ValueError(
            f"columns: unknown column type {token!r}; expected real, positive, count, binary "
            "or categoricalK (K levels), joined by dots"
        )
    return COLUMNS.build(token)


_NO_SHAPE = torch.Size()


class TableDistribution(dist.TorchDistribution):
    """The masked product of the column parts; event shape ``(width + C,)``.

    ``log_prob`` reads the observed indicators from the value's last ``C`` entries; ``sample``
    and ``mean`` give every cell, with indicators 1.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, parts: list[ColumnPart], raw: torch.Tensor) -> None:
        self.parts, self.raw = parts, raw
        self.widths = [p.width for p in parts]
        self.outputs = [p.num_params for p in parts]
        width = sum(self.widths) + len(parts)
        super().__init__(raw.shape[:-1], torch.Size([width]), validate_args=False)

    def expand(  # type: ignore[override]
        self, batch_shape: torch.Size, _instance: object = None
    ) -> TableDistribution:
        raw = self.raw.expand(*batch_shape, self.raw.shape[-1])
        return TableDistribution(self.parts, raw)

    def _raws(self) -> tuple[torch.Tensor, ...]:
        return self.raw.split(self.outputs, dim=-1)

    def column_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``(..., C)``: each observed cell's :math:`\\log p_j`, 0 for a missing one."""
        c = len(self.parts)
        batch = torch.broadcast_shapes(self.raw.shape[:-1], value.shape[:-1])
        value = value.expand(*batch, value.shape[-1])  # views: the draws of z share x
        raws = self.raw.expand(*batch, self.raw.shape[-1]).split(self.outputs, dim=-1)
        blocks = value[..., :-c].split(self.widths, dim=-1)
        observed = value[..., -c:]
        lp = [p.log_prob(r, v) for p, r, v in zip(self.parts, raws, blocks, strict=True)]
        lp_all = torch.stack(torch.broadcast_tensors(*lp), dim=-1)
        return torch.where(observed > 0, lp_all, torch.zeros_like(lp_all))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.column_log_prob(value).sum(-1)

    def _with_mask(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        values = torch.cat(blocks, dim=-1)
        return torch.cat([values, values.new_ones(*values.shape[:-1], len(self.parts))], -1)

    @property
    def mean(self) -> torch.Tensor:
        return self._with_mask([p.mean(r) for p, r in zip(self.parts, self._raws(), strict=True)])

    def sample(self, sample_shape: torch.Size = _NO_SHAPE) -> torch.Tensor:  # type: ignore[override]
        raw = self.raw.expand(*sample_shape, *self.raw.shape)
        raws = raw.split(self.outputs, dim=-1)
        with torch.no_grad():
            return self._with_mask([p.sample(r) for p, r in zip(self.parts, raws, strict=True)])


@LIKELIHOODS.register("table")
class TableLikelihood(Likelihood):
    r"""A table's columns, each with its own likelihood; missing cells are masked out.

    :math:`\log p(x|z) = \sum_j o_j \log p_j(v_j|z)`, :math:`o_j` the observed indicator
    (see the module). ``columns`` lists the column types joined by dots (``real``,
    ``positive``, ``count``, ``binary``, ``categoricalK``); training sets it from the
    table's schema. ``counts`` is ``negative-binomial`` or ``poisson``. Mattei & Frellsen
    (2019) for the masked likelihood; Nazábal et al. (2020, HI-VAE) for per-type parts.
    """

    param_notes: ClassVar[dict[str, str]] = {"columns": "set from the data set's schema"}

    def __init__(
        self,
        data_shape: tuple[int, ...],
        *,
        columns: str = "",
        counts: str = "negative-binomial",
        min_scale: float = 1e-2,
    ) -> None:
        super().__init__(data_shape)
        if counts not in ("negative-binomial", "poisson"):
            raise ValueError(f"counts must be 'negative-binomial' or 'poisson', got {counts!r}")
        _positive("min_scale", min_scale)
        tokens = [t for t in columns.split(".") if t]
        self.parts = nn.ModuleList(_part(t, counts, min_scale) for t in tokens)
        self.columns = columns

    def _parts(self) -> list[ColumnPart]:
        return [p for p in self.parts if isinstance(p, ColumnPart)]

    @property
    def num_outputs(self) -> int:
        """The decoder's outputs: each part's ``num_params`` (a VAE needs columns)."""
        if not self.parts:
            raise SpecError(
                "likelihood 'table' has no columns, so a VAE has nothing to decode: training "
                "on a table (a .csv with a header) sets them from its schema, or give them "
                "as VAEConfig(likelihood=schema.likelihood_spec())"
            )
        return sum(p.num_params for p in self._parts())

    @property
    def encoded_width(self) -> int:
        """The length of an encoded row: the value blocks and one indicator per column."""
        return sum(p.width for p in self._parts()) + len(self.parts)

    def forward(self, raw: torch.Tensor) -> TableDistribution:
        if not self.parts:
            raise ValueError(
                "the table likelihood has no columns: they are set from a table's schema by "
                "training on a table (VAEConfig(likelihood='table:columns=...'))"
            )
        return TableDistribution(self._parts(), raw)

    def check_support(self, x: torch.Tensor) -> None:
        super().check_support(x)
        if tuple(x.shape[1:]) != (self.encoded_width,):
            raise SupportError(
                f"the table likelihood of columns {self.columns!r} needs encoded rows of "
                f"{self.encoded_width} values, got shape {tuple(x.shape)}. Pass the rows of "
                "the table it was built for (pyro_vae.data.encode_table)."
            )
        observed = x[:, -len(self.parts) :]
        if not bool(((observed == 0) | (observed == 1)).all()):
            raise SupportError("the observed indicators of a table row must be 0 or 1")
