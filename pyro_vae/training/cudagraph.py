r"""The whole training step captured as one CUDA graph and replayed: one launch a step.

On a GPU a VAE step at batch 128 is over a hundred small kernels: the replayed forward
(:mod:`~pyro_vae.training.replay`), its backward, the step guard's gradient norm, the fused
Adam update and the step's metrics. Each launch costs the host microseconds, and at that
size the GPU finishes a kernel sooner than the host launches the next, so the step is bound
by launches, not by arithmetic. A CUDA graph records the kernels of one step once and
launches them all with one call; the host's work per step falls to copying the batch in
and that one call.

:class:`CudaGraphs` captures :meth:`pyro_vae.training.loop.Loop.step` on static buffers,
once per batch shape and learning rate (``TrainConfig(cuda_graphs=True)``):

.. code-block:: text

    capture (once)   x_static -> step (forward, backward, guard, Adam, metrics) -> out_static
    each step        x_static <- x[idx];  graph.replay();  read out_static

What a capture needs (PyTorch's notes on CUDA graphs), and how the step meets it:

- No host synchronisation. The step makes none (``tests/training/test_host_sync.py``): a
  bad step is decided on the device and skipped through the fused Adam's ``found_inf``
  (:mod:`~pyro_vae.training.guard`).
- Static shapes and memory. Each batch is copied into the buffer the graph reads. The
  gradients, made by ``backward`` during the capture, live in the graph's private memory
  pool and are rewritten in place by every replay, as are Adam's state and the guard's
  counters. Adam's state must exist before the capture (the warm-up makes it): state
  created inside a capture would be re-created, zeroed, at every replay. The learning rate
  is a Python float that the captured Adam kernel holds as a constant, so a graph is
  captured anew when a schedule changes it (once an epoch at most).
- No data-dependent control flow. The replay already refuses a program that reads a
  tensor's value into Python.
- Random numbers. The draws come from the default CUDA generator (Philox, counter-based).
  A draw inside a capture records its offset within the graph; each replay reads the
  generator's offset and advances it by the graph's total, so a replay draws exactly what
  the ordinary step would draw at that point of the run.

Only batches of ``TrainConfig.batch_size`` rows are captured. An epoch's last, smaller
batch runs the ordinary (replayed) step: it is one step an epoch, and a graph of its own
would cost a second warm-up, capture and memory pool. No row is dropped, so an epoch sees
the same rows and the same draws with or without graphs.

Like the replay, it falls back to the ordinary step and records why (``CudaGraphs.reason``
for the whole run, ``CudaGraphs.eager`` per batch shape, :meth:`CudaGraphs.report`,
which :func:`~pyro_vae.training.fit.fit` puts in the summary as ``cuda_graphs``):

- not on a CUDA device, under several processes, with the replay off, with an objective
  that is not declared replayable, or with an optimizer other than the fused Adam;
- the step of this shape is not replayed (the replay runs the Pyro program for it);
- the warm-up or the capture raised (e.g. an operation that a capture forbids);
- the graph's first step differs from the ordinary step's on the same state and draws.

The first step of a batch shape runs the ordinary step from the state S (weights, Adam's
state, the guard's counters, buffers, RNGs) and keeps its result; puts S back; runs three
ordinary steps on a side stream to warm up (lazy initialisation: library handles and
workspaces, the replay's profiling runs, Adam's state) and puts S back; captures the step
on that stream; and replays the graph once from S. If that replay agrees with the kept
result it is the step taken, and every later batch of the shape replays the graph.

References:

- NVIDIA, *CUDA C++ Programming Guide*, section "CUDA Graphs".
- PyTorch documentation, *CUDA semantics*, section "CUDA Graphs" (whole-network capture,
  constraints, graph memory management), and ``torch.cuda.graph``.
- V. Nguyen, M. Carilli, S. B. Eryilmaz, V. Singh, M. Lin, N. Gimelshein, A. Desmaison and
  E. Yang, "Accelerating PyTorch with CUDA Graphs", PyTorch blog, 2021.
- J. K. Salmon, M. A. Moraes, R. O. Dror and D. E. Shaw, "Parallel random numbers: as easy
  as 1, 2, 3", SC 2011 (Philox).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pyro_vae.training.guard import StepGuard
from pyro_vae.training.replay import Replay, replayable

if TYPE_CHECKING:  # the loop builds a CudaGraphs from itself; no import at run time
    from pyro_vae.training.loop import Loop

__all__ = ["WARMUP_STEPS", "CudaCapture", "CudaGraphs", "StepFn", "unavailable"]

log = logging.getLogger(__name__)

# Loop.step: (this rank's rows, their labels, the global batch's rows) -> (4,) metrics
StepFn = Callable[[torch.Tensor, tuple[torch.Tensor, ...], int], torch.Tensor]
_Key = tuple[Any, ...]
WARMUP_STEPS = 3  # ordinary steps on the capture's stream before it (PyTorch's example: 3)


def unavailable(
    device: torch.device, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, processes: int = 1
) -> str:
    """Why no step of this run can be captured; ``''`` when a capture may be tried."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, and this run trains on {device.type}"
    if not hasattr(torch.cuda, "CUDAGraph"):
        return "this PyTorch has no torch.cuda.CUDAGraph"
    if processes > 1:
        return f"the step is not captured under several processes ({processes})"
    if not isinstance(loss_fn, Replay):
        return "CUDA graphs capture the replayed step, which is off (TrainConfig(replay=False))"
    if not replayable(loss_fn.objective):
        return f"objective {type(loss_fn.objective).__name__} is not declared replayable"
    if not optimizer.defaults.get("fused"):
        return "CUDA graphs need the fused Adam (pyro_vae.training.guard.fused_adam)"
    return ""


