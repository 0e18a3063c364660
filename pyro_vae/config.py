"""Configuration: frozen dataclasses, the one source of defaults.

The CLI flags and the TOML configs are built from these dataclasses, and every run saves
them to ``config.json`` so that the run can be rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from pyro_vae.checks import is_int, is_number
from pyro_vae.nn import ACTIVATIONS
from pyro_vae.registry import CONFIG_FIELDS

__all__ = [
    "ConfigError",
    "EvaluateConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "VAEConfig",
    "from_dict",
    "load_toml",
    "load_toml_sections",
    "resolve_binarize",
    "to_dict",
]


# The devices a command may be given (--device): torch knows more, this package uses these.
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message says which and why.

    ``field`` is the name of the setting a field's own check refused (``latent_dim``), so
    that the command line can name the flag it came from; None when no one field is at fault.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class VAEConfig:
    """The model: what p(x|z)p(z) and q(z|x) are built from.

    Component fields are spec strings, ``"name"`` or ``"name:key=value,..."``; the names
    are listed by ``pyro-vae components``.
    """

    data_shape: tuple[int, ...] = (1, 8, 8)  # shape of one data point; set from the data set
    latent_dim: int = 8  # dimension of z
    hidden: tuple[int, ...] = (200, 200)  # encoder hidden widths (decoder: reversed)
    activation: str = "tanh"  # nonlinearity between hidden layers
    prior: str = "normal"  # p(z)
    likelihood: str = "bernoulli"  # p(x|z)
    guide: str = "normal"  # the family of q(z|x)
    network: str = "mlp"  # encoder/decoder architecture
    upper_latent_dims: tuple[int, ...] = ()  # sizes of latent layers above z (50: z2 -> z1 -> x)
    upper_hidden: tuple[int, ...] = (100, 100)  # hidden widths between stochastic layers
    conditional: bool = False  # condition on the class label: p(x|z,y) and q(z|x,y)
    num_classes: int = 0  # classes of y for a conditional VAE; set from the data set
    semi_supervised: bool = False  # M2: y latent where hidden, q(y|x) a classifier, y enumerated

    def __post_init__(self) -> None:
        _check_positive_ints("data_shape", self.data_shape)
        _check_positive_ints("hidden", self.hidden, allow_empty=True)
        _check_positive_ints("upper_latent_dims", self.upper_latent_dims, allow_empty=True)
        _check_positive_ints("upper_hidden", self.upper_hidden)
        if not isinstance(self.conditional, bool):
            raise ConfigError(f"conditional must be true or false, got {self.conditional!r}")
        if not isinstance(self.semi_supervised, bool):
            raise ConfigError(
                f"semi_supervised must be true or false, got {self.semi_supervised!r}"
            )
        if self.semi_supervised and self.conditional:
            raise ConfigError(
                "VAEConfig(conditional=True) and semi_supervised=True (what TrainConfig.labelled "
                "builds) exclude each other: the conditional VAE sees every label, the "
                "semi-supervised one a few"
            )
        if not is_int(self.num_classes):
            raise ConfigError(f"num_classes must be an int, got {self.num_classes!r}")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {self.num_classes}")
        if not is_int(self.latent_dim):
            raise ConfigError(f"latent_dim must be an int, got {self.latent_dim!r}")
        if self.latent_dim <= 0:
            raise ConfigError(f"latent_dim must be a positive int, got {self.latent_dim}")
        _check_sizes(self)
        for name in ("activation", "prior", "likelihood", "guide", "network"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; valid names are: "
                f"{', '.join(sorted(ACTIVATIONS))}"
            )
        _check_components(self)


# The largest size of any one dimension (latent_dim, a hidden width, a data dimension): a
# layer 2**24 wide on an input as wide holds 2**48 weights, far beyond any device's memory,
# and a model with larger sizes would fail inside torch (or overflow its size arithmetic).
MAX_SIZE = 2**24


def _check_sizes(config: VAEConfig) -> None:
    """Every size at most :data:`MAX_SIZE`, so that what is refused is refused here."""
    for name in ("data_shape", "latent_dim", "hidden", "upper_latent_dims", "upper_hidden"):
        value = getattr(config, name)
        largest = max(value, default=0) if isinstance(value, tuple) else value
        if largest > MAX_SIZE:
            raise ConfigError(
                f"{name} must be at most {MAX_SIZE} (2**24) in each size, got {largest}: a "
                "model that large cannot be held in memory. Choose a smaller value."
            )


def _check_components(config: VAEConfig) -> None:
    """Each component spec names a registered class whose parameters are valid.

    Raises :class:`~pyro_vae.registry.SpecError` (a ``ValueError``) naming the field (a
    ``prior`` spec is checked in the priors' registry), what is valid and what was given,
    here rather than when :class:`~pyro_vae.VAE` builds the parts. Priors, likelihoods and
    guides are built once with the settings known now (latent sizes, ``data_shape``; the
    global RNG is left as it was); a network is checked by name and parameters only, since
    its size follows the data set's shape, set later. A user's own component must be
    registered (its module imported, or ``--plugin FILE``) before the config is built.
    """
    top = config.upper_latent_dims[-1] if config.upper_latent_dims else config.latent_dim
    contexts: dict[str, dict[str, Any]] = {
        "prior": {"latent_dim": top},  # the prior is the density of the top layer
        "likelihood": {"data_shape": config.data_shape},
        "guide": {"feature_dim": 1, "latent_dim": config.latent_dim},
        "network": {},
    }
    for name, context in contexts.items():
        registry = CONFIG_FIELDS.get(name)
        if registry is not None:  # None only while pyro_vae itself is being imported
            registry.validate(getattr(config, name), **context)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, optimisation and where the run goes."""

    dataset: str = "digits"  # a built-in name (digits, mnist, ...) or a path to .npy/.npz/.csv
    binarize: str = "auto"  # auto | none | dynamic: x ~ Bernoulli(pixel) redrawn every epoch
    epochs: int = 100  # passes over the training split
    batch_size: int = 100  # data points per step
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # seeds model init, data order, binarization and the guide's noise
    device: str = "auto"  # auto | cpu | cuda | cuda:N; auto picks CUDA when present
    num_particles: int = 1  # samples of z per data point in the training ELBO
    objective: str = "elbo"  # e.g. elbo, iwae:k=5, beta:beta=4; all: pyro-vae components
    out: str = "runs/latest"  # run directory
    eval_num_samples: int = 100  # k of the importance-weighted NLL reported after training
    eval_num_points: int = 1000  # test points for that NLL (a seeded random subset)
    on_nan: str = "stop"  # stop | skip: what a step with a non-finite loss or gradient does
    max_skipped_steps: int = 100  # with --on-nan skip: stop once more steps than this were skipped
    replay: bool = True  # replay each step's recorded graph (pyro_vae.training.replay), or run Pyro
    cuda_graphs: bool = False  # capture each step as one CUDA graph (GPU; else the replayed step)
    adam_beta1: float = 0.9  # Adam's decay rate of the running mean of the gradient
    adam_beta2: float = 0.999  # Adam's decay rate of the running mean of the squared gradient
    adam_eps: float = 1e-8  # Adam's epsilon, added to the denominator (the IWAE paper: 1e-4)
    lr_schedule: str = "constant"  # constant | burda: 3**i epochs at lr*10**(-i/7), i=0..7
    lr_stage_scale: float = 1.0  # burda: stage i lasts ceil(scale*3**i) epochs (1: 3280 in all)
    train_on: str = "train"  # train | train+valid: the rows trained on (paper: all 60k MNIST)
    data_on_device: str = "auto"  # auto | yes | no: data in GPU memory (auto: if it fits)
    labelled: int | str | None = None  # N: M2 with N labels kept (balanced); all: conditional
    alpha: float | None = None  # M2's classifier weight (Kingma et al. 2014); None: 0.1 * N
    schema: str = ""  # a table's column types: FILE.toml (name = "type") or name=type;name=type
    early_stop: int = 0  # PATIENCE: stop once the valid ELBO gained nothing in N epochs (0: off)
    tensorboard: bool = False  # also write each epoch's metrics and lr to RUN/tensorboard/

    def __post_init__(self) -> None:
        if self.binarize not in ("auto", "none", "dynamic"):
            raise ConfigError(
                f"binarize must be 'auto', 'none' or 'dynamic', got {self.binarize!r}"
            )
        for name in ("epochs", "batch_size", "num_particles", "eval_num_samples"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if not is_int(self.eval_num_points):
            raise ConfigError(f"eval_num_points must be an int, got {self.eval_num_points!r}")
        if not is_number(self.lr) or not 0 < self.lr < math.inf:
            raise ConfigError(f"lr must be a positive finite number, got {self.lr!r}")
        _check_train_extras(self)
        _check_labelled(self)
        for name in ("replay", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _check_optimisation(self)
        if not isinstance(self.objective, str) or not self.objective.strip():
            raise ConfigError(f"objective must be a non-empty spec string, got {self.objective!r}")
        if not isinstance(self.schema, str):
            raise ConfigError(f"schema must be a string, got {self.schema!r}")
        if not DEVICE_NAME.fullmatch(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class EvaluateConfig:
    """The defaults of ``pyro-vae evaluate``'s flags (the command validates the values)."""

    split: str = "test"  # test | valid: the split scored
    num_samples: int = 5000  # k of the importance-weighted bound
    num_points: int | None = None  # score a seeded random subset of N points (default: all)
    seed: int = 0  # seeds the subset and the guide's noise
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    psis_samples: int = 1000  # draws per point for PSIS k-hat
    gaps: int = 0  # inference gaps on N points (eval.json gaps)
    mcmc: int = 0  # NUTS on p(z|x) for N points (eval.json mcmc)
    mcmc_samples: int = 200  # NUTS draws (and warm-up) per chain


@dataclass(frozen=True)
class SampleConfig:
    """The defaults of ``pyro-vae sample``'s flags (the command validates the values)."""

    num: int = 100  # images to draw
    seed: int = 0  # seeds the draws of z (and of x with --draw)
    label: int | None = None  # class to draw from p(x|z,y) (conditional runs; default: each)
    draw: bool = False  # draw x ~ p(x|z) instead of showing the mean of p(x|z)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs: the model and the training. Saved as ``config.json``."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # binarize "auto" is settled here, once, so that every RunConfig (and config.json)
        # says what the run does: "dynamic" for a Bernoulli likelihood, "none" otherwise
        vae, train = resolve_labelled(self.vae, self.train)
        object.__setattr__(self, "vae", vae)
        object.__setattr__(self, "train", train)
        binarize = resolve_binarize(self.train.binarize, self.vae.likelihood)
        if binarize != self.train.binarize:
            object.__setattr__(self, "train", dataclasses.replace(self.train, binarize=binarize))


def resolve_binarize(binarize: str, likelihood: str) -> str:
    """``TrainConfig(binarize='auto')``: ``dynamic`` for a likelihood of binary data, else ``none``.

    Binarizing is for a likelihood of {0, 1} data (``bernoulli``, or a user's own class
    with ``binary_data = True``); a likelihood of grey levels, counts or real values is given
    the data as they are. ``none`` and ``dynamic`` are kept as given.
    """
    if binarize != "auto":
        return binarize
    name = likelihood.split(":", 1)[0].strip() if isinstance(likelihood, str) else ""
    registry = CONFIG_FIELDS.get("likelihood")  # entered by pyro_vae.models on import
    if registry is not None and name in registry:
        binary = bool(getattr(registry.entry(name).cls, "binary_data", False))
    else:
        binary = name == "bernoulli"
    return "dynamic" if binary else "none"


def _check_train_extras(tc: TrainConfig) -> None:
    """Checks of the seed and the non-finite-step policy (see :mod:`pyro_vae.training.guard`)."""
    if not is_int(tc.seed) or not 0 <= tc.seed < 2**32:
        raise ConfigError(f"seed must be an int in [0, 2**32), got {tc.seed!r}")
    if tc.data_on_device not in ("auto", "yes", "no"):
        raise ConfigError(
            f"data_on_device must be 'auto', 'yes' or 'no', got {tc.data_on_device!r}"
        )
    if tc.on_nan not in ("stop", "skip"):
        raise ConfigError(f"on_nan must be 'stop' or 'skip', got {tc.on_nan!r}")
    if not is_int(tc.early_stop) or tc.early_stop < 0:
        raise ConfigError(f"early_stop must be an int >= 0 (0: off), got {tc.early_stop!r}")
    if not isinstance(tc.tensorboard, bool):
        raise ConfigError(f"tensorboard must be true or false, got {tc.tensorboard!r}")
    steps = tc.max_skipped_steps
    if not is_int(steps) or steps < 0:
        raise ConfigError(f"max_skipped_steps must be an int >= 0, got {steps!r}")


def _check_labelled(tc: TrainConfig) -> None:
    """``labelled`` is None, ``'all'`` or a positive int; ``alpha`` None or a number >= 0."""
    value = tc.labelled
    if (
        value is not None
        and value != "all"
        and not (isinstance(value, int) and is_int(value) and value > 0)
    ):
        raise ConfigError(f"labelled must be a positive int or 'all', got {value!r}")
    if tc.alpha is not None and (not is_number(tc.alpha) or not 0 <= tc.alpha < math.inf):
        raise ConfigError(f"alpha must be a finite number >= 0, got {tc.alpha!r}")


def resolve_labelled(vae: VAEConfig, train: TrainConfig) -> tuple[VAEConfig, TrainConfig]:
    """The model and objective ``TrainConfig.labelled`` asks for, settled once.

    ``'all'``: the conditional VAE (``VAEConfig(conditional=True)``). ``N``: the
    semi-supervised VAE M2 (``VAEConfig(semi_supervised=True)``), trained with
    ``TraceEnum_ELBO`` (objective ``elbo-enum``, put in place of the default ``elbo``).
    """
    if train.labelled == "all" and not vae.conditional:
        vae = dataclasses.replace(vae, conditional=True)
    elif is_int(train.labelled):
        if vae.conditional:
            raise ConfigError(
                f"TrainConfig(labelled={train.labelled}) builds the semi-supervised VAE, which "
                "sees only some labels, but VAEConfig(conditional=True) asks for the conditional "
                "VAE, which sees every label. Drop one; TrainConfig(labelled='all') is the "
                "conditional VAE."
            )
        if not vae.semi_supervised:
            vae = dataclasses.replace(vae, semi_supervised=True)
        if train.objective == "elbo":
            train = dataclasses.replace(train, objective="elbo-enum")
    return vae, train


def _check_optimisation(tc: TrainConfig) -> None:
    """Checks of Adam's hyper-parameters, the learning-rate schedule and the training rows."""
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(tc, name)
        if not is_number(value) or not 0 <= value < 1:
            raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    eps = tc.adam_eps
    if not is_number(eps) or not 0 < eps < math.inf:
        raise ConfigError(f"adam_eps must be a positive finite number, got {eps!r}")
    if tc.lr_schedule not in ("constant", "burda"):
        raise ConfigError(f"lr_schedule must be 'constant' or 'burda', got {tc.lr_schedule!r}")
    scale = tc.lr_stage_scale
    if not is_number(scale) or not 0 < scale < math.inf:
        raise ConfigError(f"lr_stage_scale must be a positive finite number, got {scale!r}")
    if tc.train_on not in ("train", "train+valid"):
        raise ConfigError(f"train_on must be 'train' or 'train+valid', got {tc.train_on!r}")


def _check_positive_ints(name: str, value: Any, allow_empty: bool = False) -> None:
    if not isinstance(value, tuple) or (not value and not allow_empty):
        raise ConfigError(f"{name} must be a non-empty tuple of positive ints, got {value!r}")
    for v in value:
        if not is_int(v) or v <= 0:
            raise ConfigError(f"{name} must hold positive ints, got {value!r}")


# The dict and TOML readers live in configfile.py (they need the classes above); they are
# re-exported here, where every caller has always imported them from.
from pyro_vae.configfile import (  # noqa: E402
    from_dict,
    load_toml,
    load_toml_sections,
    to_dict,
)
