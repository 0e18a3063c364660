"""The training step's fast path (pyro_vae.training.replay) against plain Pyro, same draws."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import VAE, VAEConfig
from pyro_vae.config import TrainConfig
from pyro_vae.data import Dataset
from pyro_vae.infer.objectives import build_objective
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.loop import Loop
from pyro_vae.training.replay import Replay, _fixed_dim

CONFIG = VAEConfig(data_shape=(1, 4, 4), latent_dim=3, hidden=(8,))


def _vae(config: VAEConfig = CONFIG) -> VAE:
    torch.manual_seed(0)
    return VAE(config).double()


def _data(n: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.4, dtype=torch.float64), generator=g)


def _loss_and_grads(
    loss_fn: Callable[[torch.Tensor], Any], vae: VAE, x: torch.Tensor, seed: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A loss tensor is differentiated here; a float comes from ``loss_and_grads``."""
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    loss = loss_fn(x)
    if isinstance(loss, torch.Tensor):
        loss.backward()
    loss = torch.as_tensor(loss, dtype=torch.float64).detach()
    return loss, [p.grad.clone() for p in vae.parameters() if p.grad is not None]


def _pyro_loss(elbo: Any, vae: VAE) -> Callable[[torch.Tensor], Any]:
    if hasattr(elbo, "differentiable_loss"):
        return lambda x: elbo.differentiable_loss(vae.model, vae.guide, x)
    return lambda x: elbo.loss_and_grads(vae.model, vae.guide, x)  # RenyiELBO


# Pyro's own classes where ours is a drop-in; for Renyi/IWAE our class run eagerly, whose
# equality with pyro.infer.RenyiELBO on the same draws is tests/infer/test_objectives.py's job.
REFERENCES: dict[str, Callable[[], Any]] = {
    "elbo": lambda: pyro.infer.Trace_ELBO(),
    "elbo-analytic": lambda: pyro.infer.TraceMeanField_ELBO(),
    "beta:beta=4": lambda: build_objective("beta:beta=4"),
    "iwae:k=5": lambda: build_objective("iwae:k=5"),
    "renyi:alpha=0.5,k=4": lambda: build_objective("renyi:alpha=0.5,k=4"),
}


