r"""The ELBO split into its two terms, read off Pyro traces.

For data points :math:`x_n`,

.. math::

    \mathrm{ELBO}(x_n) = \underbrace{\mathbb{E}_{q(z|x_n)}[\log p(x_n|z)]}_{\texttt{reconstruction}}
        - \underbrace{\mathrm{KL}(q(z|x_n)\,\|\,p(z))}_{\texttt{kl}}

in nats per data point. The guide is traced, the model is replayed against it, and every
site's log density is reduced to one value per data point along the data plate
(:func:`pyro_vae.infer.sites.data_plate`). This works for any (model, guide) pair of Pyro
programs, not only ones this package builds; its mean over data points is an estimate of
``-Trace_ELBO().loss / N``.

**Discrete latents.** A site marked ``infer={"enumerate": "parallel"}``
(``config_enumerate``) is summed over its support instead of sampled. In the guide, each
value :math:`y` is weighted by :math:`q(y|x_n)`, so ``kl:y`` is the exact
:math:`\mathrm{KL}(q(y|x_n)\|p(y))` and the other terms are expectations under
:math:`q(y|x_n)`. In the model only (``TraceEnum_ELBO``'s model-side enumeration), the
ELBO is :math:`\mathbb{E}_q[\log \sum_y p(x_n, y, z) - \log q(z|x_n)]`, which is the ELBO
with :math:`q(y|x_n, z) = p(y|x_n, z)`: the terms are expectations under that posterior
and ``kl:y`` is :math:`\mathrm{KL}(p(y|x_n,z)\|p(y|\dots))`. A latent site the model draws and
the guide does not (e.g. the ``x_unobserved`` part of an ``obs_mask``) is proposed from
its own conditional prior: its ``kl`` is 0 and its log density cancels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

from pyro_vae.checks import is_int
from pyro_vae.guides.posteriors import is_point_mass
from pyro_vae.infer import sites
from pyro_vae.infer.sites import DataPlate, SiteError

__all__ = ["ElboTerms", "analytic_kl_allowed", "elbo_terms", "per_point", "traces"]

# A trace site (pyro.poutine.runtime.Message). Pyro types its "fn" as a bare callable, so
# sites are Any here rather than a cast at every log_prob.
Site = Any


class ElboTerms(dict[str, torch.Tensor]):
    r"""Per-data-point tensors of shape ``(N,)``: ``reconstruction``, ``kl`` and ``elbo``.

    Also ``kl:<site>`` for each latent site and ``reconstruction:<site>`` for each observed
    site. ``kl_method[site]`` is ``"analytic"``, ``"monte-carlo"``, ``"delta"``,
    ``"enumerated"`` (summed over the support) or ``"prior"`` (a model site the guide does
    not draw: proposed from its prior, ``kl`` 0). For a ``Delta`` guide site (a point
    estimate, not a density) ``kl:<site>`` is :math:`-\log p(z)` at the point (its
    :math:`\log q` is 0), so ``elbo`` then reads reconstruction plus log prior at a point,
    which is *not* a bound on :math:`\log p(x)`.
    """

    kl_method: dict[str, str]


def traces(
    model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[Trace, Trace]:
    """Trace the guide, then the model replayed against the guide's samples.

    Plate subsample sites are pruned, so every remaining ``sample`` site is a random variable.
    """
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def per_point(
    value: torch.Tensor, site: Site, n: int, particle_dim: int | None = None
) -> torch.Tensor:
    """Reduce a site's batch-shaped log density to ``(N,)``, or ``(K, N)`` with particles.

    The one-site form of :func:`pyro_vae.infer.sites.per_point`: the data plate is read off
    this site's frames (the plate named ``data``, else the outermost, of ``n`` elements;
    an unsized plate has the size Pyro gave it). ``particle_dim`` is the dim of a particle
    plate left of every plate. A site outside the data plate is shared by the ``N`` points.
    """
    nesting = None if particle_dim is None else -particle_dim - 1
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.dim != particle_dim]
    sized = sorted((f for f in frames if sites.plate_size(f, site) == n), key=lambda f: f.dim)
    named = [f for f in sized if f.name == "data"]
    frame = (named or sized or [None])[0]
    plate = DataPlate(None, None, n) if frame is None else DataPlate(frame.name, frame.dim, n)
    return sites.per_point(site, plate, value, max_plate_nesting=nesting)


def analytic_kl_allowed(name: str, model_trace: Trace, guide_trace: Trace) -> bool:
    r"""True if every latent the model draws before ``name`` the guide also draws before it.

    Then :math:`p(z_{name} \mid \text{parents})` depends on nothing that q draws from
    ``name``, and :math:`\mathbb{E}_q[\log q - \log p] = \mathbb{E}[\mathrm{KL}(q(z_{name}|\ldots)
    \,\|\, p(z_{name}|\ldots))]` holds site by site, so the closed-form KL may replace the
    Monte Carlo one. In a hierarchy whose guide draws z1 before z2, p(z1|z2) depends on
    the z2 that q(z2|z1) draws from this very z1: not allowed there.
    """
    model_order = [k for k, _ in sites.latent_sites(model_trace)]
    guide_order = [k for k, _ in sites.latent_sites(guide_trace)]
    before_model = set(model_order[: model_order.index(name)])
    before_guide = set(guide_order[: guide_order.index(name)])
    return before_model <= before_guide


_analytic_kl_allowed = analytic_kl_allowed  # the old private name, for old imports


class _Particle:
    """One draw's traces, their data plate and nesting, and each site's per-point terms."""

    def __init__(self, model_trace: Trace, guide_trace: Trace, plate: DataPlate, nesting: int):
        self.model_trace, self.guide_trace = model_trace, guide_trace
        self.plate, self.nesting = plate, nesting
        guided = {k for k, _ in sites.sample_sites(guide_trace)}
        model_latent = [k for k, _ in sites.latent_sites(model_trace)]
        extra = sorted(guided - set(model_latent))
        if extra:
            raise ValueError(
                "every sample site of the guide must be a latent site of the model: the guide "
                f"draws {extra}, which the model has not (or observes)"
            )
        self.from_prior = [k for k in model_latent if k not in guided and not self._enum(k)]
        self.model_enum = [k for k in model_latent if k not in guided and self._enum(k)]
        self.guide_enum = [k for k, _ in sites.enumerated_sites(guide_trace)]
        for name in self.model_enum + self.guide_enum:
            self._check_enumerated(name)
        self.log_w = self._weights()

    def _enum(self, name: str) -> bool:
        return sites.is_enumerated(self.model_trace.nodes[name])

    def lp(self, name: str, trace: Trace | None = None, value: Any = None) -> torch.Tensor:
        site = (trace or self.model_trace).nodes[name]
        return sites.per_point(site, self.plate, value, max_plate_nesting=self.nesting)

    def _check_enumerated(self, name: str) -> None:
        site = self.model_trace.nodes[name]
        plates = {f.name for f in site["cond_indep_stack"] if f.vectorized}
        plates.discard(sites.PARTICLE_PLATE)
        if plates != {self.plate.name} - {None}:
            raise SiteError(
                f"the enumerated site {name!r} is in plates {sorted(plates)}: per-point values "
                f"sum a discrete site over its support once per data point, so it must be in "
                f"the data plate {self.plate.name!r} and no other plate; drop its enumerate mark "
                "(config_enumerate) to sample it instead"
            )

    def _weights(self) -> torch.Tensor | None:
        """log of each enumerated configuration's weight, normalized per point, or None."""
        if not (self.model_enum or self.guide_enum):
            return None
        log_w: Any = sum(self.lp(k, self.guide_trace) for k in self.guide_enum)
        if self.model_enum:
            joint = self.log_joint()
            dims = [self._dim(k) for k in self.model_enum]
            self.log_r = joint - joint.logsumexp(dims, keepdim=True)
            log_w = log_w + self.log_r
        return log_w  # type: ignore[no-any-return]

    def _dim(self, name: str) -> int:
        """The dim of an enumerated site in a per-point tensor ``(*left, N)``."""
        site: Site = self.model_trace.nodes[name]
        return int(site["infer"]["_enumerate_dim"]) + self.nesting - 1

    def log_joint(self) -> torch.Tensor:
        """Sum of the model's per-point log densities, less the sites drawn from the prior."""
        total: Any = 0.0
        for name, _ in sites.sample_sites(self.model_trace):
            if name not in self.from_prior:
                total = total + self.lp(name)
        return torch.as_tensor(total)

    def expect(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the enumerated configurations (summed with weights)."""
        if self.log_w is not None:
            value = value * self.log_w.exp()
        n = self.plate.size
        return value.expand(*value.shape[:-1], n).reshape(-1, n).sum(0)  # (N,)

    def terms(self, analytic: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        out: dict[str, torch.Tensor] = {}
        methods: dict[str, str] = {}
        for name, _ in sites.observed_sites(self.model_trace):
            out[f"reconstruction:{name}"] = self.expect(self.lp(name))
        for name, _ in sites.latent_sites(self.model_trace):
            kl, methods[name] = self._site_kl(name, analytic)
            out[f"kl:{name}"] = self.expect(kl)
        return out, methods

    def _site_kl(self, name: str, analytic: bool) -> tuple[torch.Tensor, str]:
        if name in self.from_prior:
            return self.lp(name) * 0.0, "prior"
        if name in self.model_enum:
            entropy = self.log_r if name == self.model_enum[0] else 0.0
            return entropy - self.lp(name), "enumerated"
        p_site: Site = self.model_trace.nodes[name]
        q_site: Site = self.guide_trace.nodes[name]
        if is_point_mass(q_site["fn"]):  # log q = 0 at its point: "kl" is -log p(z) there
            return -self.lp(name), "delta"
        if name in self.guide_enum:
            return self.lp(name, self.guide_trace) - self.lp(name), "enumerated"
        if analytic and analytic_kl_allowed(name, self.model_trace, self.guide_trace):
            try:
                kl = kl_divergence(q_site["fn"], p_site["fn"])
                return self.lp(name, self.guide_trace, kl), "analytic"
            except NotImplementedError:
                pass
        return self.lp(name, self.guide_trace) - self.lp(name), "monte-carlo"


def _particle(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    n: int,
    nesting: int | None,
) -> _Particle:
    """One draw. ``nesting`` None: a plain first run finds it (and is the draw if nothing
    is enumerated)."""
    if nesting is None:
        model_trace, guide_trace = traces(model, guide, *args, **kwargs)
        nesting = sites.max_plate_nesting(model_trace, guide_trace)
        if not any(_marked(tr) for tr in (model_trace, guide_trace)):
            plate = sites.data_plate(model_trace, guide_trace, n=n, max_plate_nesting=nesting)
            return _Particle(model_trace, guide_trace, plate, nesting)
    model_trace, guide_trace = sites.run_traces(model, guide, args, kwargs, nesting=nesting)
    plate = sites.data_plate(model_trace, guide_trace, n=n, max_plate_nesting=nesting)
    return _Particle(model_trace, guide_trace, plate, nesting)


def _marked(trace: Trace) -> bool:
    """True if a latent site of the trace asks to be enumerated (``config_enumerate``)."""
    return any(s["infer"].get("enumerate") is not None for _, s in sites.latent_sites(trace))


def elbo_terms(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    *args: Any,
    num_particles: int = 1,
    analytic_kl: bool = True,
    **kwargs: Any,
) -> ElboTerms:
    r"""Per-data-point ELBO, reconstruction and KL, each of shape ``(N,)``, in nats.

    ``reconstruction`` is :math:`\mathbb{E}_q[\log p(x|z)]` summed over observed sites;
    ``kl`` is :math:`\mathrm{KL}(q(z|x)\|p(z))` summed over latent sites, analytic where a
    KL is registered for the (guide, prior) pair and valid for the trace's dependency order,
    Monte Carlo otherwise (``result.kl_method`` says which, per site; ``"delta"`` for a point
    mass, whose ``kl`` is :math:`-\log p(z)` at the point; ``"enumerated"`` for a discrete
    site summed over its support, see the module notes). Expectations are averaged over
    ``num_particles`` draws from the guide. ``model(x, *args, **kwargs)`` and
    ``guide(x, *args, **kwargs)`` may be any Pyro programs with a plate over the rows of x
    (sized or not, at any dim, subsampled to the rows of x, masked or scaled: scales are
    loss weights and are not applied).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty tensor (N, ...), got {_describe(x)}")
    if not is_int(num_particles) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    n = x.shape[0]
    total: dict[str, torch.Tensor] = {}
    methods: dict[str, str] = {}
    nesting: int | None = None
    for _ in range(num_particles):
        draw = _particle(model, guide, (x, *args), kwargs, n, nesting)
        nesting = draw.nesting
        terms, methods = draw.terms(analytic_kl)
        for key, value in terms.items():
            total[key] = total.get(key, 0.0) + value / num_particles  # type: ignore[operator]
    result = ElboTerms(total)
    zero = x.new_zeros(n)
    result["reconstruction"] = sum(
        (v for k, v in total.items() if k.startswith("reconstruction:")), zero
    )
    result["kl"] = sum((v for k, v in total.items() if k.startswith("kl:")), zero)
    result["elbo"] = result["reconstruction"] - result["kl"]
    result.kl_method = methods
    return result


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__
