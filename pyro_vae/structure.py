"""What the model and the guide share: latent site names, class labels, data checks, and
the names under which their networks live in Pyro's param store.

Pyro's ``pyro.infer.SVI`` optimizes the parameters that appear as ``param`` sites, which
``pyro.module(name, net)`` creates by putting the network's parameters in the global param
store under ``name``. Two VAEs that used one fixed name would share (and silently fight
over) the same store entries, so every model and guide gets a name of its own
(:func:`unique_name`), and the entries are removed from the store when the module is
garbage-collected.
"""

from __future__ import annotations

import itertools
import weakref

import pyro
import torch
from torch import nn

__all__ = ["check_data_shape", "check_labels", "latent_site_names", "one_hot", "unique_name"]

_counter = itertools.count()


def _forget(prefix: str) -> None:
    store = pyro.get_param_store()
    for key in [k for k in store if k.startswith(prefix)]:
        del store[key]


def unique_name(module: nn.Module, kind: str) -> str:
    """A param-store prefix unique to ``module``, forgotten when the module is collected."""
    name = f"pyro_vae.{kind}{next(_counter)}"
    weakref.finalize(module, _forget, name + "$$$")
    return name


def check_data_shape(x: object, data_shape: tuple[int, ...] | None) -> None:
    """Refuse data that is not a floating-point batch ``(N, *data_shape)``, naming both.

    Shapes and dtypes only (no host synchronisation), so the model and the guide call it on
    every run: a wrong batch is refused here, at the program's boundary, and not by a matrix
    product deep inside the encoder. ``data_shape=None`` checks nothing (a caller's own
    networks decide).
    """
    if data_shape is None or torch.jit.is_tracing():  # a recorded step was checked eagerly
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"data must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or tuple(x.shape[1:]) != tuple(data_shape):
        expected = ", ".join(map(str, data_shape))
        raise ValueError(
            f"data must have shape (N, {expected}) for this model, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"data must be a floating-point tensor, got {x.dtype}: convert it with x.float()"
        )


def latent_site_names(num_layers: int) -> list[str]:
    """``["z"]`` for one stochastic layer, else ``["z1", "z2", ...]`` from the bottom up."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers}")
    return ["z"] if num_layers == 1 else [f"z{i}" for i in range(1, num_layers + 1)]


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(N,)`` class indices to ``(N, C)`` one-hot rows, without a host synchronisation."""
    classes = torch.arange(num_classes, device=y.device)  # (C,)
    return (y.unsqueeze(-1) == classes).to(dtype)  # (N, C)


def check_labels(y: torch.Tensor | None, n: int, num_classes: int, optional: bool = False) -> None:
    """Refuse missing labels for a conditional program, and labels for an unconditional one.

    With ``optional`` (the semi-supervised model M2) labels may be missing, and a label
    ``-1`` marks a point whose class is hidden. Only shapes and dtypes are checked (no
    host synchronisation); the range of the labels is checked once where they enter, e.g.
    by :func:`pyro_vae.fit`.
    """
    if num_classes and y is None and not optional:
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
