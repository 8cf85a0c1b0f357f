"""PGD on tables: an L-inf ball in standardised feature space, kept inside what the data allows.

The threat model (``attacks.threat``, family ``tabular``): the adversary moves each feature ``j``
of an example by at most ``eps * scale_j`` (``eps`` in standard deviations of the training
data), never below the smallest or above the largest value seen in training (an example that
already lies outside keeps its own value as the limit), never touches a ``fixed`` feature
(one-hot indicators: flipping a category is not a small change) and, for a feature that only
takes whole values in its raw units, ends on that feature's grid ``offset + k * step``.

PGD takes signed gradient steps of ``alpha * scale`` inside the box; after every step the
iterate is also snapped to the grid and an example counts as fooled as soon as a snapped,
feasible iterate is misclassified. The gradient share that is exactly zero is reported, so a
model that hides its gradient is not taken for a robust one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.pgd import sample_like

__all__ = ["FeatureBox", "BatchOutcome", "feasible_box", "snap_to_grid", "tabular_pgd"]

_GRID_TOL = 1e-4


@dataclass(frozen=True, kw_only=True)
class FeatureBox:
    """Per-feature limits (``D`` tensors, in the units of ``x``); ``grid_step`` 0 = continuous."""

    lower: Tensor
    upper: Tensor
    scale: Tensor
    fixed: Tensor
    grid_step: Tensor
    grid_offset: Tensor

    @classmethod
    def from_domain(cls, domain) -> FeatureBox:
        """From an ``unlearn_audit.data_domain.InputDomain`` of family ``tabular``."""
        return cls(
            lower=domain.lower,
            upper=domain.upper,
            scale=domain.scale,
            fixed=domain.fixed,
            grid_step=domain.grid_step,
            grid_offset=domain.grid_offset,
        )


@dataclass(frozen=True, kw_only=True)
class BatchOutcome:
    """Per example: clean correctness, robustness, and whether the input gradient was all zero."""

    clean_correct: Tensor
    robust_correct: Tensor
    zero_gradient: Tensor


def feasible_box(x: Tensor, box: FeatureBox, eps: float) -> tuple[Tensor, Tensor]:
    """Per example and feature, the lowest and highest value the adversary may set (float64)."""
    x = x.double()
    radius = eps * box.scale.double()
    lo = torch.maximum(x - radius, torch.minimum(box.lower.double(), x))
    hi = torch.minimum(x + radius, torch.maximum(box.upper.double(), x))
    fixed = box.fixed.bool().expand_as(x)
    return torch.where(fixed, x, lo), torch.where(fixed, x, hi)


def snap_to_grid(v: Tensor, x: Tensor, lo: Tensor, hi: Tensor, box: FeatureBox) -> Tensor:
    """``v`` with every whole-valued feature moved to the nearest grid point inside ``[lo, hi]``.

    The clean value is on the grid and inside the interval, so a grid point always exists; when
    rounding error makes the interval look empty the clean value is kept.
    """
    step, off = box.grid_step.double(), box.grid_offset.double()
    on_grid = (step > 0).expand_as(v)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    k_lo = torch.ceil((lo - off) / safe - _GRID_TOL)
    k_hi = torch.floor((hi - off) / safe + _GRID_TOL)
    k = torch.minimum(torch.maximum(torch.round((v.double() - off) / safe), k_lo), k_hi)
    snapped = torch.where(k_lo <= k_hi, off + k * safe, x.double())
    return torch.where(on_grid, snapped, v.double())


def _loss_gradient(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and the gradient of the summed cross-entropy w.r.t. ``x`` (zeros when there is none)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        grad = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
    return logits.detach(), torch.zeros_like(x) if grad is None else grad.detach()


def tabular_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    box: FeatureBox,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> BatchOutcome:
    """PGD L-inf on one batch under the threat model of the module docstring.

    ``eps`` and ``alpha`` are in standard deviations; the model's mode and gradients are the
    caller's business (wrap the call in ``attacks.robust.attack_guard``).
    """
    y = y.long()
    lo, hi = feasible_box(x, box, eps)
    x0 = x.detach().double()
    step = alpha * box.scale.double()
    if random_start:
        x_adv = lo + (hi - lo) * sample_like(torch.rand, x0, generator)
    else:
        x_adv = x0.clone()
    logits, grad = _loss_gradient(model, x.detach(), y)
    clean = logits.argmax(1) == y
    zero = grad.flatten(1).abs().amax(dim=1) == 0
    fooled = ~clean
    for _ in range(steps + 1):
        candidate = snap_to_grid(x_adv, x0, lo, hi, box).to(x.dtype)
        logits, grad = _loss_gradient(model, candidate, y)
        fooled |= logits.argmax(1) != y
        if bool(fooled.all()):
            break
        x_adv = torch.minimum(torch.maximum(x_adv + step * grad.double().sign(), lo), hi)
    return BatchOutcome(clean_correct=clean, robust_correct=~fooled, zero_gradient=zero)