@pytest.mark.parametrize("spec", list(REFERENCES))
def test_replay_gives_pyros_loss_and_gradients_on_the_same_draws(spec: str) -> None:
    """After recording, each replay (new data, new draws) equals plain Pyro's estimator."""
    vae = _vae()
    objective = build_objective(spec)
    replay = Replay(objective(vae.model, vae.guide), objective)
    reference = REFERENCES[spec]()
    with pyro.validation_enabled(False):
        # Renyi/IWAE guess max_plate_nesting by running the program on their first call; a
        # recording does that under a forked RNG, so the reference is warmed up first
        _pyro_loss(reference, vae)(_data())
        for step in range(3):  # step 0 records; steps 1 and 2 replay on other data and draws
            x = _data(seed=step)
            ours = _loss_and_grads(replay, vae, x, seed=10 + step)
            theirs = _loss_and_grads(_pyro_loss(reference, vae), vae, x, seed=10 + step)
            torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
            assert len(ours[1]) == len(theirs[1]) > 0
            for a, b in zip(ours[1], theirs[1], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert replay.recorded and not replay.eager, replay.eager


def test_replay_keeps_the_objectives_terms() -> None:
    vae = _vae()
    objective = build_objective("elbo")
    replay = Replay(objective(vae.model, vae.guide), objective)
    x = _data()
    with pyro.validation_enabled(False):
        for _ in range(2):
            pyro.set_rng_seed(3)
            loss = replay(x)
            terms = objective.last_terms
            torch.testing.assert_close(loss, terms["kl"] - terms["reconstruction"])
            pyro.set_rng_seed(3)
            objective.differentiable_loss(vae.model, vae.guide, x)
            torch.testing.assert_close(
                terms["reconstruction"], objective.last_terms["reconstruction"]
            )


def test_recording_does_not_consume_random_numbers() -> None:
    vae = _vae()
    objective = build_objective("elbo")
    replay = Replay(objective(vae.model, vae.guide), objective)
    pyro.set_rng_seed(5)
    with pyro.validation_enabled(False):
        replay(_data())  # records, checks, then replays
    after_replay = torch.rand(3)
    pyro.set_rng_seed(5)
    with pyro.validation_enabled(False):
        objective.differentiable_loss(vae.model, vae.guide, _data())
    torch.testing.assert_close(after_replay, torch.rand(3))


def test_each_batch_shape_is_recorded_once() -> None:
    vae = _vae()
    objective = build_objective("elbo")
    replay = Replay(objective(vae.model, vae.guide), objective)
    with pyro.validation_enabled(False):
        for n in (6, 6, 4, 6, 4):
            replay(_data(n))
    assert sorted(key[0][0] for key in replay.recorded) == [4, 6]


def test_an_objective_with_changing_host_state_runs_the_program(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The KL warm-up weight moves every epoch: a recording would freeze it."""
    vae = _vae()
    objective = build_objective("warmup:epochs=4")
    replay = Replay(objective(vae.model, vae.guide), objective)
    with (
        caplog.at_level(logging.INFO, logger="pyro_vae.training.replay"),
        pyro.validation_enabled(False),
    ):
        replay(_data())
    assert not replay.recorded
    assert "not declared replayable" in next(iter(replay.eager.values()))
    assert "runs the Pyro program" in caplog.text


class _BranchyLikelihood(torch.nn.Module):
    """A likelihood that reads the data into Python: a recording would freeze the branch."""

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > 0.5:  # data-dependent control flow
            logits = logits * 2.0
        return dist.Bernoulli(logits=logits).to_event(1).log_prob(x)


def test_a_program_that_reads_tensor_values_runs_eagerly() -> None:
    lik = _BranchyLikelihood()
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))

    def model(x: torch.Tensor) -> None:
        pyro.module("branchy", lik)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([4]).to_event(1))
            pyro.factor("x", lik(x, z + w))

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(w, 1.0).expand([x.shape[0], 4]).to_event(1))

    objective = build_objective("elbo")
    module = objective(model, guide)
    module.register_parameter("w", w)
    replay = Replay(module, objective)
    x = torch.bernoulli(torch.full((5, 4), 0.3, dtype=torch.float64))
    with pyro.validation_enabled(False):
        replay(x)
    assert not replay.recorded
    assert "reads a tensor into Python" in next(iter(replay.eager.values()))


def _train(replay: bool, epochs: int = 2) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    vae = _vae(VAEConfig(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,)))
    x = _data(n=23)  # batch 5: four full batches and one of 3 rows
    tc = TrainConfig(batch_size=5, binarize="none", replay=replay, epochs=epochs)
    pyro.set_rng_seed(0)
    loop = Loop(vae, fused_adam(list(vae.parameters()), 1e-2), torch.Generator(), tc, x, False)
    records = [loop.train_epoch(e)[0] for e in range(1, epochs + 1)]  # type: ignore[index]
    if replay:
        assert isinstance(loop.loss_fn, Replay) and len(loop.loss_fn.recorded) == 2
    return records, [p.detach().clone() for p in vae.parameters()]


def test_training_with_replay_equals_training_the_pyro_program() -> None:
    fast, slow = _train(replay=True), _train(replay=False)
    for a, b in zip(fast[0], slow[0], strict=True):
        for key in ("train_loss", "train_reconstruction", "train_kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-12), key
    for p, q in zip(fast[1], slow[1], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_training_a_dataset_end_to_end_uses_the_replay() -> None:
    from pyro_vae import RunConfig, fit

    x = _data(n=20).float()
    data = Dataset("tiny", train=x, valid=x[:4], test=x[:4])
    config = RunConfig(
        VAEConfig(hidden=(8,), latent_dim=2),
        TrainConfig(epochs=2, batch_size=8, binarize="none", eval_num_points=4, eval_num_samples=3),
    )
    off = RunConfig(config.vae, TrainConfig(**{**config.train.__dict__, "replay": False}))
    a = fit(config, dataset=data, write=False, progress=False)
    b = fit(off, dataset=data, write=False, progress=False)
    assert [r["train_loss"] for r in a.history] == pytest.approx(
        [r["train_loss"] for r in b.history], rel=1e-5
    )


def _scale_ops(graph: Any) -> list[str]:
    """The recorded operations that compute or apply a plate's scale (Pyro's files)."""
    lines = str(graph.inlined_graph).splitlines()
    pyro_scale = ("poutine/subsample_messenger.py", "distributions/util.py")
    return [
        line
        for line in lines
        if ("aten::mul" in line or "aten::div" in line) and any(f in line for f in pyro_scale)
    ]


def test_a_plate_sized_by_the_input_is_recorded_without_a_scale() -> None:
    """``pyro.plate("data", x.shape[0])``: a constant size per recording, so no tensor scale
    of 1.0 is computed and multiplied into each site's log-density every step."""
    vae = _vae()
    objective = build_objective("elbo")
    replay = Replay(objective(vae.model, vae.guide), objective)
    with pyro.validation_enabled(False):
        replay(_data())
    (graph,) = replay._graphs.values()
    assert not _scale_ops(graph)


def _subsampled_program(batch: int) -> tuple[Callable[..., None], Callable[..., None], Any]:
    """z ~ N(0, 1) per row of a plate over all of x's rows, subsampled to ``batch`` rows
    drawn by randperm: Pyro scales each site by len(x) / batch."""
    net = torch.nn.Linear(4, 2).double()

    def model(x: torch.Tensor) -> None:
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0], subsample_size=batch) as rows:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z[:, None], 1.0).to_event(1), obs=x[rows])

    def guide(x: torch.Tensor) -> None:
        pyro.module("net", net)
        with pyro.plate("data", x.shape[0], subsample_size=batch) as rows:
            h = net(x[rows])
            pyro.sample("z", dist.Normal(h[:, 0], h[:, 1].exp()))

    return model, guide, net


