r"""A device-side guard against non-finite training steps, with no host synchronisation.

A training step is *bad* when its loss or its gradient is not finite. The guard decides this
on the device, after ``loss.backward()`` and before the optimizer step,

.. math::

    \mathrm{ok} = \mathrm{isfinite}\bigl(\mathcal{L} + \lVert \nabla_\theta \mathcal{L}
    \rVert_2\bigr),

one scalar test that fails when the loss or any gradient entry is NaN or infinite, or when
the gradient is so large that its squared norm overflows (then Adam's second moment
:math:`g^2` would overflow too). It then makes a bad step a no-op for the parameters *and*
the optimizer state, again without reading anything back to the host:

- with a fused optimizer (``torch.optim.Adam(..., fused=True)``, the trainer's default
  where torch supports it) through the optimizer's own ``found_inf`` input, the mechanism
  of ``torch.amp.GradScaler``: the fused kernel skips the update and the step count;
- with any other optimizer, in ``skip`` mode, by keeping a copy of the parameters and the
  optimizer state and selecting it back with ``torch.where`` (several extra passes over
  the parameters; state the step creates is zeroed, which for Adam is its fresh state).

It also keeps each step's ``ok`` flag (a device tensor; the host only holds a reference).
The host reads the flags (:meth:`StepGuard.poll`), one read for all the steps since the
last, only where the trainer synchronises anyway: when the progress bar refreshes (at most
twice a second) and at the end of each epoch, and counts there the in-epoch index of the
first bad step and how many steps were bad. Then it stops training (``on_nan="stop"``) and
names the step, or carries on (``on_nan="skip"``) until more than ``max_skipped_steps``
steps were skipped. A step thus costs the norm and one scalar test on the device, no
device-side counting (the counters were 9 scalar operations a step, as much CPU time as
the norm on a batch-32 MLP).
"""

from __future__ import annotations

import torch

__all__ = ["ON_NAN_MODES", "StepGuard", "fused_adam"]

ON_NAN_MODES = ("stop", "skip")


def fused_adam(
    params: list[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Adam:
    """Adam with ``fused=True`` where torch supports it for these parameters, else plain Adam.

    The fused kernel is what lets :class:`StepGuard` skip a bad step without a host sync.
    ``betas`` and ``eps`` are Adam's (Kingma & Ba 2015); the defaults are torch's.
    """
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a device without it
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


def _total_norm(grads: list[torch.Tensor], uniform: bool) -> torch.Tensor:
    """The 2-norm of all of ``grads``, as ``torch.nn.utils.get_total_norm`` computes it.

    ``uniform``: every gradient has one device and dtype, so the per-tensor norms go to
    ``torch._foreach_norm`` directly, without ``get_total_norm``'s grouping (Python work,
    about 20 us a step)."""
    foreach_norm = getattr(torch, "_foreach_norm", None)
    if uniform and foreach_norm is not None:
        return torch.linalg.vector_norm(torch.stack(foreach_norm(grads)))
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


class StepGuard:
    """Checks each step on the device and makes bad steps no-ops; see the module docstring.

    Use, once per step::

        loss.backward()
        ok = guard.check(loss)   # () bool tensor on the device
        guard.step(ok)           # optimizer.step(), a no-op when not ok
    """

    def __init__(self, optimizer: torch.optim.Optimizer, mode: str = "stop") -> None:
        if mode not in ON_NAN_MODES:
            raise ValueError(f"mode must be one of {ON_NAN_MODES}, got {mode!r}")
        self.optimizer, self.mode = optimizer, mode
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.uniform = len({(p.device, p.dtype) for p in self.params}) <= 1
        device = self.params[0].device if self.params else torch.device("cpu")
        self.done = 0  # steps this epoch whose flags were read
        self.first_bad = 0  # in-epoch index (1-based) of the first bad step; 0: none
        self.bad = 0  # bad steps this epoch
        self.pending: list[torch.Tensor] = []  # ok flags (device bools) not read yet
        self.fused = bool(optimizer.defaults.get("fused"))
        if self.fused:  # read by fused Adam/AdamW/SGD.step, as set by GradScaler
            self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
            optimizer.found_inf = self.found_inf  # type: ignore[attr-defined]

    def reset(self, done: int = 0, first_bad: int = 0, bad: int = 0) -> None:
        """Start an epoch with ``done`` steps already taken (a resumed partial epoch)."""
        self.done, self.first_bad, self.bad = done, first_bad, bad
        self.pending.clear()  # in place: a CUDA graph holds this list

    def tensors(self) -> list[torch.Tensor]:
        """The device tensors the guard updates in place each step (``found_inf``)."""
        return [self.found_inf] if self.fused else []

    def bookkeeping(self) -> tuple[int, int, int, int]:
        """``(done, first_bad, bad, pending)``: the host-side counts, to put back with
        :meth:`restore` (the unread flags are cut back to ``pending`` of them)."""
        return self.done, self.first_bad, self.bad, len(self.pending)

    def restore(self, bookkeeping: tuple[int, int, int, int]) -> None:
        """Put back what :meth:`bookkeeping` returned: steps checked since are forgotten."""
        self.done, self.first_bad, self.bad, n = bookkeeping
        del self.pending[n:]

    def check(self, loss: torch.Tensor) -> torch.Tensor:
        """Return whether the step's loss and gradient are finite (device bool); keep it."""
        grads = [p.grad for p in self.params if p.grad is not None]
        total = loss.detach()
        if grads:
            total = total + _total_norm(grads, self.uniform)
        ok = torch.isfinite(total)  # ()
        self.pending.append(ok)
        return ok

    def step(self, ok: torch.Tensor) -> None:
        """``optimizer.step()``, changing nothing where ``ok`` is False (see module docstring)."""
        if self.fused:
            torch.logical_not(ok, out=self.found_inf)  # 1.0 where the step is bad
            self.optimizer.step()
        elif self.mode == "stop":  # training stops at the next sync point; no copy needed
            self.optimizer.step()
        else:
            self._masked_step(ok)

    @torch.no_grad()
    def _masked_step(self, ok: torch.Tensor) -> None:
        state = self.optimizer.state
        kept = [p for p in self.params if p in state]
        tensors = self.params + [
            v for p in kept for v in state[p].values() if isinstance(v, torch.Tensor)
        ]
        before = [t.clone() for t in tensors]
        self.optimizer.step()
        for t, old in zip(tensors, before, strict=True):
            t.copy_(torch.where(ok, t, old))
        had = {id(p) for p in kept}  # by identity: `in` on a list of tensors compares values
        for p in self.params:  # state created by this step: zero it if the step was bad
            if id(p) not in had and p in state:
                for v in state[p].values():
                    if isinstance(v, torch.Tensor):
                        v.copy_(torch.where(ok, v, torch.zeros_like(v)))

    def poll(self) -> tuple[int, int]:
        """``(first_bad, bad)`` for this epoch; reads the flags of the steps since the last
        poll to the host (one synchronisation, none when no step was taken since)."""
        if self.pending:
            flags = torch.stack(self.pending).tolist()
            self.pending.clear()
            for i, ok in enumerate(flags, start=self.done + 1):
                if not ok:
                    self.bad += 1
                    self.first_bad = self.first_bad or i
            self.done += len(flags)
        return self.first_bad, self.bad
