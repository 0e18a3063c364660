r"""The semi-supervised VAE M2 (Kingma et al. 2014) trained on the embedded digits.

The enumerated objective (``elbo-enum``, Pyro's ``TraceEnum_ELBO``) must equal the sum
over the classes computed by hand on the same draws of z: for every point

.. math::

    \mathcal{U}(x) = \sum_y q(y|x)\,\bigl[\log p(x|y,z_y) + \log p(y) + \log p(z_y)
        - \log q(z_y|x,y) - \log q(y|x)\bigr],

with :math:`q(y|x)` pinned to the class for a labelled point, plus the classifier term
:math:`w \sum_{\mathrm{labelled}} \log q(y|x)`.
"""

from __future__ import annotations

import dataclasses
import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.config import ConfigError
from pyro_vae.data import DataError, Dataset, hide_labels, load_dataset
from pyro_vae.infer.objectives import EnumELBO, build_objective

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits_subset() -> Dataset:
    """The embedded digits, 300 training rows: a few steps of training."""
    d = load_dataset("digits", progress=False)
    assert d.train_labels is not None
    return dataclasses.replace(d, train=d.train[:300], train_labels=d.train_labels[:300])


@pytest.fixture(scope="module")
def trained() -> tuple[object, Dataset]:
    torch.set_num_threads(1)
    config = RunConfig(
        VAEConfig(latent_dim=2, hidden=(16,)),
        TrainConfig(labelled=30, epochs=1, batch_size=100, eval_num_points=8, eval_num_samples=2),
    )
    data = _digits_subset()
    return fit(config, dataset=data, progress=False, write=False), data


def test_labelled_alone_builds_m2_with_the_enumerated_objective(trained) -> None:
    result, _ = trained
    assert result.config.vae.semi_supervised and not result.config.vae.conditional
    assert result.config.vae.num_classes == 10
    assert result.config.train.objective == "elbo-enum"
    assert math.isfinite(result.history[-1]["train_elbo"])
    assert math.isfinite(result.summary["test_nll"])
    assert 0.0 <= result.summary["test_accuracy"] <= 1.0


def test_each_epoch_logs_the_classifiers_validation_accuracy(trained) -> None:
    """``valid_accuracy``: argmax_y q(y|x) on the valid rows against their labels, the same
    as :func:`accuracy` on the final weights."""
    from pyro_vae.data import evaluation_split
    from pyro_vae.training.summary import accuracy

    result, data = trained
    binarize = result.config.train.binarize  # as the run scored its valid rows
    valid_x, valid_y = evaluation_split(data, "valid", binarize), data.labels("valid")
    assert valid_y is not None
    expected, _ = accuracy(result.vae, valid_x, valid_y)
    assert result.history[-1]["valid_accuracy"] == pytest.approx(expected, abs=1e-12)


def test_enumerated_objective_is_the_sum_over_classes_by_hand(trained) -> None:
    result, data = trained
    vae = result.vae.double()
    x = data.test[:6].double().round()  # binary, as the Bernoulli likelihood scores
    y = torch.tensor([3, -1, -1, 7, -1, -1])
    weight = 2.5
    objective = EnumELBO(classifier_weight=weight)
    objective.loss(vae.model, vae.guide, x, y)  # Pyro guesses the plate nesting once
    pyro.set_rng_seed(7)
    loss = objective.differentiable_loss(vae.model, vae.guide, x, y)
    pyro.set_rng_seed(7)  # the same draws of z, one per class and point
    with poutine.trace() as tr, poutine.enum(first_available_dim=-2):
        vae.guide(x, y)
    z = tr.trace.nodes["z"]["value"]  # (C, N, L)
    by_hand = _by_hand(vae, x, y, z)
    torch.testing.assert_close(-loss.detach(), by_hand.sum() + weight * _log_q_known(vae, x, y))
    terms = objective.last_terms  # the true ELBO, without the classifier term
    torch.testing.assert_close(terms["reconstruction"] - terms["kl"], by_hand.sum())


