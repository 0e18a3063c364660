"""One device per run: the VAE's parameters on one, its data there or in host memory.

A run trains on the device of the VAE's parameters. Its data live either there or in host
memory, from where each batch is copied (:func:`~pyro_vae.training.fit.data_home`). Any
other mix (parameters split over two devices, data on another GPU) would fail deep inside
torch with "Expected all tensors to be on the same device"; :func:`check_devices` refuses it
first, naming what lives where.
"""

from __future__ import annotations

import torch

from pyro_vae.training.errors import TrainingError

__all__ = ["check_devices"]


def check_devices(module: torch.nn.Module, **data: torch.Tensor | None) -> torch.device:
    """The one device of ``module``'s parameters and buffers; ``data`` there or on the CPU.

    ``data`` names tensors (``train_x=...``); None values are skipped. Raises
    :class:`~pyro_vae.training.errors.TrainingError` naming the devices otherwise.
    """
    places: dict[str, list[str]] = {}
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        places.setdefault(str(t.device), []).append(name)
    if len(places) > 1:
        where = "; ".join(f"{d}: {', '.join(names[:3])}" for d, names in sorted(places.items()))
        raise TrainingError(
            f"the VAE's parameters and buffers are on {len(places)} devices ({where}), but a "
            "run trains on one. Move the whole VAE with vae.to(device) before training."
        )
    device = torch.device(next(iter(places))) if places else torch.device("cpu")
    for name, value in data.items():
        if value is not None and value.device != device and value.device.type != "cpu":
            raise TrainingError(
                f"{name} is on {value.device}, but the VAE is on {device}. Keep the data on the "
                f"VAE's device or in host memory (each batch is then copied to {device})."
            )
    return device
