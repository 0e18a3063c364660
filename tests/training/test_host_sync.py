"""A CPU stand-in for a GPU property: the hot loop never waits for the device.

On a GPU, every read of a device value by the host (``.item()``, ``float(t)``,
``bool(t)``, ``.tolist()``) is a synchronisation that drains the queue of kernels. torch
routes every such read through ``aten::_local_scalar_dense``, on the CPU as on a GPU, so a
dispatch mode that records that op counts the synchronisations a step would make on a
GPU. ``.tolist()`` and ``.numpy()`` read a CPU tensor's memory without an op (on a GPU
they copy it to the host first, a sync), so the mode counts those calls too. The loop
(pyro_vae.training.loop) promises none per step: the host reads the device
only when the progress bar refreshes and at the end of an epoch.
"""

from __future__ import annotations

import itertools
import traceback
from collections import Counter
from typing import Any

import pyro
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pyro_vae.training.loop as loop_module
from pyro_vae import VAE, TrainConfig, VAEConfig
from pyro_vae.data import load_dataset
from pyro_vae.training.guard import fused_adam
from pyro_vae.training.loop import Loop

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class HostSyncs(TorchDispatchMode):
    """Counts ``aten::_local_scalar_dense``, ``Tensor.tolist`` and ``Tensor.numpy`` calls,
    keyed by the Python lines that made them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.patch = pytest.MonkeyPatch()

    def __enter__(self) -> HostSyncs:
        for name in ("tolist", "numpy"):
            self.patch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))
        return super().__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.patch.undo()

    def _counted(self, read: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._record()
            return read(tensor, *args, **kwargs)

        return counted

    def _record(self) -> None:
        frames = traceback.extract_stack(limit=9)[:-2]
        self.calls[" <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(frames))] += 1

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self._record()
        return func(*args, **(kwargs or {}))

    @property
    def count(self) -> int:
        return sum(self.calls.values())


def _loop(rows: int = 250, optimizer: str = "fused", **train: Any) -> Loop:
    pyro.set_rng_seed(0)
    vae = VAE(VAEConfig(latent_dim=2, hidden=(8,), data_shape=(1, 8, 8)))
    tc = TrainConfig(epochs=3, batch_size=50, binarize="dynamic", **train)
    x = load_dataset("digits").train[:rows]  # (rows, 1, 8, 8)
    params = list(vae.parameters())
    opt = fused_adam(params, tc.lr) if optimizer == "fused" else torch.optim.Adam(params, tc.lr)
    return Loop(vae, opt, torch.Generator().manual_seed(0), tc, x, progress=False)


def test_the_mode_sees_every_kind_of_host_read() -> None:
    t = torch.ones(2)
    with HostSyncs() as syncs:
        t.sum().item()
        float(t[0])
        bool(t[1] > 0)
        t.tolist()
    assert syncs.count == 4


@pytest.mark.parametrize(
    "train",
    [
        {},  # the default: the replayed ELBO, fused Adam
        {"replay": False},  # Pyro's own trace every step
        {"objective": "iwae:k=5"},
        {"objective": "warmup:epochs=2"},
        {"on_nan": "skip"},
        {"on_nan": "skip", "optimizer": "plain"},  # the guard's masked step
    ],
    ids=["replay", "pyro", "iwae", "warmup", "skip", "skip-unfused-adam"],
)
def test_a_step_makes_no_host_sync(train: dict[str, Any]) -> None:
    loop = _loop(**train)
    loop.train_epoch(1)  # the first epoch records the replay
    x, perm = loop._data()
    with HostSyncs() as syncs, pyro.validation_enabled(False):
        for idx in perm.split(loop.tc.batch_size):
            loop.train_step(x, idx)
    # unfused Adam reads its step count, which torch keeps in host memory even for CUDA
    # parameters (no device sync); any other read is the loop's
    ours = [c for c in syncs.calls if "torch/optim/adam.py" not in c]
    if train.get("optimizer") != "plain":
        ours = list(syncs.calls)
    assert not ours, "\n".join(ours)
    loop.close()


def test_an_epoch_syncs_a_fixed_number_of_times_whatever_its_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no progress refresh due, an epoch of 5 steps and one of 10 read the device
    equally often: at its end only (the guard's record, the metric sums)."""
    ticks = itertools.count()
    clock = lambda: next(ticks) * 1e-3  # noqa: E731 -- 1 ms a call: no refresh is due
    monkeypatch.setattr(loop_module.time, "perf_counter", clock)
    counts = []
    for rows in (250, 500):
        loop = _loop(rows)
        loop.train_epoch(1)
        with HostSyncs() as syncs:
            assert loop.train_epoch(2) is not None
        counts.append(syncs.count)
        loop.close()
    assert counts[0] == counts[1] <= 4, counts