def test_a_subsampled_plate_replays_its_scale_and_its_draws() -> None:
    """A plate of 50 rows subsampled to 6 (scale 50/6, rows drawn by randperm each step): the
    replay draws the rows and the noise as the Pyro program does, step after step."""
    model, guide, net = _subsampled_program(batch=6)
    objective = build_objective("elbo")
    module = objective(model, guide)
    module.add_module("net", net)
    replay = Replay(module, objective)
    elbo = pyro.infer.Trace_ELBO()

    def pyros(x: torch.Tensor) -> torch.Tensor:
        return elbo.differentiable_loss(model, guide, x)

    x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pyro.validation_enabled(False):
        for step in range(3):
            ours = _loss_and_grads(replay, net, x, seed=20 + step)  # type: ignore[arg-type]
            theirs = _loss_and_grads(pyros, net, x, seed=20 + step)  # type: ignore[arg-type]
            torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
            for a, b in zip(ours[1], theirs[1], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert replay.recorded and not replay.eager, replay.eager


def test_only_sizes_fixed_by_the_input_shapes_become_numbers() -> None:
    seen: dict[str, Any] = {}

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen["input"] = _fixed_dim(x.shape[0])
        seen["reshaped"] = _fixed_dim(x.reshape(-1).shape[0])
        seen["value"] = _fixed_dim((x.sum() * 0 + 3).long())
        seen["number"] = _fixed_dim(7)
        return x * 2

    with warnings.catch_warnings():  # torch.jit.trace's deprecation notice (see replay.py)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(probe, (torch.ones(3, 2),), check_trace=False)
    assert seen["input"] == 3 and isinstance(seen["input"], int)
    assert isinstance(seen["reshaped"], torch.Tensor)  # left alone: not an input's size
    assert isinstance(seen["value"], torch.Tensor)  # a value, not a size
    assert seen["number"] == 7
    assert _fixed_dim(torch.tensor(4)) is not None  # not tracing: unchanged
