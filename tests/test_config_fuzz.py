"""Property tests of the config parser: arbitrary TOML text or bytes give a clear
:class:`ConfigError` or a correct load, never a crash inside tomllib, numpy or torch; and
every registered component refuses bad parameters with a message, never a crash."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyro_vae import VAE, VAEConfig
from pyro_vae.config import MAX_SIZE, ConfigError, RunConfig, TrainConfig, load_toml
from pyro_vae.guides import GUIDES
from pyro_vae.models import LIKELIHOODS, PRIORS
from pyro_vae.nn import NETWORKS
from pyro_vae.registry import Registry, SpecError

FIELDS = {
    "vae": [f.name for f in dataclasses.fields(VAEConfig)],
    "train": [f.name for f in dataclasses.fields(TrainConfig)],
}


def _literal(value: Any) -> str:
    """A TOML literal for a scalar or a list (a tiny writer; tomllib has none)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    return "[" + ", ".join(_literal(v) for v in value) + "]"


SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
VALUES = SCALARS | st.lists(st.integers(-3, 300) | st.floats(), max_size=3)
TABLES = st.dictionaries(
    st.sampled_from(FIELDS["vae"] + FIELDS["train"] + ["bogus", "lr "]), VALUES, max_size=5
)


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f'"{k}" = {_literal(v)}' for k, v in table.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["vae", "train", "model"]), TABLES, max_size=3))
def test_structured_toml_loads_exactly_or_is_refused(
    tmp_path_factory: pytest.TempPathFactory, sections: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(_toml(sections), encoding="utf-8")
    try:
        config = load_toml(path)
    except ConfigError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert isinstance(config, RunConfig)
    for name, table in sections.items():
        for key, value in table.items():  # a correct load: every given value, as given
            got = getattr(getattr(config, name), key)
            want = tuple(value) if isinstance(value, list) else value
            assert got == want or (isinstance(got, float) and got == float(want))
    _build(config.vae)  # and what loads, builds


def _build(config: VAEConfig) -> VAE:
    """Build the VAE as ``fit`` would (``num_classes`` comes from the data), on the meta
    device: torch computes and checks every shape, and no memory is allocated."""
    if config.conditional:
        config = dataclasses.replace(config, num_classes=3)
    with torch.device("meta"):
        vae = VAE(config)
    assert vae.config == config
    return vae


EDGES = [0, -1, MAX_SIZE, MAX_SIZE + 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**70]
SIZE = st.integers(1, 64) | st.sampled_from(EDGES) | st.integers(-(2**70), 2**70)
HUGE = 2**62  # torch: "Storage size calculation overflowed" for a layer this wide


@settings(max_examples=40, deadline=None, database=None)
@given(
    latent=SIZE,
    hidden=st.lists(SIZE, max_size=2),
    upper=st.lists(SIZE, max_size=1),
    upper_hidden=st.lists(SIZE, min_size=1, max_size=1),
)
@example(latent=HUGE, hidden=[8], upper=[], upper_hidden=[8])
@example(latent=2, hidden=[HUGE, HUGE], upper=[], upper_hidden=[8])
@example(latent=2, hidden=[MAX_SIZE + 1], upper=[], upper_hidden=[8])
@example(latent=2, hidden=[8], upper=[HUGE], upper_hidden=[8])
@example(latent=2, hidden=[8], upper=[3], upper_hidden=[HUGE])
@example(latent=2, hidden=[MAX_SIZE, MAX_SIZE], upper=[3], upper_hidden=[MAX_SIZE])
def test_sizes_are_refused_at_the_boundary_or_build(
    tmp_path_factory: pytest.TempPathFactory,
    latent: int,
    hidden: list[int],
    upper: list[int],
    upper_hidden: list[int],
) -> None:
    """Sizes up to 2**70 (and <= 0): refused by the config with a message, or the model is
    built with exactly those sizes, never a crash inside torch (``Storage size calculation
    overflowed``). A size above MAX_SIZE is refused, so no build is ever skipped."""
    table = {
        "latent_dim": latent,
        "hidden": hidden,
        "upper_latent_dims": upper,
        "upper_hidden": upper_hidden,
    }
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(_toml({"vae": table}), encoding="utf-8")
    sizes = [latent, *hidden, *upper, *upper_hidden]
    try:
        config = load_toml(path)
    except ConfigError as e:
        assert min(sizes) <= 0 or max(sizes) > MAX_SIZE, e
        reasons = ("must be a positive int", "must hold positive ints", f"at most {MAX_SIZE}")
        assert any(r in str(e) for r in (*reasons, "must fit in a 64-bit int")), e
        return
    assert min(sizes) > 0 and max(sizes) <= MAX_SIZE
    vae = _build(config.vae)
    shapes = {n for p in vae.parameters() for n in p.shape}
    shapes |= {n for b in vae.buffers() for n in b.shape}
    used = [latent, *hidden, *upper, *(upper_hidden if upper else [])]  # upper_hidden: only
    assert set(used) <= shapes  # between layers above z; every layer as wide as asked


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_load_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        assert isinstance(load_toml(path), RunConfig)


def test_deeply_nested_toml_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("a = " + "[" * 3000 + "]" * 3000)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(tmp_path / "c.toml")


# --------------------------------------------------------------------------- components


def _numeric_params() -> list[tuple[str, str, str]]:
    out = []
    for field, registry in (("prior", PRIORS), ("likelihood", LIKELIHOODS), ("guide", GUIDES)):
        for entry in registry:
            for key, (kind, _default) in entry.params.items():
                if kind in (int, float):
                    out.append((field, entry.name, key))
    return out


@pytest.mark.parametrize(("field", "name", "key"), _numeric_params(), ids=lambda v: v)
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e400"])
def test_component_parameters_are_validated(field: str, name: str, key: str, value: str) -> None:
    """Any numeric parameter of any registered component: it builds, or says why not.

    A bad value is refused by the config itself (VAEConfig checks its specs), never later.
    """
    spec = f"{name}:{key}={value}"
    try:
        config = VAEConfig(latent_dim=2, hidden=(8,), **{field: spec})
    except SpecError as e:
        assert key in str(e) and f"{field} {spec!r}" in str(e)
        return
    VAE(config)


def _all_parts() -> list[tuple[str, str]]:
    pairs: list[tuple[str, Registry[Any]]] = [
        ("prior", PRIORS),
        ("likelihood", LIKELIHOODS),
        ("guide", GUIDES),
        ("network", NETWORKS),
    ]
    return [(field, name) for field, registry in pairs for name in registry.names()]


@pytest.mark.parametrize(("field", "name"), _all_parts(), ids=lambda v: v)
def test_extreme_parameters_give_finite_elbo_terms(field: str, name: str) -> None:
    """Scales are bounded away from zero (and parameterizations are stable) by construction:
    with every weight set to +-10, the ELBO terms of data in the likelihood's support stay
    finite. An unbounded scale such as exp(raw) over- or underflows here."""
    from pyro_vae import elbo_terms

    torch.manual_seed(0)
    try:
        vae = VAE(VAEConfig(latent_dim=2, hidden=(16,), **{field: name})).double()
    except (SpecError, ConfigError) as e:  # e.g. a conv network made for 28x28 images
        pytest.skip(f"{field} {name!r} does not build for 8x8 data: {e}")
    with torch.no_grad():
        z = vae.model.prior().sample((8,))
        x = vae.model.likelihood(vae.model.decoder(z)).sample()  # (8, *data_shape), in support
        for p in vae.parameters():
            p.copy_(10.0 * torch.randn_like(p).sign())
        terms = elbo_terms(vae.model, vae.guide, x)
    for key in ("reconstruction", "kl", "elbo"):
        assert torch.isfinite(terms[key]).all(), (key, terms[key])


@pytest.mark.parametrize(
    ("field", "spec", "message"),
    [
        ("guide", f"iaf:hidden={2**62}", "is too large to build: torch cannot hold its tensors"),
        ("prior", f"mixture:components={2**62}", "is too large to build"),
        ("guide", f"lowrank:rank={2**63 - 1}", "is too large to build"),
        ("guide", f"iaf:hidden={2**70}", "hidden must fit in a 64-bit int"),
    ],
)
def test_component_sizes_torch_cannot_hold_are_refused_by_the_config(
    field: str, spec: str, message: str
) -> None:
    """A size parameter whose tensors torch cannot even size is a SpecError naming the spec,
    not torch's RuntimeError (or TypeError) from inside the component."""
    with pytest.raises(SpecError, match=f"{field} '{spec}'") as info:
        VAEConfig(latent_dim=2, hidden=(8,), **{field: spec})
    assert message in str(info.value)
