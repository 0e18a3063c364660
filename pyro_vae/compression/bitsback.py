r"""The BB-ANS coder: a trained VAE turned into a lossless code, one data point at a time.

Bits-back with asymmetric numeral systems (Townsend, Bird & Barber, ICLR 2019, alg. 1).
ANS is a stack: symbols pushed last are popped first, and popping a symbol under a model
takes :math:`-\log_2 P(s)` bits off it. For each point :math:`x_i` in turn the coder

1. **pops** the latent buckets :math:`k \sim Q(k|x_i)` off the stack, reading bits that
   are already there (the "bits back"): :math:`-\log_2 Q(k|x_i)` bits fewer;
2. **pushes** :math:`x_i` under :math:`p(x|z_k)` at the buckets' values:
   :math:`-\log_2 p(x_i|z_k)` bits more;
3. **pushes** :math:`k` under the prior: :math:`-\log_2 P(k)` bits more.

The stack grows by :math:`\log_2 Q(k|x) - \log_2 p(x|z_k) - \log_2 P(k)`, a one-sample
estimate of :math:`-\mathrm{ELBO}/\ln 2` at the buckets; over many points the rate is the
negative ELBO. Decompression runs the steps backwards, last point first: pop :math:`k`
under the prior, pop :math:`x` under :math:`p(x|z_k)`, push :math:`k` under
:math:`Q(k|x)` (which returns the bits the compressor borrowed).

The first point has nothing to pop its latent from, so the stack starts with seeded
pseudo-random "clean" words,
``CodecConfig.clean_bits`` of them (by default enough
for one point's latent); they are in the output, counted as overhead and reported on their
own. Decompression ends with exactly these words again, a check that everything decoded.

Every point is coded with the same array shapes and the same code on both sides, the
networks run on one point at a time on one thread, and the quantization math is float64,
so the compressor and the decompressor compute the same probabilities bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyro_vae.checks import is_int
from pyro_vae.guides.posteriors import PointMass
from pyro_vae.models.priors import GaussianMixture, LearnedNormal, StandardNormal, VampPrior
from pyro_vae.vae import VAE

from .container import CompressionError, DamagedPvzError
from .latent import GaussianCode, LatentCoder, gaussian_code, make_buckets
from .mixture import MixtureLatentCoder
from .observed import CODED_LIKELIHOODS, ObservedCode, observed_code

__all__ = ["CodecConfig", "Plan", "clean_words", "decode_points", "encode_points", "make_plan"]

Progress = Callable[[int], None]
_PRECISION = 24  # constriction's default ANS coder: 32-bit words, 24-bit probabilities


@dataclass(frozen=True)
class CodecConfig:
    """Precision settings of the coder; the defaults keep its overhead under 1% (see below).

    - ``latent_bits``: each latent dimension is cut into ``2**latent_bits`` buckets of
      equal prior mass (BB-ANS used 2**12 to 2**16 buckets; the discretization costs well
      under 0.1% of the rate at 12 bits on binarized MNIST).
    - ``coarse_bits``: the bucket index is coded as a coarse index of ``coarse_bits`` bits
      and a fine one, so only ``2**coarse_bits + 2**(latent_bits - coarse_bits)`` CDF
      values are computed per dimension instead of ``2**latent_bits``.
    - ``precision``: bits of every probability in the ANS coder; constriction's Python
      coder fixes it at 24 (probabilities are multiples of 2**-24, none below it).
    - ``clean_bits``: pseudo-random bits that start the stack (0: ``latent_dim *
      latent_bits + 64``, enough for the first point's latent); ``clean_seed`` seeds them.
    - ``max_count``: the largest count a count likelihood codes (tables are
      ``max_count + 1`` wide per dimension).
    """

    latent_bits: int = 12
    coarse_bits: int = 6
    precision: int = _PRECISION
    clean_bits: int = 0
    clean_seed: int = 0
    max_count: int = 4095

    def __post_init__(self) -> None:
        for name in ("latent_bits", "coarse_bits", "precision", "clean_bits", "clean_seed",
                     "max_count"):  # fmt: skip
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(
                    f"CodecConfig.{name} must be a non-negative int, got {getattr(self, name)!r}"
                )
        if not 2 <= self.latent_bits <= 20:
            raise ValueError(f"CodecConfig.latent_bits must be in 2..20, got {self.latent_bits}")
        if not 1 <= self.coarse_bits < self.latent_bits:
            raise ValueError(
                f"CodecConfig.coarse_bits must be in 1..latent_bits-1 ({self.latent_bits - 1}), "
                f"got {self.coarse_bits}"
            )
        if self.precision != _PRECISION:
            raise ValueError(
                f"CodecConfig.precision must be {_PRECISION}: constriction's Python ANS coder "
                f"codes with 24-bit probabilities, got {self.precision}"
            )
        if self.max_count < 1:
            raise ValueError(f"CodecConfig.max_count must be >= 1, got {self.max_count}")


@dataclass(frozen=True)
class Plan:
    """What both directions share: the VAE and the latent and observed codes."""

    vae: VAE
    latent: LatentCoder
    observed: ObservedCode
    latent_dim: int
    dtype: torch.dtype
    device: torch.device


def _refuse(what: str) -> CompressionError:
    return CompressionError(f"this VAE cannot be used as a lossless compressor: {what}")


def check_vae(vae: VAE) -> None:
    """Refuse a VAE the coder has no route for, saying why and what works."""
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a pyro_vae.VAE, got {type(vae).__name__}")
    config = vae.config
    if observed_code(vae.model.likelihood) is None:
        raise _refuse(
            f"its likelihood VAEConfig(likelihood={config.likelihood!r}) is continuous, and a "
            "density is not a code: lossless coding needs a probability for every value x "
            "can take, which a density does not give. Likelihoods that code: "
            + ", ".join(CODED_LIKELIHOODS)
            + " (train with one of them, e.g. VAEConfig(likelihood='bernoulli') for binary "
            "data or VAEConfig(likelihood='discretized-logistic') for 8-bit data)."
        )
    if config.upper_latent_dims:
        raise _refuse(
            "it has several stochastic layers (VAEConfig.upper_latent_dims); the coder codes "
            "one latent layer (bits-back for hierarchies, Bit-Swap, is not implemented)."
        )
    if config.conditional:
        raise _refuse(
            "it is conditional (VAEConfig(conditional=True)); the coder does not carry the "
            "labels it would need as side information."
        )
    if _prior_parts(vae) is None:
        raise _refuse(
            f"its prior VAEConfig(prior={config.prior!r}) has no quantiles the coder can "
            "compute; the latent buckets are prior quantiles, supported for the priors "
            "'normal' and 'learned-normal' (closed form) and 'mixture' and 'vamp' with a "
            "'normal' guide (mixtures of diagonal Normals, by bisection)."
        )
    if isinstance(vae.guide.posterior, PointMass):
        raise _refuse(
            f"its guide VAEConfig(guide={config.guide!r}) is a point mass; bits-back decodes z "
            "from the guide's density q(z|x), and a Delta has none. Guides that code: "
            "normal, lowrank, full, iaf."
        )


def _device(vae: VAE) -> torch.device:
    return next(vae.parameters()).device


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().to("cpu", torch.float64).numpy()).copy()


def _prior_parts(vae: VAE) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(loc, scale, None) of a Normal prior, (locs, scales, logits) of a mixture of diagonal
    Normals (C, L), or None for a prior without a route."""
    prior = vae.model.prior
    if not isinstance(prior, (StandardNormal, LearnedNormal, GaussianMixture, VampPrior)):
        return None
    with torch.no_grad():
        p = prior()
    if isinstance(prior, (StandardNormal, LearnedNormal)):
        base = p.base_dist if isinstance(p, dist.Independent) else p
        return _numpy(base.loc), _numpy(base.scale), None
    comp = p.component_distribution
    base = comp.base_dist if isinstance(comp, dist.Independent) else comp
    if not isinstance(base, dist.Normal):
        return None  # a VampPrior of a correlated or flow guide
    return _numpy(base.loc), _numpy(base.scale), _numpy(p.mixture_distribution.logits)


def make_plan(vae: VAE, config: CodecConfig, observed: ObservedCode) -> Plan:
    """The shared codes for ``vae``; call ``check_vae`` first."""
    import constriction

    parts = _prior_parts(vae)
    assert parts is not None
    loc, scale, logits = parts
    family = constriction.stream.model.Categorical(perfect=False)
    buckets = make_buckets(config.latent_bits, config.coarse_bits)
    latent: LatentCoder = (
        LatentCoder(loc, scale, buckets, family)
        if logits is None
        else MixtureLatentCoder(logits, loc, scale, buckets, family)
    )
    dtype = next(vae.parameters()).dtype
    return Plan(vae, latent, observed, loc.shape[-1], dtype, _device(vae))


def clean_words(config: CodecConfig, latent_dim: int) -> np.ndarray:
    """The seeded pseudo-random words the stack starts with (uint32, never zero at the ends)."""
    bits = config.clean_bits or latent_dim * config.latent_bits + 64
    count = max(2, -(-bits // 32))
    words = (
        np.random.default_rng(config.clean_seed)
        .integers(0, 2**32, count, dtype=np.uint64)
        .astype(np.uint32)
    )
    words[0] |= 1
    words[-1] |= 1
    return words


@contextlib.contextmanager
def _one_thread(vae: VAE) -> Iterator[None]:
    """Eval mode, no grad, one torch thread: the same arithmetic in both directions.

    Distribution arguments are not validated here (the data were checked on entry).
    """
    threads, training = torch.get_num_threads(), vae.training
    torch.set_num_threads(1)
    vae.eval()
    try:
        with torch.no_grad(), pyro.validation_enabled(False):  # checked once, at the boundary
            yield
    finally:
        torch.set_num_threads(threads)
        vae.train(training)


def _posterior(plan: Plan, sym: np.ndarray) -> GaussianCode:
    shape = plan.vae.config.data_shape
    x = plan.observed.model_input(sym.reshape(1, *shape), plan.dtype).to(plan.device)
    guide = plan.vae.guide
    q = guide.posterior(guide.features(x))
    try:
        code = gaussian_code(q)
    except (ValueError, np.linalg.LinAlgError) as e:
        raise _refuse(f"its guide's q(z|x) ({type(q).__name__}) has no Gaussian form ({e})") from e
    if not (np.isfinite(code.loc).all() and (code.chol is None or np.isfinite(code.chol).all())):
        raise CompressionError("the guide gave non-finite parameters for a data point")
    return code


def _likelihood(plan: Plan, k: np.ndarray) -> dist.TorchDistribution:
    z = torch.from_numpy(plan.latent.values(k)).to(plan.device, plan.dtype).unsqueeze(0)
    px = plan.vae.model.likelihood(plan.vae.model.decoder(z))
    return px.base_dist if isinstance(px, dist.Independent) else px


def encode_points(
    plan: Plan, symbols: np.ndarray, start: np.ndarray, progress: Progress | None = None
) -> np.ndarray:
    """The ANS words of ``symbols`` (N, D), coded in order 0..N-1 onto the ``start`` words."""
    import constriction

    coder = constriction.stream.stack.AnsCoder(start.copy())
    with _one_thread(plan.vae):
        for i in range(symbols.shape[0]):
            k = plan.latent.decode_posterior(coder, _posterior(plan, symbols[i]))
            plan.observed.encode(coder, symbols[i], _likelihood(plan, k))
            plan.latent.encode_prior(coder, k)
            if progress is not None:
                progress(1)
    return np.asarray(coder.get_compressed(), dtype=np.uint32)


def decode_points(
    plan: Plan,
    words: np.ndarray,
    num: int,
    dims: int,
    start: np.ndarray,
    progress: Progress | None = None,
) -> np.ndarray:
    """The ``num`` points (num, dims) coded in ``words``, last first; checks the ``start`` words."""
    import constriction

    coder = constriction.stream.stack.AnsCoder(words.copy())
    out = np.empty((num, dims), dtype=np.int64)
    with _one_thread(plan.vae):
        for i in reversed(range(num)):
            k = plan.latent.decode_prior(coder, plan.latent_dim)
            out[i] = plan.observed.decode(coder, _likelihood(plan, k))
            plan.latent.encode_posterior(coder, k, _posterior(plan, out[i]))
            if progress is not None:
                progress(1)
    if not np.array_equal(np.asarray(coder.get_compressed(), dtype=np.uint32), start):
        raise DamagedPvzError(
            "decoding did not return the coder to its starting bits: the model computed "
            "different numbers than when compressing (another machine or library build), "
            "or the file was made by another coder. No data was returned."
        )
    return out
