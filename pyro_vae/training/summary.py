r"""The scores of a trained VAE: mean ELBO terms over a split, and the test summary of a run.

:func:`mean_terms` averages the ELBO and its two terms over the rows of a split,

.. math::

    \frac{1}{N}\sum_{n=1}^{N} \Bigl(\mathbb{E}_{q(z|x_n)}[\log p(x_n|z)]
        - \mathrm{KL}\bigl(q(z|x_n)\,\|\,p(z)\bigr)\Bigr),

in nats per data point (the validation metrics of every epoch). :func:`summarize` scores
the test split once at the end of training: those terms over the whole split, and the
importance-weighted negative log-likelihood of Burda et al. (2015) on a seeded subset of
``TrainConfig.eval_num_points`` rows with ``TrainConfig.eval_num_samples`` samples each
(:func:`~pyro_vae.infer.importance.log_likelihood`).
"""

from __future__ import annotations

from typing import Any

import torch

from pyro_vae.config import TrainConfig
from pyro_vae.data import Dataset, evaluation_split, split_labels
from pyro_vae.infer.decomposition import elbo_terms
from pyro_vae.infer.importance import PointEstimateError, log_likelihood
from pyro_vae.training.distributed import World, all_reduce_sum
from pyro_vae.vae import VAE

__all__ = ["accuracy", "mean_terms", "summarize", "valid_scores"]


def mean_terms(
    vae: VAE,
    x: torch.Tensor,
    batch_size: int = 1000,
    world: World | None = None,
    y: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean ELBO, reconstruction and KL over ``x`` (nats per data point), in chunks.

    ``y`` holds the labels ``(N,)`` of a conditional VAE. Under several processes each rank
    scores its share ``x[rank::world_size]`` and the sums are added across ranks.
    """
    world = world or World()
    device = next(vae.parameters()).device  # x may wait in host memory (see fit.data_home)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    xs, ys = world.share(x), None if y is None else world.share(y)
    with torch.no_grad():
        for i, xb in enumerate(xs.split(batch_size)):
            rows = slice(i * batch_size, i * batch_size + xb.shape[0])
            labels = () if ys is None else (ys[rows].to(device, non_blocking=True),)
            xb = xb.to(device, non_blocking=True)  # (b, *data_shape); a no-op when there
            t = elbo_terms(vae.model, vae.guide, xb, *labels)
            parts = (t["elbo"], t["reconstruction"], t["kl"])
            sums += torch.stack([v.double().sum() for v in parts])
    elbo, recon, kl = (all_reduce_sum(sums, world) / x.shape[0]).tolist()
    return {"elbo": elbo, "reconstruction": recon, "kl": kl}


def accuracy(
    vae: VAE, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> tuple[float, torch.Tensor]:
    r"""The accuracy of M2's classifier q(y|x) on ``x`` and its predicted classes ``(N,)``.

    The prediction is the most probable class, :math:`\arg\max_y q(y|x)`, scored in chunks.
    """
    device = next(vae.parameters()).device
    with torch.no_grad():
        guess = torch.cat(
            [vae.guide.class_logits(xb.to(device)).argmax(-1).cpu() for xb in x.split(batch_size)]
        )
    return float((guess == y.cpu()).double().mean()), guess


def valid_scores(
    vae: VAE, x: torch.Tensor, world: World | None = None, y: torch.Tensor | None = None
) -> dict[str, float]:
    """An epoch's validation scores: :func:`mean_terms`, and for M2 its ``accuracy``.

    ``y`` holds the split's labels: a conditional VAE is scored given them; the
    semi-supervised VAE sums y out of its ELBO and scores its classifier q(y|x) on them
    (the correct guesses added across ranks, each rank scoring its share).
    """
    world = world or World()
    if not (vae.config.semi_supervised and y is not None):
        return mean_terms(vae, x, world=world, y=y)
    scores = mean_terms(vae, x, world=world)
    ys = world.share(y)
    _, guess = accuracy(vae, world.share(x), ys)
    device = next(vae.parameters()).device
    right = torch.tensor([(guess == ys.cpu()).sum(), len(ys)], dtype=torch.float64, device=device)
    correct, total = all_reduce_sum(right, world).tolist()
    scores["accuracy"] = correct / total if total else float("nan")
    return scores


def summarize(
    vae: VAE,
    dataset: Dataset,
    tc: TrainConfig,
    device: torch.device,
    home: torch.device | None = None,
) -> dict[str, Any]:
    """Test ELBO terms over the whole test split and the IW NLL on a seeded subset.

    The test split is kept at ``home`` (default ``device``) and scored in chunks on ``device``.
    The guide's draws come from a generator seeded with ``tc.seed`` and forked from the
    global one, so the summary of a run is the same whether or not it was resumed.
    """
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(tc.seed)
        return _summarize(vae, dataset, tc, device, home or device)


def _summarize(
    vae: VAE, dataset: Dataset, tc: TrainConfig, device: torch.device, home: torch.device
) -> dict[str, Any]:
    test_x = evaluation_split(dataset, "test", tc.binarize).to(home)
    test_y = split_labels(dataset, "test", vae.config.conditional)
    test_y = None if test_y is None else test_y.to(home)
    terms = mean_terms(vae, test_x, y=test_y)
    summary: dict[str, Any] = {f"test_{k}": v for k, v in terms.items()}
    truth = dataset.labels("test")
    if vae.config.semi_supervised and truth is not None:  # M2: q(y|x) against the labels
        summary["test_accuracy"], _ = accuracy(vae, test_x, truth)
    num_points = min(tc.eval_num_points, test_x.shape[0])
    if num_points <= 0:
        return summary
    idx = torch.randperm(test_x.shape[0], generator=torch.Generator().manual_seed(0))
    idx = idx[:num_points].to(test_x.device)
    labels = () if test_y is None else (test_y[idx].to(device),)
    try:
        ll = log_likelihood(
            vae.model, vae.guide, test_x[idx].to(device), *labels, num_samples=tc.eval_num_samples
        )
    except PointEstimateError:  # a Delta guide: no importance-weighted bound exists
        summary["point_estimate"] = True  # test_elbo reads log p(x|z*) + log p(z*)
        return summary
    summary.update(
        test_nll=-float(ll.mean()),
        nll_num_samples=tc.eval_num_samples,
        nll_num_points=num_points,
    )
    return summary
