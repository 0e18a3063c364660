"""The run state a checkpoint holds (pyro_vae.training.runstate)."""

from __future__ import annotations

import torch

from pyro_vae.training.runstate import _restore_data_rng


def test_a_data_rng_saved_on_another_device_seeds_this_one_reproducibly() -> None:
    cuda_like = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state: seed, offset
    draws = []
    for _ in range(2):
        gen = torch.Generator()
        _restore_data_rng(cuda_like, gen)
        draws.append(torch.rand(5, generator=gen))
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    gen, same = torch.Generator().manual_seed(3), torch.Generator()
    _restore_data_rng(gen.get_state(), same)  # same format: the stream itself goes on
    torch.testing.assert_close(torch.rand(5, generator=gen), torch.rand(5, generator=same))
