"""One training step, run alone or under torchrun by tests/test_distributed.py.

Usage: ``python tests/ddp_worker.py OUT.safetensors`` (optionally under torchrun). Rank 0
saves the parameters and gradients after one step on one global batch of 7 rows.

The guide family registered here, ``fixed-noise``, draws z = loc + scale * eps with eps a
fixed function of the data row, so each row gets the same "random" draw whichever process
handles it: that is what makes the one-process and two-process steps comparable exactly.
"""

from __future__ import annotations

import sys

import pyro.distributions as dist
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from pyro_vae import RunConfig, TrainConfig, VAEConfig, fit
from pyro_vae.data import Dataset
from pyro_vae.guides.posteriors import GUIDES, DiagonalNormal


class FixedEpsNormal(dist.Normal):
    """A Normal whose reparameterized draw uses given noise instead of fresh noise."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> None:
        super().__init__(loc, scale)
        self.eps = eps

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self.loc + self.scale * self.eps

    def expand(self, batch_shape: torch.Size, _instance: object = None) -> FixedEpsNormal:
        shape = torch.Size(batch_shape)
        return FixedEpsNormal(
            self.loc.expand(shape), self.scale.expand(shape), self.eps.expand(shape)
        )


@GUIDES.register("fixed-noise")
class FixedNoise(DiagonalNormal):
    """Diagonal Normal whose noise is a fixed function of each row's features (tests only)."""

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.head(h).chunk(2, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        eps = torch.sin(3.0 * h[..., : self.latent_dim]).detach()  # (N, L), smooth in h
        return FixedEpsNormal(loc, scale, eps).to_event(1)


def main(out: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((7, 1, 4, 4), 0.4), generator=g)
    data = Dataset("tiny", train=x, valid=x[:4], test=x[:4])
    config = RunConfig(
        VAEConfig(hidden=(16,), latent_dim=3, guide="fixed-noise"),
        TrainConfig(epochs=1, batch_size=7, binarize="none", eval_num_points=0, seed=5),
    )
    result = fit(config, dataset=data, write=False, progress=False)
    if result.rank == 0:
        tensors = {f"param.{k}": p.detach() for k, p in result.vae.named_parameters()}
        tensors.update({f"grad.{k}": p.grad for k, p in result.vae.named_parameters()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1])
