"""Tests of the table likelihood (models/likelihoods/tabular.py): each column part against
scipy's density, masking, and a table VAE with every prior, guide family and objective."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats
from table_helpers import run_cli, train_table_run, write_table

from pyro_vae import VAE, RunConfig, TrainConfig, VAEConfig, elbo_terms, fit
from pyro_vae.data import TableSchema, load_dataset
from pyro_vae.models.likelihoods import COLUMNS, LIKELIHOODS, TableDistribution

pytestmark = pytest.mark.usefixtures("one_thread")

RAW = torch.tensor([[0.3, -1.2], [-0.7, 0.4], [1.5, 2.0]], dtype=torch.float64)


def _scale(part: torch.nn.Module) -> float:
    return float(part.scale().detach())  # type: ignore[operator]


def test_real_column_is_scipys_normal() -> None:
    part = COLUMNS.build("real").double()
    v = torch.tensor([[0.1], [-2.0], [3.0]], dtype=torch.float64)
    expected = stats.norm(RAW[:, 0].numpy(), _scale(part)).logpdf(v[:, 0].numpy())
    np.testing.assert_allclose(part.log_prob(RAW[:, :1], v).detach().numpy(), expected)


def test_positive_column_is_scipys_lognormal_in_the_raw_unit() -> None:
    part = COLUMNS.build("positive").double()
    shift, scale = 3.0, 0.4  # the column's standardization of log x
    x = np.array([12.0, 25.0, 40.0])
    v = torch.tensor((np.log(x) - shift) / scale)[:, None]
    mu, sigma = RAW[:, 0].numpy(), _scale(part)
    # p(x) = p(v) / (s x): the Jacobian of v = (log x - m) / s
    ours = part.log_prob(RAW[:, :1], v).detach().numpy() - math.log(scale) - np.log(x)
    expected = stats.lognorm(s=sigma * scale, scale=np.exp(shift + scale * mu)).logpdf(x)
    np.testing.assert_allclose(ours, expected)


def test_count_column_is_scipys_negative_binomial() -> None:
    part = COLUMNS.build("count")
    k = torch.tensor([[0.0], [3.0], [11.0]], dtype=torch.float64)
    m = torch.nn.functional.softplus(RAW[:, 0]).numpy() + 1e-6
    r = torch.nn.functional.softplus(RAW[:, 1]).numpy() + 1e-3
    expected = stats.nbinom(n=r, p=r / (r + m)).logpmf(k[:, 0].numpy())
    np.testing.assert_allclose(part.log_prob(RAW, k).numpy(), expected, rtol=1e-6)


def test_poisson_column_is_scipys_poisson() -> None:
    part = COLUMNS.build("poisson")
    k = torch.tensor([[0.0], [3.0], [11.0]], dtype=torch.float64)
    rate = torch.nn.functional.softplus(RAW[:, 0]).numpy() + 1e-6
    np.testing.assert_allclose(
        part.log_prob(RAW[:, :1], k).numpy(), stats.poisson(rate).logpmf(k[:, 0].numpy())
    )


def test_binary_column_is_scipys_bernoulli() -> None:
    part = COLUMNS.build("binary")
    b = torch.tensor([[1.0], [0.0], [1.0]], dtype=torch.float64)
    p = torch.sigmoid(RAW[:, 0]).numpy()
    np.testing.assert_allclose(
        part.log_prob(RAW[:, :1], b).numpy(), stats.bernoulli(p).logpmf(b[:, 0].numpy())
    )


def test_categorical_column_is_scipys_multinomial_of_one() -> None:
    part = COLUMNS.build("categorical:levels=3")
    logits = torch.tensor([[0.1, 2.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    onehot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    p = torch.softmax(logits, -1).numpy()
    expected = [stats.multinomial(1, p[i]).logpmf(onehot[i].numpy()) for i in range(2)]
    np.testing.assert_allclose(part.log_prob(logits, onehot).numpy(), expected)


def _likelihood() -> torch.nn.Module:
    return LIKELIHOODS.build("table:columns=real.count.categorical3", data_shape=(8,))


def test_a_missing_cell_contributes_nothing() -> None:
    likelihood = _likelihood()
    raw = torch.randn(4, likelihood.num_outputs)
    x = torch.tensor([[0.5, 2.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]]).expand(4, -1).clone()
    full = likelihood(raw).column_log_prob(x)
    x[:, 6] = 0.0  # the count is missing ...
    x[:, 1] = 123.0  # ... and whatever its block holds is ignored
    masked = likelihood(raw).column_log_prob(x)
    assert bool((masked[:, 1] == 0).all())
    torch.testing.assert_close(masked[:, [0, 2]], full[:, [0, 2]])
    torch.testing.assert_close(likelihood(raw).log_prob(x), full[:, 0] + full[:, 2])


def test_elbo_with_a_missing_cell_is_the_elbo_without_that_entry_by_hand() -> None:
    """Same draw of z: the ELBO of a row with its count missing equals log p(x_obs|z) summed
    by hand over the observed cells only, minus KL(q(z|x) || p(z)) (closed form here)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    spec = "table:columns=real.count.categorical3"
    vae = VAE(VAEConfig(data_shape=(8,), latent_dim=2, hidden=(16,), likelihood=spec))
    x = torch.tensor([[0.5, 2.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])  # the count is missing
    pyro.set_rng_seed(3)
    terms = elbo_terms(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    q, z = guide_trace.nodes["z"]["fn"], guide_trace.nodes["z"]["value"]
    raw = vae.model.decoder(z)  # (1, 1 + 2 + 3): real, count (2 outputs), categorical
    parts = vae.model.likelihood.parts
    by_hand = parts[0].log_prob(raw[:, :1], x[:, 0:1]) + parts[2].log_prob(raw[:, 3:6], x[:, 2:5])
    kl = torch.distributions.kl_divergence(q, vae.model.prior())
    with torch.no_grad():
        torch.testing.assert_close(terms["reconstruction"], by_hand)
        torch.testing.assert_close(terms["elbo"], by_hand - kl)


def test_draws_and_means_fill_every_cell() -> None:
    likelihood = _likelihood()
    d = likelihood(torch.randn(5, likelihood.num_outputs))
    assert isinstance(d, TableDistribution)
    for x in (d.sample(), d.mean):
        assert x.shape == (5, 8) and bool((x[:, -3:] == 1).all())
    assert d.sample(torch.Size([2])).shape == (2, 5, 8)
    assert bool((d.sample()[:, 2:5].sum(-1) == 1).all())


COMBOS = [
    ("normal", "normal", "elbo"),
    ("mixture", "full", "iwae:k=3"),
    ("vamp", "iaf", "elbo"),
    ("normal", "lowrank", "dreg:k=2"),
    ("flow", "normal", "stl"),
]


@pytest.mark.parametrize(("prior", "guide", "objective"), COMBOS)
def test_every_prior_guide_and_objective_trains_on_a_table(
    tmp_path: Path, prior: str, guide: str, objective: str
) -> None:
    data = write_table(tmp_path / "t.csv", n=40)
    config = RunConfig(
        vae=VAEConfig(latent_dim=2, hidden=(16,), prior=prior, guide=guide),
        train=TrainConfig(
            dataset=str(data),
            epochs=1,
            batch_size=16,
            objective=objective,
            eval_num_samples=3,
            out=str(tmp_path / "run"),
        ),
    )
    result = fit(config, progress=False)
    assert result.config.vae.likelihood.startswith("table:columns=real.positive.count")
    assert result.config.train.binarize == "none"
    assert math.isfinite(result.summary["test_elbo"])
    assert (tmp_path / "run" / "schema.json").is_file()


def test_another_likelihood_on_a_table_is_refused(tmp_path: Path) -> None:
    data = write_table(tmp_path / "t.csv", n=20)
    config = RunConfig(
        vae=VAEConfig(likelihood="normal"), train=TrainConfig(dataset=str(data), epochs=1)
    )
    with pytest.raises(Exception, match="likelihood='table'"):
        fit(config, progress=False, write=False)


def test_sample_round_trips_names_types_and_labels(tmp_path: Path) -> None:
    run = train_table_run(tmp_path)
    out = tmp_path / "synth.csv"
    code, said, err = run_cli("sample", str(run), "--num", "50", "--out", str(out))
    assert code == 0, err
    assert "no missing cells" in said
    synth = pd.read_csv(out, keep_default_na=False)
    schema = TableSchema.load(run)
    assert list(synth.columns) == schema.names
    assert synth["colour"].isin(["red", "green", "blue"]).all()
    assert synth["smoker"].isin([0, 1]).all() and synth["visits"].dtype.kind == "i"
    assert (synth["weight"] > 0).all() and synth["height"].dtype.kind == "f"
    assert not (synth == "").any().any()
    again = load_dataset(out, schema=";".join(f"{c.name}={c.type}" for c in schema.columns))
    assert again.table is not None
    assert [c.type for c in again.table.columns] == [c.type for c in schema.columns]


def test_evaluate_reports_the_reconstruction_per_column(tmp_path: Path) -> None:
    run = train_table_run(tmp_path)
    code, said, err = run_cli("evaluate", str(run), "--num-samples", "5", "--psis-samples", "100")
    assert code == 0, err
    assert "reconstruction per column" in said and "colour" in said
    import json

    result = json.loads((run / "eval.json").read_text())
    per_column = result["reconstruction_per_column"]
    assert list(per_column) == ["height", "weight", "visits", "smoker", "colour"]
    assert all(v <= 0 or name in ("height", "weight") for name, v in per_column.items())


def test_extreme_weights_give_finite_elbo_terms_on_a_table() -> None:
    """As tests/test_config_fuzz.py does for every part: weights of +-10, data in support."""
    torch.manual_seed(0)
    spec = "table:columns=real.positive.count.binary.categorical3"
    vae = VAE(VAEConfig(data_shape=(12,), latent_dim=2, hidden=(16,), likelihood=spec)).double()
    with torch.no_grad():
        z = vae.model.prior().sample((8,))
        x = vae.model.likelihood(vae.model.decoder(z)).sample()
        x[::2, -2] = 0.0  # some cells missing
        for p in vae.parameters():
            p.copy_(10.0 * torch.randn_like(p).sign())
        terms = elbo_terms(vae.model, vae.guide, x)
    for key in ("reconstruction", "kl", "elbo"):
        assert torch.isfinite(terms[key]).all(), (key, terms[key])
