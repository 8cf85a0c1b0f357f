"""Model plumbing shared by the attacks: device names, input checks, batched forward passes.

An audit must leave the models it inspects exactly as it found them, and must not run out
of memory on a large evaluation set; these helpers do both in one place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from unlearn_audit.errors import ConfigError, DataError
from unlearn_audit.torchutil import evaluation_mode


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``; a misspelt name is a configuration error, not a crash."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from exc


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (a bool is refused: ``True`` as a batch size is a bug)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_inputs(x: object, *, min_dims: int) -> torch.Tensor:
    """``x`` if it is a tensor of inputs of shape (N, ...) with at least ``min_dims`` dimensions."""
    if not isinstance(x, torch.Tensor) or x.dim() < min_dims:
        raise DataError(
            f"x must be a torch.Tensor of shape (N, ...), got {type(x).__name__}"
            + (f" with shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else "")
        )
    return x


def forward_in_batches(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    keep: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """``keep(model(batch))`` for each batch of ``x``, in eval mode and without autograd.

    Each batch is moved to ``device`` (the model must already be there); ``keep`` checks and
    shrinks an output (e.g. to float32 on the CPU, or to its arg-max) before the next batch
    runs. One pass is made even for an empty ``x``, so the caller still gets an output of
    the right shape, e.g. (0, K) logits.
    """
    outputs: list[torch.Tensor] = []
    with evaluation_mode(model), torch.inference_mode():
        for start in range(0, max(x.shape[0], 1), batch_size):
            outputs.append(keep(model(x[start : start + batch_size].to(device))))
    return outputs
