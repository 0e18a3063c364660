"""The training step captured as a CUDA graph (pyro_vae.training.cudagraph).

On the CPU: the flag and its check, the fallback with its recorded reason, and the
bookkeeping around a capture (the state put back after the reference step and the warm-up,
a new capture when the learning rate changes, the fallbacks when a capture raises or
disagrees, no host sync per step), with an eager stand-in for the CUDA calls. The tests
marked ``cuda`` run the real capture; they skip without a CUDA device, and
``benchmarks/gpu_check`` runs them (``pytest -m cuda``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import pytest
import torch
from cuda_helpers import steps_raise_on_host_sync
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_vae import VAE, RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.cli.main import main
from pyro_vae.cli.messages import to_flags
from pyro_vae.cli.parser import build_parser
from pyro_vae.cli.settings import run_config
from pyro_vae.config import ConfigError
from pyro_vae.data import Dataset, load_dataset
from pyro_vae.training.cudagraph import CudaCapture, CudaGraphs, unavailable
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.loop import Loop
from pyro_vae.training.replay import Replay
from pyro_vae.training.rundir import RESUME_OVERRIDES

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

HAVE_CUDA = torch.cuda.is_available()
CPU_REASON = "CUDA graphs need a CUDA device, and this run trains on cpu"


def _loop(device: str = "cpu", rows: int = 230, nan_rows: int = 0, **train: Any) -> Loop:
    """A small loop on digits: batches of 50, so 230 rows end with a batch of 30."""
    pyro.set_rng_seed(0)
    vae = VAE(VAEConfig(latent_dim=2, hidden=(8,), data_shape=(1, 8, 8))).to(device)
    train = {"batch_size": 50, "binarize": "dynamic", **train}
    tc = TrainConfig(epochs=3, **train)
    x = load_dataset("digits").train[:rows].clone()  # (rows, 1, 8, 8)
    if nan_rows:  # rows a Bernoulli likelihood scores as NaN: their steps are bad
        x = (x > 0.5).float()
        x[7 : 7 + nan_rows] = math.nan
    opt = fused_adam(list(vae.parameters()), tc.lr)
    gen = torch.Generator(device=device).manual_seed(0)
    return Loop(vae, opt, gen, tc, x.to(device), progress=False)


def _train(loop: Loop, epochs: int) -> tuple[list[dict[str, Any]], torch.Tensor]:
    records = []
    for epoch in range(1, epochs + 1):
        record, _ = loop.train_epoch(epoch) or ({}, {})
        records.append(record)
    loop.close()
    weights = torch.cat([p.detach().flatten() for p in loop.vae.parameters()])
    return records, weights.cpu()


# ------------------------------------------------------------------ the flag (CPU)


def test_cuda_graphs_is_a_checked_field_a_flag_and_a_resume_override(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert TrainConfig().cuda_graphs is False
    for bad in (1, "yes", None):
        with pytest.raises(ConfigError, match="cuda_graphs must be true or false"):
            TrainConfig(cuda_graphs=bad)  # type: ignore[arg-type]
    args = build_parser().parse_args(["train", "--cuda-graphs", "true"])
    assert run_config(args).train.cuda_graphs is True
    args = build_parser().parse_args(["train"])
    assert run_config(args).train.cuda_graphs is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "--cuda-graphs {true,false}" in capsys.readouterr().out
    assert "cuda_graphs" in RESUME_OVERRIDES  # how a run computes, not what: like its device


# ------------------------------------------------------------------ the fallback (CPU)


def test_on_the_cpu_the_ordinary_step_trains_and_the_reason_is_recorded() -> None:
    loop = _loop(cuda_graphs=True)
    assert loop.graphs is not None and loop.graphs.reason == CPU_REASON
    graphs, (plain, _) = _train(loop, 2), _train(_loop(), 2)
    assert graphs[0] == plain  # the same steps, to the bit
    assert loop.graphs.report() == f"not used: {CPU_REASON}" and not loop.graphs.captured


def test_fit_puts_whether_the_graphs_ran_in_the_summary() -> None:
    digits = load_dataset("digits", progress=False)
    data = Dataset("tiny", digits.train[:100], digits.valid[:50], digits.test[:50])
    vae = VAEConfig(latent_dim=2, hidden=(8,))
    small: dict[str, Any] = dict(epochs=1, batch_size=50, device="cpu", eval_num_samples=2)
    small["eval_num_points"] = 5
    on_config = RunConfig(vae, TrainConfig(cuda_graphs=True, **small))
    on = fit(on_config, dataset=data, write=False, progress=False)
    assert on.summary["cuda_graphs"] == f"not used: {CPU_REASON}"
    off = fit(RunConfig(vae, TrainConfig(**small)), dataset=data, write=False, progress=False)
    assert "cuda_graphs" not in off.summary  # the key only where the graphs were asked for
    assert off.history[0]["train_loss"] == on.history[0]["train_loss"]


def test_the_command_line_says_whether_the_graphs_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--epochs", "1", "--batch-size", "200", "--hidden", "8", "--latent-dim", "2"]
    flags += ["--eval-num-samples", "2", "--eval-num-points", "10", "--quiet", "--device", "cpu"]
    assert main(["train", *flags, "--cuda-graphs", "true", "--out", str(tmp_path / "r")]) == 0
    assert f"CUDA graphs: not used: {CPU_REASON}" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["cuda_graphs"] == f"not used: {CPU_REASON}"


def test_every_reason_for_no_capture_names_the_setting() -> None:
    loop = _loop()
    cuda = torch.device("cuda")  # a name only: nothing runs on it
    assert unavailable(torch.device("cpu"), loop.loss_fn, loop.opt) == CPU_REASON
    assert unavailable(cuda, loop.loss_fn, loop.opt) == ""
    assert "several processes (2)" in unavailable(cuda, loop.loss_fn, loop.opt, processes=2)
    off = unavailable(cuda, loop.module_loss, loop.opt)
    assert "replayed step" in off and to_flags(off).endswith("(--replay false)")
    warmup = _loop(objective="warmup:epochs=2")
    assert "not declared replayable" in unavailable(cuda, warmup.loss_fn, warmup.opt)
    plain = torch.optim.Adam(loop.vae.parameters())
    assert "fused Adam" in unavailable(cuda, loop.loss_fn, plain)


# ------------------------------------------------------------------ the bookkeeping (CPU)


class _EagerGraph:
    """A "graph" that runs the step again at each replay, into its static outputs: the
    metrics and the guard's flag. Like a real replay it runs no Python, so the flag the
    step's guard check appends is moved into the static flag the capture left behind."""

    def __init__(
        self, step: Callable[[], torch.Tensor], skew: float, pending: list[torch.Tensor]
    ) -> None:
        self.step, self.skew, self.pending = step, skew, pending
        self.out = torch.zeros(4, dtype=torch.float64)
        self.ok = torch.ones((), dtype=torch.bool)
        pending.append(self.ok)  # what the capture's one Python run of the check appends

    def replay(self) -> None:
        n = len(self.pending)
        out = self.step()
        self.ok.copy_(self.pending[n])
        del self.pending[n:]
        self.out.copy_(out + self.skew)


