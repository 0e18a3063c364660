"""Discovery (``pyro-vae components``), plugins in the user's own files, and the examples."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pyro.distributions as dist
import pytest
import torch

from pyro_vae import VAE, PluginError, VAEConfig, load, load_plugin, save
from pyro_vae.cli.main import main
from pyro_vae.components import REGISTRIES, describe, math_to_unicode
from pyro_vae.models import PRIORS, Prior
from pyro_vae.plugins import plugin_records
from pyro_vae.registry import Registry, SpecError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAST = ["--hidden", "16", "--latent-dim", "2", "--quiet", "--eval-num-samples", "5"]
FAST += ["--eval-num-points", "50", "--epochs", "1"]


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Registry[object]]]:
    """Every registry as it is now, restored after the test: plugins loaded here vanish."""
    for registry in REGISTRIES.values():
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    yield REGISTRIES


def forget(registry: Registry[object], name: str) -> None:
    """Unregister ``name`` (inside the ``registries`` fixture only), as in a fresh process."""
    del registry._entries[name]


# --------------------------------------------------------------------------- components


def test_components_lists_every_entry_with_summary_and_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    assert out == describe()
    sections = {part.splitlines()[0]: part.splitlines()[1:] for part in out.split("\n\n")}
    assert list(sections) == [f"{key}:" for key in REGISTRIES]
    for key, registry in REGISTRIES.items():
        lines = sections[f"{key}:"]
        for entry in registry:
            row = next(line for line in lines if line.split()[:1] == [entry.name])
            first_words = entry.summary.split(":math:")[0].replace("``", "").split()[:3]
            assert " ".join(first_words) in row, (entry.name, row)
    assert "parameters: min_scale (float, default 0.001)" in out  # normal-decoder, ...
    assert "parameters: channels (int, default 32), layers (int, default 2)" in out
    assert ":math:" not in out and "``" not in out  # docstring markup is stripped


def test_components_shows_math_as_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """No LaTeX command reaches the terminal; the densities read in Unicode."""
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\\[A-Za-z,;:!]", out) is None, re.findall(r".*\\.*", out)
    assert "p(z) = N(z; μ, diag σ²)" in out  # learned-normal
    assert "p(x|z) = ∏_d σ(ℓ_d)^(x_d)(1-σ(ℓ_d))^(1-x_d)" in out  # bernoulli
    assert "q(z|x) = N(z; μ, FFᵀ + D)" in out  # lowrank


@pytest.mark.parametrize(
    ("tex", "text"),
    [
        (r"\mathcal{N}(z; \mu(x), \mathrm{diag}\,\sigma(x)^2)", "N(z; μ(x), diag σ(x)²)"),
        (r"\prod_d \lambda_d^{x_d} e^{-\lambda_d} / x_d!", "∏_d λ_d^(x_d) e^(-λ_d) / x_d!"),
        (r"L L^\top + \tfrac12 \frac{a}{b_{ij}}", "L Lᵀ + 1/2 (a)/(b_(ij))"),
        (r"\unknowncommand{x}", "unknowncommandx"),  # never a backslash
    ],
)
def test_math_to_unicode(tex: str, text: str) -> None:
    assert math_to_unicode(tex) == text


def test_components_says_what_hidden_0_means(capsys: pytest.CaptureFixture[str]) -> None:
    """``hidden=0`` of the flow prior and the IAF guide is an automatic width, not zero."""
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    assert "hidden (int, default 0 = automatic width, 3·latent_dim + 1)" in out  # flow
    assert "hidden (int, default 0 = automatic width, max(2·latent_dim, 16))" in out  # iaf
    with pytest.raises(SpecError, match=r"default 0 = automatic width"):
        PRIORS.build("flow:hiden=3", latent_dim=2)


def test_param_notes_must_name_parameters(registries: dict[str, Registry[object]]) -> None:
    class Typo(Prior):
        """A prior whose note names no parameter."""

        param_notes: ClassVar[dict[str, str]] = {"widht": "automatic"}

        def __init__(self, latent_dim: int, *, width: int = 0) -> None:
            super().__init__()

    with pytest.raises(ValueError, match=r"param_notes names \['widht'\]"):
        PRIORS.register("typo")(Typo)


def test_components_json_is_the_names_by_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["components", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"priors", "likelihoods", "guides", "networks", "objectives"}
    assert {"elbo", "iwae", "dreg", "stl"} <= set(data["objectives"])
    assert set(data) == set(REGISTRIES)
    for key, names in data.items():
        assert names == sorted(names) == REGISTRIES[key].names()
    assert {"continuous-bernoulli", "discretized-logistic", "negative-binomial"} <= set(
        data["likelihoods"]
    )
    assert {"conv", "mlp"} <= set(data["networks"])


def test_components_shows_plugins(
    registries: dict[str, Registry[object]], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["components", "--json", "--plugin", str(EXAMPLES / "custom_prior.py")]
    args += ["--plugin", str(EXAMPLES / "custom_guide.py")]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert "student-t" in data["priors"] and "isotropic-normal" in data["guides"]


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize(
    ("name", "kind", "component"),
    [
        ("custom_prior", "priors", "student-t"),
        ("custom_likelihood", "likelihoods", "cauchy"),
        ("custom_guide", "guides", "isotropic-normal"),
    ],
)
def test_examples_train_one_epoch(
    registries: dict[str, Registry[object]], name: str, kind: str, component: str
) -> None:
    module: ModuleType = load_plugin(EXAMPLES / f"{name}.py")
    assert module.__doc__ and "--plugin" in module.__doc__
    assert component in registries[kind]
    summary = module.main()
    assert math.isfinite(summary["test_elbo"]) and math.isfinite(summary["test_nll"])
    assert summary["test_nll"] < 150  # 64 pixels; an untrained Bernoulli VAE scores ~ 44


# --------------------------------------------------------------------------- plugins


def test_plugin_round_trip_through_the_cli(
    registries: dict[str, Registry[object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugin = EXAMPLES / "custom_likelihood.py"
    run = tmp_path / "run"
    with_plugin = ["--plugin", str(plugin)]
    train = ["train", "--out", str(run), "--likelihood", "cauchy:scale=0.2", "--binarize", "none"]
    assert main([*train, *FAST, *with_plugin]) == 0
    config = json.loads((run / "config.json").read_text())
    [record] = config["plugins"]
    assert record["kind"] == "likelihood" and record["name"] == "cauchy"
    assert record["file"] == str(plugin.resolve())
    evaluate = ["evaluate", str(run), "--num-samples", "5", "--num-points", "20"]
    assert main([*evaluate, *with_plugin]) == 0
    assert main(["sample", str(run), "--num", "4", *with_plugin]) == 0
    capsys.readouterr()

    forget(registries["likelihoods"], "cauchy")  # as in a new process without --plugin
    again = ["train", "--config", str(run), "--out", str(tmp_path / "again"), "--quiet"]
    for command in (evaluate, ["sample", str(run)], [*train[:3], "--resume", "--quiet"], again):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"--plugin {plugin.resolve()}" in err and "the likelihood 'cauchy'" in err
        assert "Traceback" not in err
    with pytest.raises(PluginError, match=r"custom_likelihood\.py"):
        load(run)
    assert "cauchy" not in registries["likelihoods"]  # nothing was imported unasked
    vae = load(run, plugins=[plugin])
    assert vae.sample(3).shape == (3, 1, 8, 8)


def test_a_module_imported_in_python_is_recorded_and_loads(
    registries: dict[str, Registry[object]], tmp_path: Path
) -> None:
    @PRIORS.register("laplace-test")
    class LaplacePrior(Prior):
        """Standard Laplace prior (a test's own class)."""

        def __init__(self, latent_dim: int, *, scale: float = 1.0) -> None:
            super().__init__()
            self.latent_dim, self.scale = latent_dim, scale

        def forward(self) -> dist.TorchDistribution:
            return dist.Laplace(torch.zeros(self.latent_dim), self.scale).to_event(1)

    config = VAEConfig(latent_dim=2, hidden=(8,), prior="laplace-test:scale=2")
    records = plugin_records(config)
    assert records == [
        {"kind": "prior", "name": "laplace-test", "module": __name__, "file": __file__}
    ]
    vae = VAE(config)
    save(vae, tmp_path)
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    torch.testing.assert_close(load(tmp_path).reconstruct(x), vae.reconstruct(x))
    forget(registries["priors"], "laplace-test")
    with pytest.raises(PluginError, match=re.escape(f"from file '{__file__}'")):
        load(tmp_path)


def test_plugin_errors(registries: dict[str, Registry[object]], tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="not an existing Python file"):
        load_plugin(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="RuntimeError: boom"):
        load_plugin(broken)
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from pyro_vae.models import LIKELIHOODS, Likelihood\n"
        "@LIKELIHOODS.register('beta')\n"
        "class Beta(Likelihood):\n    pass\n"
    )
    with pytest.raises(PluginError, match="a likelihood named 'beta' is already registered"):
        load_plugin(clash)
    # the same file twice: its classes replace themselves, nothing clashes
    first = load_plugin(EXAMPLES / "custom_prior.py")
    second = load_plugin(EXAMPLES / "custom_prior.py")
    assert PRIORS.entry("student-t").cls is second.StudentTPrior is not first.StudentTPrior