class CudaCapture:
    """The CUDA calls of a capture in one place: RNG state, warm-up, capture.

    The CPU tests stand an eager imitation in for it, to check the bookkeeping around it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream: Any = None  # the side stream of the warm-up and the capture

    def rng_state(self) -> torch.Tensor:
        """The device generator's state (seed and Philox offset)."""
        return torch.cuda.get_rng_state(self.device)

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Put the device generator's state back."""
        torch.cuda.set_rng_state(state, self.device)

    def warm_up(self, step: Callable[[], Any], times: int) -> None:
        """Run ``step`` ``times`` times on a side stream, the one the capture will use."""
        self.stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for _ in range(times):
                step()
        current.wait_stream(self.stream)

    def capture(self, step: Callable[[], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        """``(graph, outputs)``: ``step`` captured (not run) on the warm-up's stream."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=self.stream):
            out = step()
        return graph, out


@dataclass
class _Captured:
    """One batch shape's graph, the static buffers it reads and writes, and what it holds."""

    graph: Any  # torch.cuda.CUDAGraph: .replay()
    x: torch.Tensor  # the batch is copied in here
    labels: tuple[torch.Tensor, ...]
    out: torch.Tensor  # (4,) the step's metrics, rewritten by each replay
    lrs: tuple[float, ...]  # the learning rates captured (constants in the Adam kernel)
    state: Any  # the optimizer's state dict whose tensors it updates (a loaded one is new)
    grads: list[torch.Tensor | None]  # the gradients in the graph's pool, kept alive
    ok: torch.Tensor  # () the guard's flag of the step, rewritten by each replay
    pending: list[torch.Tensor]  # the guard's unread flags: each replay adds a copy of ok

    def run(self, xb: torch.Tensor, labels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Copy the batch in, replay, return a copy of the metrics (no host sync)."""
        self.x.copy_(xb)
        for static, y in zip(self.labels, labels, strict=True):
            static.copy_(y)
        self.graph.replay()
        self.pending.append(self.ok.clone())  # the guard reads it at its next poll
        return self.out.clone()


class _State:
    """What a step changes, copied, to be put back: weights, Adam's state, the guard's
    counters, buffers and the RNGs. Tensors created after the copy (Adam's state at its
    first step) are put back as zeros, Adam's fresh state."""

    def __init__(self, graphs: CudaGraphs) -> None:
        self.graphs = graphs
        self.tensors = graphs.state_tensors()
        self.saved = [t.detach().clone() for t in self.tensors]
        self.guard = graphs.guard.bookkeeping()  # its unread flags are host-side
        self.rng = (torch.get_rng_state(), graphs.backend.rng_state())

    def restore(self) -> None:
        known = {id(t): s for t, s in zip(self.tensors, self.saved, strict=True)}
        with torch.no_grad():
            for t in self.graphs.state_tensors():
                saved = known.get(id(t))
                t.copy_(saved) if saved is not None else t.zero_()
        self.graphs.guard.restore(self.guard)
        torch.set_rng_state(self.rng[0])
        self.graphs.backend.set_rng_state(self.rng[1])


class CudaGraphs:
    """``step(xb, labels, rows)`` with each full batch shape's step captured and replayed.

    Call it as the step: it returns the ``(4,)`` metrics and takes the step, by the graph
    or, where it falls back, by ``step`` itself. ``captured`` lists the batch shapes that
    replay a graph; ``eager`` says why a shape runs the ordinary step; ``reason`` (not
    empty) why no step is captured at all. See the module docstring.
    """

    def __init__(
        self,
        step: StepFn,
        optimizer: torch.optim.Optimizer,
        guard: StepGuard,
        module: nn.Module,
        rows: int,
        reason: str = "",
        backend: CudaCapture | None = None,
        replay: Replay | None = None,
    ) -> None:
        self.step, self.optimizer, self.guard, self.module = step, optimizer, guard, module
        self.rows = rows  # only batches of this many rows are captured
        self.reason = reason or ("" if backend is not None else "no capture backend was given")
        self.backend: Any = backend
        self.replay = replay  # the replayed loss, asked whether a shape is replayed
        self._graphs: dict[_Key, _Captured] = {}
        self.eager: dict[_Key, str] = {}  # batch shape -> why it runs the ordinary step
        if self.reason:
            log.info("training steps are not captured as CUDA graphs: %s", self.reason)

    @classmethod
    def for_loop(cls, loop: Loop) -> CudaGraphs:
        """The graphs of ``loop``'s step, or the reason there can be none (e.g. on the CPU)."""
        reason = unavailable(loop.device, loop.loss_fn, loop.opt, loop.world.world_size)
        backend = None if reason else CudaCapture(loop.device)
        replay = loop.loss_fn if isinstance(loop.loss_fn, Replay) else None
        return cls(
            loop.step, loop.opt, loop.guard, loop.vae, loop.tc.batch_size, reason, backend, replay
        )

    @property
    def captured(self) -> list[_Key]:
        """The batch shapes whose step replays a graph."""
        return list(self._graphs)

    def report(self) -> str:
        """Whether the graphs were used, and why not: the run's ``cuda_graphs`` summary."""
        if self.reason:
            return f"not used: {self.reason}"
        shapes = "; ".join(f"not for batches {k[0]}: {why}" for k, why in self.eager.items())
        if not self._graphs:
            return f"not used: {shapes}" if shapes else "not used: no full batch was trained"
        used = ", ".join(str(k[0]) for k in self._graphs)
        return f"used for batches {used}" + (f"; {shapes}" if shapes else "")

    def forget(self) -> None:
        """Drop every graph and its memory (a graph is also captured anew by itself when the
        learning rate changes, or when a checkpoint loaded into the optimizer replaced the
        state tensors that the graph updates)."""
        self._graphs.clear()

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors a step changes in place: weights, Adam's state, the guard's, buffers."""
        state = self.optimizer.state
        adam = [
            v
            for p in self.guard.params
            if p in state
            for v in state[p].values()
            if isinstance(v, torch.Tensor)
        ]
        return [*self.guard.params, *adam, *self.guard.tensors(), *self.module.buffers()]

    def __call__(
        self, xb: torch.Tensor, labels: tuple[torch.Tensor, ...], rows: int
    ) -> torch.Tensor:
        if self.reason or xb.shape[0] != self.rows:  # e.g. an epoch's last, smaller batch
            return self.step(xb, labels, rows)
        key = (tuple(xb.shape), xb.dtype, *(tuple(y.shape) for y in labels), rows)
        if key in self.eager:
            return self.step(xb, labels, rows)
        found = self._graphs.get(key)
        if found is not None and found.lrs == self._lrs() and found.state is self.optimizer.state:
            return found.run(xb, labels)
        # a new learning rate, or a loaded optimizer state: free the old graph, capture anew
        self._graphs.pop(key, None)
        return self._first(key, xb, labels, rows)

    def _lrs(self) -> tuple[float, ...]:
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)

    def _first(
        self, key: _Key, xb: torch.Tensor, labels: tuple[torch.Tensor, ...], rows: int
    ) -> torch.Tensor:
        """The first step of a shape (or learning rate): capture, check, and take it."""
        saved = _State(self)
        want = self.step(xb, labels, rows).detach().clone()  # the ordinary step, to compare
        after = [p.detach().clone() for p in self.guard.params]
        why = self.replay.why_eager(xb, *labels) if self.replay is not None else ""
        if why:  # the ordinary step ran the Pyro program: it stands as the step taken
            self._fall_back(key, f"the step is not replayed ({why})")
            return want
        saved.restore()
        try:
            found = self._capture(xb, labels, rows, saved)
            got = found.run(xb, labels)  # from the same state and draws as `want`
        except Exception as e:  # any failure means: the ordinary step
            saved.restore()
            self._fall_back(key, f"the capture failed ({type(e).__name__}: {str(e)[:200]})")
            return self.step(xb, labels, rows)
        params = self.guard.params
        gaps = [(p.detach() - a).abs().max() for p, a in zip(params, after, strict=True)]
        moved = float(torch.stack(gaps).max()) if gaps else 0.0  # how far the weights differ
        same = torch.allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
        if not same or not moved <= 1e-5:
            saved.restore()
            self._fall_back(
                key,
                f"the graph's step gave {got.tolist()} and weights up to {moved:.3g} away from "
                f"the ordinary step's, which gave {want.tolist()}",
            )
            return self.step(xb, labels, rows)
        self._graphs[key] = found
        log.info("training steps on batches %s replay a CUDA graph", key[0])
        return got

    def _capture(
        self,
        xb: torch.Tensor,
        labels: tuple[torch.Tensor, ...],
        rows: int,
        saved: _State,
    ) -> _Captured:
        """Warm up and capture the step on static copies of the batch; then put ``saved``
        back (the warm-up's steps are undone, but Adam's state they created stays, zeroed)."""
        x, ys = xb.detach().clone(), tuple(y.detach().clone() for y in labels)
        self.backend.warm_up(lambda: self.step(x, ys, rows), WARMUP_STEPS)
        groups = self.optimizer.param_groups
        capturable = [g.get("capturable", False) for g in groups]
        for g in groups:  # torch refuses to capture an optimizer not marked capturable
            g["capturable"] = True
        try:
            self.optimizer.zero_grad(set_to_none=True)  # backward makes them in the graph's pool
            graph, out = self.backend.capture(lambda: self.step(x, ys, rows))
        finally:
            for g, flag in zip(groups, capturable, strict=True):
                g["capturable"] = flag
        ok = self.guard.pending[-1]  # the flag the captured guard check writes
        saved.restore()  # what the warm-up changed (the capture itself ran nothing)
        grads = [p.grad for p in self.guard.params]
        return _Captured(
            graph, x, ys, out, self._lrs(), self.optimizer.state, grads, ok, self.guard.pending
        )

    def _fall_back(self, key: _Key, why: str) -> None:
        self.eager[key] = why
        log.info("training steps on batches %s run without a CUDA graph: %s", key[0], why)
