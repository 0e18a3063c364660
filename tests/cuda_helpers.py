"""Shared by the CUDA-marked tests: one epoch of steps under torch's sync debug mode."""

from __future__ import annotations

import pyro
import torch

from pyro_vae.training.loop import Loop


def steps_raise_on_host_sync(loop: Loop) -> None:
    """Take one epoch of ``loop``'s steps with torch's sync debug mode at "error", so any
    synchronising call inside a step raises (the replay or graph is recorded beforehand)."""
    x, perm = loop._data()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pyro.validation_enabled(False):
            for idx in perm.split(loop.tc.batch_size):
                loop.train_step(x, idx)
    finally:
        torch.cuda.set_sync_debug_mode("default")