class EagerCapture(CudaCapture):
    """The CUDA calls of a capture, imitated on the CPU: what is checked is the state
    around them. ``fail`` makes the capture raise; ``skew`` makes the graph disagree."""

    def __init__(self, fail: bool = False, skew: float = 0.0) -> None:
        super().__init__(torch.device("cpu"))
        self.fail, self.skew = fail, skew
        self.warm_ups = self.captures = 0
        self.pending: list[torch.Tensor] = []  # the guard's unread flags (set by _stand_in)

    def rng_state(self) -> torch.Tensor:
        return torch.get_rng_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        torch.set_rng_state(state)

    def warm_up(self, step: Callable[[], Any], times: int) -> None:
        self.warm_ups += 1
        for _ in range(times):  # real steps: the state must be put back after them
            step()

    def capture(self, step: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        self.captures += 1
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        graph = _EagerGraph(step, self.skew, self.pending)
        return graph, graph.out


def _stand_in(loop: Loop, backend: EagerCapture) -> CudaGraphs:
    replay = loop.loss_fn if isinstance(loop.loss_fn, Replay) else None
    backend.pending = loop.guard.pending
    graphs = CudaGraphs(
        loop.step, loop.opt, loop.guard, loop.vae, loop.tc.batch_size, "", backend, replay
    )
    loop.graphs = graphs
    return graphs


def test_the_captured_path_takes_exactly_the_ordinary_steps() -> None:
    """A stand-in replay is the ordinary step, so any state the reference step or the three
    warm-up steps left behind (weights, Adam's moments, the guard's counters, the RNG)
    would show here as a different loss."""
    schedule: dict[str, Any] = dict(lr_schedule="burda", lr_stage_scale=0.1)  # a new rate an epoch
    loop = _loop(**schedule)
    backend = EagerCapture()
    graphs = _stand_in(loop, backend)
    captured = _train(loop, 3)
    plain = _train(_loop(**schedule), 3)
    assert captured[0] == plain[0]
    assert torch.equal(captured[1], plain[1])
    assert backend.captures == backend.warm_ups == 3  # once per learning rate
    assert graphs.captured == [((50, 1, 8, 8), torch.float32, 50)]
    assert graphs.report() == "used for batches (50, 1, 8, 8)"  # the last batch (30) is not


@pytest.mark.parametrize(
    ("backend", "why"),
    [
        (EagerCapture(fail=True), "the capture failed (RuntimeError: operation not permitted"),
        (EagerCapture(skew=1.0), "the graph's step gave"),
    ],
    ids=["capture-raises", "graph-disagrees"],
)
def test_a_capture_that_fails_or_disagrees_falls_back(backend: EagerCapture, why: str) -> None:
    loop = _loop()
    graphs = _stand_in(loop, backend)
    fell_back = _train(loop, 2)
    plain = _train(_loop(), 2)
    assert fell_back[0] == plain[0] and torch.equal(fell_back[1], plain[1])
    assert not graphs.captured and backend.captures == 1  # decided once per shape
    assert list(graphs.eager) == [((50, 1, 8, 8), torch.float32, 50)]
    assert next(iter(graphs.eager.values())).startswith(why)
    assert graphs.report().startswith(f"not used: not for batches (50, 1, 8, 8): {why}")


def test_a_nan_step_is_skipped_on_the_captured_path() -> None:
    """Rows scored as NaN make a bad step or two an epoch; the guard skips them alike."""
    captured_loop = _loop(nan_rows=2, on_nan="skip", binarize="none")
    _stand_in(captured_loop, EagerCapture())
    captured = _train(captured_loop, 2)
    plain = _train(_loop(nan_rows=2, on_nan="skip", binarize="none"), 2)
    assert all(r["skipped_steps"] >= 1 for r in captured[0])
    assert captured[0] == plain[0] and torch.equal(captured[1], plain[1])
    assert bool(torch.isfinite(captured[1]).all())


def test_a_loaded_optimizer_state_is_captured_anew() -> None:
    loop = _loop()
    backend = EagerCapture()
    _stand_in(loop, backend)
    loop.train_epoch(1)
    loop.opt.load_state_dict(loop.opt.state_dict())  # new state tensors: the graph's are stale
    loop.train_epoch(2)
    loop.close()
    assert backend.captures == 2


class _Reads(TorchDispatchMode):
    """Counts the host's reads of tensor values (see tests/training/test_host_sync.py)."""

    count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_a_captured_step_reads_nothing_back_to_the_host() -> None:
    loop = _loop()
    _stand_in(loop, EagerCapture())
    loop.train_epoch(1)  # captures
    x, perm = loop._data()
    with _Reads() as reads, pyro.validation_enabled(False):
        for idx in perm.split(loop.tc.batch_size):
            loop.train_step(x, idx)
    loop.close()
    assert reads.count == 0


# ------------------------------------------------------------------ on a GPU


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("objective", ["elbo", "iwae:k=5"])
def test_the_captured_step_matches_the_replayed_step_on_cuda(objective: str) -> None:
    """Same seed, three epochs, a new learning rate each (a new capture each): the same
    losses and weights as the eager replay, up to the last bits of the kernels."""
    train: dict[str, Any] = dict(objective=objective, lr_schedule="burda", lr_stage_scale=0.1)
    loop = _loop("cuda", cuda_graphs=True, **train)
    captured = _train(loop, 3)
    plain = _train(_loop("cuda", **train), 3)
    graphs = loop.graphs
    assert graphs is not None and graphs.captured, graphs and graphs.report()
    assert graphs.report().startswith("used for batches (50, 1, 8, 8)")
    for a, b in zip(captured[0], plain[0], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    torch.testing.assert_close(captured[1], plain[1], rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
def test_a_nan_step_is_skipped_under_capture_on_cuda() -> None:
    train: dict[str, Any] = dict(nan_rows=2, on_nan="skip", binarize="none")
    loop = _loop("cuda", cuda_graphs=True, **train)
    captured = _train(loop, 2)
    plain = _train(_loop("cuda", **train), 2)
    graphs = loop.graphs
    assert graphs is not None and graphs.captured, graphs and graphs.report()
    assert [r["skipped_steps"] for r in captured[0]] == [r["skipped_steps"] for r in plain[0]]
    assert all(r["skipped_steps"] >= 1 for r in captured[0])
    assert bool(torch.isfinite(captured[1]).all())
    torch.testing.assert_close(captured[1], plain[1], rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
def test_a_captured_step_makes_no_host_sync_on_cuda() -> None:
    loop = _loop("cuda", rows=250, cuda_graphs=True)
    loop.train_epoch(1)  # records the replay and captures the graph
    graphs = loop.graphs
    assert graphs is not None and graphs.captured, graphs and graphs.report()
    steps_raise_on_host_sync(loop)
    loop.close()


@pytest.mark.cuda
@pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")
def test_fit_says_the_graphs_ran_on_cuda(tmp_path: Path) -> None:
    vae = VAEConfig(latent_dim=2, hidden=(16,))
    tc = TrainConfig(
        epochs=2, out=str(tmp_path / "run"), cuda_graphs=True, seed=5, eval_num_samples=2
    )
    result = fit(RunConfig(vae, tc), progress=False)
    assert str(result.summary["cuda_graphs"]).startswith("used for batches (100, 1, 8, 8)")
