"""The torch helpers both layers share (the audit in ``unlearn_audit``, the attacks in ``attacks``).

A leaf module (torch only), like :mod:`unlearn_audit.errors`, so the attacks can import it without
depending on the rest of the audit. It is the one home of two jobs that used to be written
several times over:

* putting a model's train/eval flags back. A caller that only borrows a model must leave it as it
  found it, and restoring just the root (``model.train(was_training)``) would also flip a
  submodule the caller had deliberately left in eval mode (a frozen BatchNorm, say). Two meanings,
  two names: :func:`kept_modes` only restores the flags (for code that sets modes itself, as ART
  does); :func:`evaluation_mode` also switches to eval mode for the block.
* :func:`predict_labels`: arg-max labels of a large input, batch by batch, without gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["evaluation_mode", "kept_modes", "predict_labels"]


@contextlib.contextmanager
def kept_modes(module: nn.Module) -> Iterator[nn.Module]:
    """Give every submodule of ``module`` its own train flag back after the block, also on errors."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block, every submodule's flag restored afterwards."""
    with kept_modes(module):
        module.eval()
        yield module


@torch.no_grad()
def predict_labels(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Arg-max labels (CPU, int64) of ``model`` on ``x``, ``batch_size`` rows at a time.

    The model is used in whatever mode it is in (an attack's guard has already set it); wrap
    the call in :func:`evaluation_mode` for a model that may be training.
    """
    out = [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
