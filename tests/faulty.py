"""A network pair that misbehaves on purpose, for the fault tests.

``faulty-mlp:first=F,count=C,grad=G,interrupt=I`` is the MLP pair whose decoder counts its
calls in a buffer (so checkpoints and replays restore the count) and, on calls
``F .. F+C-1``, emits NaN (or, with ``grad=true``, a finite output whose gradient is NaN).
On call ``I`` it sends the process SIGINT, as a user pressing Ctrl-C mid-epoch would.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from pyro_vae.nn import NETWORKS, MLPPair

NAME = "faulty-mlp"
NEVER = 10**12


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(hit)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (hit,) = ctx.saved_tensors
        return torch.where(hit, float("nan"), grad), None


class FaultyDecoder(nn.Module):
    calls: torch.Tensor

    def __init__(self, net: nn.Module, first: int, count: int, grad: bool, interrupt: int) -> None:
        super().__init__()
        self.net, self.first, self.count, self.grad = net, first, count, grad
        self.interrupt = interrupt
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.interrupt < NEVER and int(self.calls) == self.interrupt:
            signal.raise_signal(signal.SIGINT)
        out = self.net(z)
        hit = (self.calls >= self.first) & (self.calls < self.first + self.count)
        if self.grad:
            return _NanGrad.apply(out, hit)
        return torch.where(hit, float("nan"), out)


class FaultyPair:
    """The MLP pair with a :class:`FaultyDecoder`."""

    def __init__(
        self,
        data_shape: tuple[int, ...],
        latent_dim: int,
        hidden: tuple[int, ...],
        act: str,
        decoder_out: int,
        *,
        first: int = NEVER,
        count: int = NEVER,
        grad: bool = False,
        interrupt: int = NEVER,
    ) -> None:
        pair = MLPPair(data_shape, latent_dim, hidden, act, decoder_out)
        self.encoder, self.feature_dim = pair.encoder, pair.feature_dim
        self.decoder = FaultyDecoder(pair.decoder, first, count, grad, interrupt)


@contextmanager
def registered() -> Iterator[str]:
    """Register the faulty pair in NETWORKS for the duration of a test only."""
    NETWORKS.register(NAME)(FaultyPair)
    try:
        yield NAME
    finally:
        del NETWORKS._entries[NAME]