@pytest.mark.parametrize(
    ("field", "spec", "message"),
    [
        ("prior", "vampp", "unknown prior 'vampp'; valid prior names are: flow, learned-normal"),
        ("prior", "vamp:components=0", "prior 'vamp:components=0': components must be a"),
        ("likelihood", "normal:scale=-1", "likelihood 'normal:scale=-1': scale must be a"),
        ("guide", "lowrank:rank=two", "guide 'lowrank:rank=two': rank must be int, got 'two'"),
        ("guide", "iaf", "guide 'iaf': an IAF guide needs latent_dim >= 2, got 1"),
        ("network", "conv:chanels=3", "network 'conv' has no parameter 'chanels'; its param"),
    ],
)
def test_vae_config_checks_its_component_specs(field: str, spec: str, message: str) -> None:
    """The public boundary refuses a bad spec, naming the field, the valid and the given."""
    with pytest.raises(SpecError, match=re.escape(message)):
        VAEConfig(latent_dim=1, **{field: spec})  # type: ignore[arg-type]


def test_checking_specs_leaves_the_rng_and_the_data_shape_alone() -> None:
    """Priors and guides are built to check them, under a forked RNG; a network, whose size
    follows the data set's shape (set later), by name and parameters only."""
    state = torch.get_rng_state()
    VAEConfig(latent_dim=4, prior="flow:layers=3", guide="iaf", likelihood="normal-decoder")
    assert torch.equal(torch.get_rng_state(), state)
    VAEConfig(data_shape=(1, 8, 8), network="conv:channels=8")  # built for 28x28 later


