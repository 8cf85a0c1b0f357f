"""Two small torch helpers that every part of the tool needs the same way.

* :func:`evaluation_mode`: a pass in eval mode that leaves the caller's model as it found it.
  Every submodule gets its own flag back, so a model whose parts were in mixed modes (a frozen
  BatchNorm inside a training model, say) keeps them.
* :func:`predict_labels`: arg-max labels of a large input, batch by batch, without gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["evaluation_mode", "predict_labels"]


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode inside the block; give every submodule its own train flag back
    afterwards, also on errors."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def predict_labels(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Arg-max labels (CPU, int64) of ``model`` on ``x``, ``batch_size`` rows at a time.

    The model is used in whatever mode it is in; wrap the call in :func:`evaluation_mode` for a
    model that may be training.
    """
    out = [model(x[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