def _by_hand(vae, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per point: the sum over classes c of q(c|x) [log p(x,c,z_c) - log q(z_c,c|x)]."""
    model, guide = vae.model, vae.guide
    classes = vae.config.num_classes
    log_q_y = guide.label_logits(x, y).log_softmax(-1)  # (N, C), pinned where labelled
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for c in range(classes):
        yc = torch.full((x.shape[0],), c)
        zc = z[c]  # (N, L)
        log_q_z = guide.posterior(guide.features(x, yc)).log_prob(zc)
        log_p_z = model.prior().log_prob(zc)
        log_p_x = model.likelihood(model.decoder(model.decoder_input(zc, yc))).log_prob(x)
        inner = log_p_x - math.log(classes) + log_p_z - log_q_z - log_q_y[:, c]
        total = total + log_q_y[:, c].exp() * inner
    return total.detach()


def _log_q_known(vae, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    log_q = vae.guide.class_logits(x).log_softmax(-1)
    known = (y >= 0).nonzero().squeeze(-1)
    return log_q[known, y[known]].sum().detach()


def test_log_likelihood_sums_the_class_exactly(trained) -> None:
    """log p(x) = logsumexp_y [log p(y) + log p(x|y)], each p(x|y) by importance sampling."""
    from pyro_vae import log_likelihood

    result, data = trained
    vae = result.vae.double()
    x = data.test[:4].double().round()
    k = 2000
    pyro.set_rng_seed(3)
    ll = log_likelihood(vae.model, vae.guide, x, num_samples=k)
    classes = vae.config.num_classes
    per_class = []
    for c in range(classes):
        yc = torch.full((x.shape[0],), c)
        q = vae.guide.posterior(vae.guide.features(x, yc))
        zc = q.sample((k,))  # (K, N, L)
        lw = (
            vae.model.likelihood(vae.model.decoder(vae.model.decoder_input(zc, yc))).log_prob(x)
            + vae.model.prior().log_prob(zc)
            - q.log_prob(zc)
        )
        per_class.append(lw.logsumexp(0) - math.log(k) - math.log(classes))
    exact = torch.stack(per_class).logsumexp(0)
    # two independent estimates with K = 2000 each (their spread here is ~0.05 nats); a
    # wrong sum over y (log p(y) = -log 10 dropped, one class only, chunk means) is > 1 nat
    torch.testing.assert_close(ll, exact, rtol=0, atol=0.2)


def test_hide_labels_keeps_balanced_classes_by_seed() -> None:
    y = torch.arange(200) % 10
    kept = hide_labels(y, 25, 10, seed=1)
    counts = torch.bincount(kept[kept >= 0], minlength=10)
    assert counts.tolist() == [3] * 5 + [2] * 5
    assert bool((kept[kept >= 0] == y[kept >= 0]).all())
    assert torch.equal(kept, hide_labels(y, 25, 10, seed=1))
    assert not torch.equal(kept, hide_labels(y, 25, 10, seed=2))
    with pytest.raises(DataError, match=r"TrainConfig\.labelled"):
        hide_labels(y, 201, 10, seed=0)


def test_labelled_all_is_the_conditional_vae_and_values_are_checked() -> None:
    config = RunConfig(train=TrainConfig(labelled="all"))
    assert config.vae.conditional and not config.vae.semi_supervised
    assert config.train.objective == "elbo"
    for bad in (0, -3, "some", 2.5):
        with pytest.raises(ConfigError, match="labelled"):
            TrainConfig(labelled=bad)
    with pytest.raises(ConfigError, match="alpha"):
        TrainConfig(alpha=-1.0)
    assert isinstance(build_objective("elbo-enum"), EnumELBO)


def test_a_data_set_without_labels_is_refused() -> None:
    d = load_dataset("digits", progress=False)
    plain = Dataset("plain", d.train[:50], d.valid[:10], d.test[:10])
    config = RunConfig(train=TrainConfig(labelled=10, epochs=1))
    with pytest.raises(DataError, match=r"TrainConfig.labelled .* has no labels"):
        fit(config, dataset=plain, progress=False, write=False)
