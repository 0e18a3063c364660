r"""The training step's fast path: run the Pyro program once, replay its recorded graph.

A step of SVI runs the model and the guide under Pyro's effect handlers: every ``pyro.sample``
walks the handler stack, builds a trace, and the ELBO walks the traces again. On a small
network that bookkeeping costs as much as the arithmetic (about 1 ms a step on 2 CPU cores for
a 784-400-50 MLP, 20-25 % of a batch-32 step). None of it changes from one step to the next:
for a fixed batch shape the same sites are sampled in the same order, so the ELBO estimate is
the same sequence of tensor operations every time, only the data and the noise differ.

:class:`Replay` records that sequence once per input shape with :func:`torch.jit.trace`
(running the ordinary Pyro program, model and guide unchanged) and replays it afterwards. The
recorded graph keeps the random draws as operations (``aten::normal`` and friends), so every
replay draws fresh noise from the same global RNG, in the same order, as the Pyro program would;
it shares the modules' parameters, so gradients land where the optimizer expects them. The
loss and gradients equal the Pyro program's on the same random draws (``tests/test_replay.py``).

When the recording cannot be trusted, the step runs the Pyro program (eager) instead, decided
once per input shape:

- the objective does not declare itself replayable (``replayable = True``): an objective whose
  loss depends on host-side state that changes during training (a KL warm-up weight that moves
  every epoch) would be frozen by a recording;
- tracing raised, or warned that a Python value was read from a tensor (a ``TracerWarning``:
  data-dependent control flow that a recording would freeze);
- the replay's value differs from the Pyro program's on the same random draws.

Two things are recorded as the per-shape constants they are, with the same numbers as the
program: Gaussian noise as ``empty(shape).normal_()`` (``_eager_standard_normal``), and a
plate sized by an input's shape as a number (``_input_sized_plates``), so Pyro does not
multiply every log-density by a recorded tensor scale of 1.0.

``torch.jit.trace`` is deprecated in favour of ``torch.export``/``torch.compile``. It is used
because it is the one executor that replays a graph without Python and without a compiler: on
this workload ``torch.export`` graphs ran at 0.8-0.95x the hand-written PyTorch loop (Python
dispatch of ~100 ATen calls), ``torch.compile`` at 0.4x (guards and recompiles on Pyro's
code), and the trace at 1.05-1.1x (``benchmarks/results/speed.md``). If a later PyTorch
removes it, every step simply runs eager.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.poutine.subsample_messenger import SubsampleMessenger
from torch import nn

__all__ = ["Replay", "replayable"]

log = logging.getLogger(__name__)

_Key = tuple[Any, ...]
_TORCH_DIR = Path(torch.__file__).resolve().parent


def replayable(objective: pyro.infer.ELBO) -> bool:
    """Whether ``objective`` declares its loss a pure function of tensors (see module doc)."""
    return bool(getattr(objective, "replayable", False)) and hasattr(objective, "last_terms")


class _Terms(nn.Module):
    """The loss module's estimate, the objective's two true terms and the step's metrics.

    Returns ``loss`` (``()``, with its gradient), ``terms`` (``(2,)``: reconstruction and
    KL, detached) and ``values`` (``(4,)`` float64: loss, reconstruction, KL and rows,
    detached), all of the batch: a recording computes the training loop's per-step metrics
    inside the graph, where an operation costs a fraction of a Python call.
    """

    def __init__(self, loss_module: nn.Module, objective: pyro.infer.ELBO) -> None:
        super().__init__()
        self.loss_module = loss_module
        self.objective = objective

    def forward(
        self, x: torch.Tensor, *labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss = self.loss_module(x, *labels)  # ()
        last = self.objective.last_terms  # type: ignore[attr-defined]
        terms = torch.stack([last["reconstruction"], last["kl"]]).detach()  # (2,)
        rows = torch.full_like(terms[0], x.shape[0])  # ()
        values = torch.stack([loss.detach(), terms[0], terms[1], rows]).double()  # (4,)
        return loss, terms, values


class Replay(nn.Module):
    """``loss_module(x, *labels)`` with each input shape's step recorded once and replayed.

    Call it as the loss module: it returns the objective's estimate (the negative ELBO
    summed over the rows) and sets ``objective.last_terms`` as the Pyro program would.
    ``recorded`` and ``eager`` name the input shapes that replay or run the program.
    After a replayed call, ``last_values`` holds the batch's ``(4,)`` float64 metrics
    (loss, reconstruction, KL, rows; what :meth:`~pyro_vae.training.loop.Loop.train_step`
    sums); after a call that ran the program it is ``None``.
    """

    def __init__(self, loss_module: nn.Module, objective: pyro.infer.ELBO) -> None:
        super().__init__()
        self.terms = _Terms(loss_module, objective)
        self.objective = objective
        self._graphs: dict[_Key, Any] = {}  # input shape -> traced module
        self.eager: dict[_Key, str] = {}  # input shape -> why it runs the Pyro program
        self.last_values: torch.Tensor | None = None  # (4,) float64 metrics of the last replay

    @property
    def recorded(self) -> list[_Key]:
        """The input shapes whose step is replayed, in the order they were recorded."""
        return list(self._graphs)

    def why_eager(self, x: torch.Tensor, *labels: torch.Tensor) -> str:
        """Why inputs shaped like ``x`` run the Pyro program; ``''`` if replayed or not seen yet."""
        return self.eager.get(_key(x, labels), "")

    def forward(self, x: torch.Tensor, *labels: torch.Tensor) -> torch.Tensor:
        key = _key(x, labels)
        graph = self._graphs.get(key)
        if graph is None and key not in self.eager:
            graph = self._record(key, x, labels)
        if graph is None:
            self.last_values = None
            return self.terms.loss_module(x, *labels)  # type: ignore[no-any-return]
        loss, terms, self.last_values = graph(x, *labels)
        self.objective.last_terms = {"reconstruction": terms[0], "kl": terms[1]}  # type: ignore[attr-defined]
        return loss  # type: ignore[no-any-return]

    def _record(self, key: _Key, x: torch.Tensor, labels: tuple[torch.Tensor, ...]) -> Any:
        why = self._try_record(key, x, labels)
        if why:
            self.eager[key] = why
            log.info("training step runs the Pyro program for inputs %s: %s", key, why)
        return self._graphs.get(key)

    def _try_record(self, key: _Key, x: torch.Tensor, labels: tuple[torch.Tensor, ...]) -> str:
        if not replayable(self.objective):
            return f"objective {type(self.objective).__name__} is not declared replayable"
        if not hasattr(torch.jit, "trace"):
            return "this PyTorch has no torch.jit.trace"
        devices = [x.device] if x.device.type == "cuda" else []
        buffers = [b.detach().clone() for b in self.terms.buffers()]
        # recording consumes no random numbers and leaves every buffer (a counter, running
        # statistics) as it found it: the step that follows is the one the program would take
        with torch.random.fork_rng(devices=devices):
            try:
                graph = _trace(self.terms, x, labels)
            except Exception as e:  # any failure means: run the program
                return f"tracing failed ({type(e).__name__}: {str(e)[:200]})"
            finally:
                _restore(self.terms, buffers)
            if isinstance(graph, str):
                return graph
            with torch.no_grad():
                with torch.random.fork_rng(devices=devices):  # its draws are undone after
                    want = self.terms(x, *labels)[2]  # (4,) the program's loss, terms, rows
                _restore(self.terms, buffers)
                got = graph(x, *labels)[2]  # (4,) its replay, on the same draws
                _restore(self.terms, buffers)
        if not torch.allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True):
            return f"the replay gave {got.tolist()}, the Pyro program {want.tolist()}"
        self._graphs[key] = graph
        return ""


def _restore(module: nn.Module, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for b, value in zip(module.buffers(), saved, strict=True):
            b.copy_(value)


def _key(x: torch.Tensor, labels: tuple[torch.Tensor, ...]) -> _Key:
    return (tuple(x.shape), x.dtype, str(x.device), *(tuple(y.shape) for y in labels))


def _trace(module: nn.Module, x: torch.Tensor, labels: tuple[torch.Tensor, ...]) -> Any:
    """``torch.jit.trace(module)``, or a string saying why the recording is not trusted."""
    with (
        warnings.catch_warnings(record=True) as caught,
        _eager_standard_normal(),
        _input_sized_plates(),
    ):
        warnings.simplefilter("always")
        graph = torch.jit.trace(module, (x, *labels), check_trace=False)
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            if _in_torch(w.filename):
                continue
            return f"{w.filename}:{w.lineno} reads a tensor into Python ({str(w.message)[:120]})"
        if "is deprecated" not in str(w.message):  # torch.jit.trace's own deprecation notice
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return graph


def _in_torch(filename: str) -> bool:
    """A tracer warning raised by PyTorch's own shape checks, which a per-shape recording
    keeps valid (e.g. ``binary_cross_entropy_with_logits`` comparing sizes)."""
    return Path(filename).resolve().is_relative_to(_TORCH_DIR)


# the torch.distributions modules that draw Gaussian noise with utils._standard_normal
_NORMAL_MODULES = (
    "utils",
    "normal",
    "multivariate_normal",
    "lowrank_multivariate_normal",
    "studentT",
)


def _draw_standard_normal(
    shape: Sequence[int], dtype: torch.dtype | None, device: torch.device | None
) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device).normal_()


@contextmanager
def _eager_standard_normal() -> Iterator[None]:
    """Record Gaussian noise as eager code draws it, ``torch.empty(shape).normal_()``.

    Under tracing, torch draws it as ``torch.normal(zeros, ones)`` (an old JIT workaround):
    a replay would fill two tensors every step and check ``std >= 0`` with a host read
    (``std.min().ge(0).item()``, a device synchronisation on a GPU). The recorded
    ``normal_`` draws the same numbers from the same RNG as the Pyro program.
    """
    original = importlib.import_module("torch.distributions.utils")._standard_normal
    patched = []
    for name in _NORMAL_MODULES:
        module = importlib.import_module(f"torch.distributions.{name}")
        if getattr(module, "_standard_normal", None) is original:
            vars(module)["_standard_normal"] = _draw_standard_normal
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            vars(module)["_standard_normal"] = original


@contextmanager
def _input_sized_plates() -> Iterator[None]:
    """Record a ``pyro.plate`` sized by an input's shape (``x.shape[0]``) with its size as a number.

    Under tracing that size is a tensor, so Pyro scales every site in the plate by the tensor
    ``size / subsample_size`` (1.0 without subsampling): four scalar operations a site, and a
    multiplication of each log-density, with its backward, in every replayed step. A recording
    is made per input shape, for which such a size is a constant; given as a number, Pyro
    leaves an unscaled site unscaled. Sizes of any other origin stay as they are.
    """
    original = SubsampleMessenger.__dict__["_subsample"]  # a staticmethod

    def subsample(name: str, size: Any = None, subsample_size: Any = None, *rest: Any) -> Any:
        size, subsample_size = _fixed_dim(size), _fixed_dim(subsample_size)
        size, subsample_size, indices = original.__func__(name, size, subsample_size, *rest)
        return size, _fixed_dim(subsample_size), indices  # the length of arange(size)

    SubsampleMessenger._subsample = staticmethod(subsample)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        SubsampleMessenger._subsample = original  # type: ignore[method-assign]


def _fixed_dim(size: Any) -> Any:
    """``size`` as an int if, traced, it is fixed by the recording's input shapes: the size
    of an input, or of ``arange(n)`` with ``n`` a constant. Else ``size`` unchanged."""
    get_value_trace = getattr(torch._C, "_get_value_trace", None)
    if (
        not isinstance(size, torch.Tensor)
        or not torch._C._get_tracing_state()
        or not get_value_trace
    ):
        return size
    try:
        node = get_value_trace(size).node()  # prim::NumToTensor(aten::size(tensor, dim))
        source = node.inputsAt(0).node() if node.kind() == "prim::NumToTensor" else node
        of = source.inputsAt(0).node() if source.kind() == "aten::size" else None
        fixed = of is not None and (
            of.kind() == "prim::Param"
            or (of.kind() == "aten::arange" and of.inputsAt(0).node().kind() == "prim::Constant")
        )
    except (RuntimeError, AttributeError, IndexError):  # an untraced value, another tracer
        return size
    if not fixed:
        return size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # constant per recording
        return int(size)
