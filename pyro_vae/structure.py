"""What the model and the guide share: latent site names and class labels."""

from __future__ import annotations

import torch

__all__ = ["check_labels", "latent_site_names", "one_hot"]


def latent_site_names(num_layers: int) -> list[str]:
    """``["z"]`` for one stochastic layer, else ``["z1", "z2", ...]`` from the bottom up."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers}")
    return ["z"] if num_layers == 1 else [f"z{i}" for i in range(1, num_layers + 1)]


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(N,)`` class indices to ``(N, C)`` one-hot rows, without a host synchronisation."""
    classes = torch.arange(num_classes, device=y.device)  # (C,)
    return (y.unsqueeze(-1) == classes).to(dtype)  # (N, C)


def check_labels(y: torch.Tensor | None, n: int, num_classes: int) -> None:
    """Refuse missing labels for a conditional program, and labels for an unconditional one.

    Only shapes and dtypes are checked (no host synchronisation); the range of the labels
    is checked once where they enter, e.g. by :func:`pyro_vae.fit`.
    """
    if num_classes and y is None:
        raise ValueError(
            "this VAE is conditional: pass the class labels y (an int64 tensor (N,)) "
            "alongside x, as model(x, y) and guide(x, y)"
        )
    if not num_classes and y is not None:
        raise ValueError("this VAE is not conditional (conditional=False): pass no labels y")
    if y is not None and (y.dim() != 1 or y.shape[0] != n or y.is_floating_point()):
        raise ValueError(
            f"labels y must be an integer tensor of shape ({n},), got {y.dtype} {tuple(y.shape)}"
        )