def test_unknown_names_say_how_to_plug_in() -> None:
    with pytest.raises(SpecError, match=r"valid prior names are: .*load_plugin\('FILE'\)"):
        PRIORS.build("student-t", latent_dim=2)


def test_a_plugin_without_annotations_or_docstring_is_read_from_its_defaults(
    registries: dict[str, Registry[object]],
) -> None:
    """Unannotated keywords take their default's type; the summary is the class's own."""

    @PRIORS.register("laplace-test")
    class LaplacePrior(Prior):
        def __init__(self, latent_dim, *, b=1.0, shift=0, centred=False):  # type: ignore[no-untyped-def]
            super().__init__()
            self.latent_dim, self.b, self.shift, self.centred = latent_dim, b, shift, centred

        def forward(self) -> dist.TorchDistribution:
            loc = torch.full((self.latent_dim,), float(self.shift))
            return dist.Laplace(loc, self.b).to_event(1)

    prior = PRIORS.build("laplace-test:b=0.5,shift=2,centred=true", latent_dim=3)
    assert (prior.b, prior.shift, prior.centred) == (0.5, 2, True)
    assert type(prior.b) is float and type(prior.shift) is int
    assert PRIORS.entry("laplace-test").summary == "LaplacePrior"  # not the base class's text
    with pytest.raises(SpecError, match="b must be"):
        PRIORS.build("laplace-test:b=wide", latent_dim=3)
