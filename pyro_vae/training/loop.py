r"""The training loop: batch, loss, guard, step, log; one epoch at a time.

Read it top to bottom. :func:`train` runs the epochs: each trains
(:meth:`Loop.train_epoch`), scores the valid split, appends the epoch's metrics and replaces
the checkpoint. :meth:`Loop.train_epoch` walks the epoch's batches, and
:meth:`Loop.train_step` is one step:

.. code-block:: text

    batch   xb = x[idx]                          this rank's rows of the global batch
    loss    loss = -ELBO(xb) / B                  nats per data point
    guard   ok = isfinite(loss + |grad|)          on the device, no host sync
    step    Adam, a no-op where not ok
    log     sums += (loss, reconstruction, KL, rows), read by the host twice a second

Everything stays on the device: the data are moved there once (see
:func:`~pyro_vae.training.fit.data_home`), batches are indexed there and the metrics summed
there. The host reads the device only when the progress bar refreshes and at the end of
each epoch (``Loop._log``), which is also where the step guard's record is acted on: a
bad step raises :class:`~pyro_vae.training.errors.BadStepError`, and :meth:`Loop.explain_fault`
replays the epoch up to it. Ctrl-C sets ``Loop.stop_requested`` (a host flag) and the
epoch returns after the current step (:mod:`pyro_vae.training.stops`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyro
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pyro_vae.config import TrainConfig
from pyro_vae.data import dynamic_binarize
from pyro_vae.infer.objectives import batch_terms, build_objective
from pyro_vae.training.checkpoint import CheckpointError, write_tensors
from pyro_vae.training.cudagraph import CudaGraphs
from pyro_vae.training.devices import check_devices
from pyro_vae.training.distributed import World, all_reduce_sum, gather_rng_states
from pyro_vae.training.earlystop import EarlyStop
from pyro_vae.training.epochlog import EpochLog
from pyro_vae.training.errors import BadStepError
from pyro_vae.training.guard import StepGuard
from pyro_vae.training.nonfinite import StepReport, explain_step
from pyro_vae.training.replay import Replay
from pyro_vae.training.runstate import Partial, Position, Stateful, capture, restore
from pyro_vae.training.schedules import learning_rate
from pyro_vae.training.stops import interrupted, nonfinite_error, stop_on_ctrl_c
from pyro_vae.training.summary import valid_scores
from pyro_vae.vae import VAE

__all__ = ["Loop", "train"]

Batch = tuple[torch.Tensor, tuple[torch.Tensor, ...]]  # (rows, labels of a conditional VAE)


def train(
    loop: Loop,
    run_dir: Path | None,
    history: list[dict[str, Any]],
    valid_x: torch.Tensor,
    valid_y: torch.Tensor | None = None,
    on_epoch: Callable[[dict[str, float], VAE], None] | None = None,
) -> EarlyStop:
    """Train from the loop's position to ``TrainConfig.epochs``, appending to ``history``.

    Each epoch trains, scores the valid rows ``valid_x`` (labels ``valid_y``: a conditional
    VAE's, or M2's, whose classifier is scored as ``valid_accuracy``), logs to ``run_dir``
    and checkpoints there (``None``: nothing is written), then calls ``on_epoch``. With
    ``TrainConfig.early_stop`` it stops once the validation ELBO has not improved for that
    many epochs (:mod:`~pyro_vae.training.earlystop`); returns its :class:`EarlyStop` state.
    """
    log = EpochLog(loop, run_dir, history)  # metrics, checkpoints, early stopping
    loop.show_position()
    with stop_on_ctrl_c(loop):
        try:
            for epoch in range(loop.position.epochs_done + 1, loop.tc.epochs + 1):
                if log.early.exhausted:
                    loop.note(log.early.message())
                    break
                result = loop.train_epoch(epoch)
                if result is None:  # Ctrl-C during the epoch
                    raise interrupted(loop, run_dir)
                record, timing = result
                scores = valid_scores(loop.vae, valid_x, loop.world, valid_y)
                record.update({f"valid_{k}": v for k, v in scores.items()})
                log.add(record, timing)
                if on_epoch is not None and loop.world.is_main:
                    on_epoch(record, loop.vae)
                if loop.stop_requested:  # Ctrl-C while scoring or writing
                    raise interrupted(loop, run_dir)
        except BadStepError as fault:
            raise nonfinite_error(loop, fault, loop.explain_fault(fault), run_dir) from None
        finally:
            loop.close()
            log.close()
    return log.early


class Loop:
    """The hot loop of one training run: device-resident data, no per-step host sync.

    It also owns the run's position (:class:`~pyro_vae.training.runstate.Position`) and its
    state for checkpoints (:meth:`state`, :meth:`load_state`), and keeps an in-memory copy
    of the state at the start of each epoch, from which :meth:`explain_fault` replays a bad
    step.
    """

    def __init__(
        self,
        vae: VAE,
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
        tc: TrainConfig,
        train_x: torch.Tensor,
        progress: bool,
        world: World | None = None,
        train_y: torch.Tensor | None = None,
    ) -> None:
        self.vae, self.opt, self.gen, self.tc, self.train_x = vae, opt, gen, tc, train_x
        self.device = check_devices(vae, train_x=train_x, train_y=train_y)  # x: or host
        self.world = world = world or World()
        self.train_y = train_y  # (N,) labels of a conditional VAE
        self.objective = build_objective(tc.objective, num_particles=tc.num_particles)
        self.module_loss = self.objective(vae.model, vae.guide)  # the ELBO as an nn.Module
        self.loss_fn: torch.nn.Module = self.module_loss
        if world.enabled:  # gradients averaged across ranks during backward
            self.loss_fn = DistributedDataParallel(self.module_loss)
        elif tc.replay:  # the Pyro program recorded once per batch shape, then replayed
            self.loss_fn = Replay(self.module_loss, self.objective)
        self.guard = StepGuard(opt, tc.on_nan)
        self.graphs = CudaGraphs.for_loop(self) if tc.cuda_graphs else None  # or the reason
        # a last batch with fewer rows than processes is dropped (a rank would get none)
        n, b = train_x.shape[0], tc.batch_size
        self.steps_per_epoch = max(1, n // b + (n % b >= world.world_size))
        self.position = Position()
        self.gen_start = gen.get_state()  # the data RNG at the start of the current epoch
        self.stop_requested = False  # set by the Ctrl-C handler; read on the host each step
        self.checkpoint_label = "none written"
        self.snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        total = tc.epochs * self.steps_per_epoch
        self.bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True)

    # ------------------------------------------------------------------ the hot loop

    def train_epoch(self, epoch: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Train one epoch (from a partial one's next step); None when Ctrl-C stopped it.

        Returns the epoch's metrics record (``metrics.jsonl``) and timing (``timing.jsonl``).
        """
        start = last = time.perf_counter()
        first, sums = self._begin_epoch(epoch)  # sums: (4,) loss, reconstruction, KL, rows
        x, perm = self._data()
        shown = first - 1
        with pyro.validation_enabled(False):  # the data were checked once, before training
            for step, idx in self._batches(perm, first):
                sums += self.train_step(x, idx)
                if self.stop_requested:  # Ctrl-C: a host flag, no device sync
                    self._pause(epoch, step, sums)
                    return None
                if time.perf_counter() - last > 0.5:  # the host reads twice a second at most
                    self._log(epoch, sums, step, shown)
                    shown, last = step, time.perf_counter()
        bad = self._log(epoch, sums, self.steps_per_epoch, shown)
        return self._end_epoch(epoch, sums, bad, time.perf_counter() - start)

    def train_step(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One step on the global batch ``x[idx]`` (this rank trains on its share of it):
        ``(loss, reconstruction, KL, rows)`` summed over the rows (float64, on the device),
        all zero for a bad step."""
        xb, labels = self._batch(x, idx)
        return (self.graphs or self.step)(xb, labels, idx.shape[0])  # a CUDA graph, or not

    def step(self, xb: torch.Tensor, labels: tuple[torch.Tensor, ...], batch: int) -> torch.Tensor:
        """:meth:`Loop.train_step` on this rank's rows ``xb`` of a global batch of ``batch``."""
        total = self.loss_fn(xb, *labels)  # negative ELBO summed over the rows
        loss = total / batch  # nats per data point; DDP averages over processes:
        loss = loss * self.world.world_size if self.world.enabled else loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        ok = self.guard.check(loss)  # () bool on the device
        self.guard.step(ok)  # the optimizer step; a no-op if not ok
        values = getattr(self.loss_fn, "last_values", None)  # (4,) float64, from a replay
        if values is None:  # the true (unweighted) ELBO terms, whatever the objective
            recon, kl = batch_terms(self.objective, self.vae.model, self.vae.guide, xb, *labels)
            rows = torch.full_like(total.detach(), xb.shape[0])
            values = torch.stack([total.detach(), recon, kl, rows]).double()
        return torch.where(ok, values, 0.0)  # (4,) bad steps count for nothing

    def _begin_epoch(self, epoch: int) -> tuple[int, torch.Tensor]:
        """Set the epoch's rate and weights, copy the state; return its first step and sums."""
        tc = self.tc
        self.bar.set_description(f"epoch {epoch}/{tc.epochs}")
        if hasattr(self.objective, "set_epoch"):  # e.g. a KL warm-up: a function of the epoch
            self.objective.set_epoch(epoch)
        lr = learning_rate(tc.lr, tc.lr_schedule, epoch, tc.lr_stage_scale)  # of the epoch alone
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.gen_start = self.gen.get_state()
        self.snapshot = self._copy_state()
        partial, self.position.partial = self.position.partial, None
        if partial is None:
            self.guard.reset()
            return 1, torch.zeros(4, dtype=torch.float64, device=self.device)
        self.guard.reset(partial.steps_done, partial.first_bad, partial.bad)
        return partial.steps_done + 1, partial.sums.clone().to(self.device)

    def _data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's data and batch order, both drawn from the data RNG ``self.gen``."""
        x = self.train_x
        if self.tc.binarize == "dynamic":
            x = dynamic_binarize(x, self.gen)  # (N, *data_shape), redrawn each epoch
        perm = torch.randperm(x.shape[0], generator=self.gen, device=x.device)  # (N,)
        return x, perm

    def _batches(self, perm: torch.Tensor, first: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(step, indices)`` of the epoch's global batches from step ``first`` (1-based)."""
        for step, idx in enumerate(perm.split(self.tc.batch_size)[: self.steps_per_epoch], 1):
            if step >= first:
                yield step, idx

    def _batch(self, x: torch.Tensor, idx: torch.Tensor) -> Batch:
        """This rank's rows of ``x[idx]`` on the device, and their labels if any."""
        share = self.world.share(idx)  # all of idx for one process
        xb = x[share].to(self.device, non_blocking=True)  # (b, *data_shape)
        labels = () if self.train_y is None else (self.train_y[share].to(self.device),)
        return xb, labels

    def _log(self, epoch: int, sums: torch.Tensor, step: int, shown: int) -> int:
        """Host read: refresh the bar and act on the guard. Returns this epoch's bad steps."""
        first_bad, bad = self.guard.poll()
        if not self.bar.disable:
            _loss, recon, kl, rows = sums.tolist()
            if rows:
                recon, kl = recon / rows, kl / rows
                self.bar.set_postfix(elbo=f"{recon - kl:.2f}", rec=f"{recon:.2f}", kl=f"{kl:.2f}")
            self.bar.update(step - shown)
        if first_bad and self.tc.on_nan == "stop":
            raise BadStepError(epoch, first_bad)
        skipped = self.position.skipped_total + bad
        if skipped > self.tc.max_skipped_steps:
            raise BadStepError(epoch, first_bad, skipped)
        return bad

    def _pause(self, epoch: int, step: int, sums: torch.Tensor) -> None:
        """Ctrl-C: keep the partial epoch in the position, for a checkpoint of this state."""
        first_bad, bad = self.guard.poll()
        self.position.partial = Partial(epoch, step, sums, first_bad, bad)

    def _end_epoch(
        self, epoch: int, sums: torch.Tensor, bad: int, seconds: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Advance the position; the epoch's metrics (per data point) and timing."""
        loss, recon, kl, rows = all_reduce_sum(sums, self.world).tolist()
        loss, recon, kl = (v / rows if rows else math.nan for v in (loss, recon, kl))
        self.position.epochs_done = epoch
        self.position.skipped_total += bad
        record = {
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "train_loss": loss,
            "train_elbo": recon - kl,
            "train_reconstruction": recon,
            "train_kl": kl,
            "skipped_steps": bad,
            "train_objective": -loss,  # the training objective's own value (a bound, nats)
        }
        if hasattr(self.objective, "kl_weight"):
            record["kl_weight"] = float(self.objective.kl_weight)
        timing = {"epoch": epoch, "seconds": seconds, "images_per_s": rows / seconds}
        return record, timing

    # ------------------------------------------------------------------ around the loop

    def probe(self) -> None:
        """Score the objective once on two rows, touching no RNG, weight, buffer or gradient.

        Some pairings only fail when scored (free bits with a VampPrior: no per-dimension
        KL); this makes them fail before the run directory is written.
        """
        buffers = {name: b.clone() for name, b in self.vae.named_buffers()}
        xb = self.train_x[:2].to(self.device)  # (2, *data_shape)
        if self.tc.binarize == "dynamic":
            xb = (xb > 0.5).to(xb.dtype)  # the model's support; no RNG drawn
        labels = () if self.train_y is None else (self.train_y[:2].to(self.device),)
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), pyro.validation_enabled(False):
            self.module_loss(xb, *labels)
            for name, b in self.vae.named_buffers():  # e.g. counters a forward pass moves
                b.copy_(buffers[name])

    def show_position(self) -> None:
        """Move the progress bar to the run's position (a resumed run's steps done)."""
        partial = self.position.partial
        steps = partial.steps_done if partial else 0
        self.bar.update(self.position.epochs_done * self.steps_per_epoch + steps)

    def note(self, text: str) -> None:
        """Print a line above the progress bar (nothing when it is off)."""
        if not self.bar.disable:
            self.bar.write(f"pyro-vae: {text}")

    def close(self) -> None:
        """Close the progress bar and drop the DDP wrapper while the process group lives."""
        self.bar.close()
        self.loss_fn = self.module_loss  # DDP's reducer must die before destroy_process_group

    def explain_fault(self, fault: BadStepError) -> StepReport:
        """Replay the epoch from its start up to ``fault.step`` and explain that step.

        The replay restores the state copied at the epoch's start (weights, optimizer, RNGs,
        data RNG) and re-runs the good steps before the bad one, so on CPU it sees exactly
        the batch, the parameters and the random draws of the bad step.
        """
        assert self.snapshot is not None
        label = self.checkpoint_label
        self.load_state(*self.snapshot, Path("<state at the start of the epoch>"))
        self.checkpoint_label = label
        partial, self.position.partial = self.position.partial, None
        first = partial.steps_done + 1 if partial else 1
        x, perm = self._data()
        self.guard.reset(first - 1)
        with pyro.validation_enabled(False):
            for step, idx in enumerate(perm.split(self.tc.batch_size), start=1):
                if step == fault.step:
                    break
                if step >= first:
                    self.train_step(x, idx)
            else:  # no such step: an empty batch
                idx = perm[:0]
            share = self.world.share(idx)
            xb, b = x[share], max(share.shape[0], 1)
            labels = () if self.train_y is None else (self.train_y[share],)
            model, guide = self.vae.model, self.vae.guide
            return explain_step(
                lambda batch: self.module_loss(batch, *labels) / b,
                lambda batch: model(batch, *labels),
                lambda batch: guide(batch, *labels),
                xb,
                dict(self.vae.named_parameters()),
            )

    # ------------------------------------------------------------------ state

    def stateful(self) -> dict[str, Stateful]:
        """Components with training state outside the VAE (:mod:`~pyro_vae.training.runstate`)."""
        parts = {"objective": self.objective}
        return {k: v for k, v in parts.items() if callable(getattr(v, "state_dict", None))}  # type: ignore[misc]

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The run's state now (tensors are references to the live ones)."""
        data_rng = self.gen_start if self.position.partial else self.gen.get_state()
        tensors, meta = capture(
            self.vae, self.opt, data_rng, self.position, self.stateful(), self.steps_per_epoch
        )
        meta["world_size"] = self.world.world_size  # processes that train the run
        return tensors, meta

    def load_state(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: Path
    ) -> None:
        """Restore a state written by :meth:`write_checkpoint` (read from ``where``)."""
        self.position, self.gen_start = restore(
            where, tensors, meta, vae=self.vae, opt=self.opt, gen=self.gen, stateful=self.stateful()
        )
        if meta["world_size"] != self.world.world_size:
            raise CheckpointError(
                f"{str(where)!r} was written by a run of {meta['world_size']} process(es), but "
                f"this one has {self.world.world_size}. Resume with as many processes as the "
                "run had (each keeps its own random stream)."
            )
        if self.world.rank > 0:  # restore() set rank 0's RNG; this rank has its own
            torch.set_rng_state(tensors[f"rng.torch.{self.world.rank}"])
        self.checkpoint_label = self._label()

    def write_checkpoint(self, run_dir: Path) -> None:
        """Rank 0 writes the state; every rank's torch RNG goes in (a collective)."""
        rng = gather_rng_states(self.world, self.device)
        if self.world.is_main:
            tensors, meta = self.state()
            tensors.update({f"rng.torch.{r}": s for r, s in enumerate(rng) if r > 0})
            write_tensors(run_dir / "checkpoint.safetensors", tensors, meta)
        self.checkpoint_label = self._label()

    def _label(self) -> str:
        partial = self.position.partial
        if partial is not None:
            return f"epoch {partial.epoch}, step {partial.steps_done}"
        return f"after epoch {self.position.epochs_done}"

    def _copy_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = self.state()
        return {k: v.detach().clone() for k, v in tensors.items()}, json.loads(json.dumps(meta))
