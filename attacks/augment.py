"""Queries near each example: cheap augmentations that a membership test averages its signal over.

A model may be post-processed so that its scores on the EXACT inputs look forgotten while it
still knows them: input-dependent noise on the top logit (predictions unchanged), or a lookup
of the forget inputs. LiRA (Carlini et al., S&P 2022) already queries each example under a few
augmentations and combines the answers; here every example gets ``k`` nearby inputs, the same
for every model audited (so paired comparisons stay paired), and the membership signal is
averaged over them, the exact input excluded:

* images (``x`` of shape (n, C, H, W) with H, W >= 8): shifts by one pixel left, right, up and
  down (edges repeated), then copies with small Gaussian noise;
* anything else: copies with small Gaussian noise in feature space.

The noise has a standard deviation of ``NOISE_SCALE`` times each feature's spread over the
examples given, small enough to keep what a model learnt of an example (its label does not
change), large enough that a hash of the exact input changes completely. Excluding the exact
input means a supplier who alters only the exact forget inputs gains nothing on this signal.
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.signals import compute_logits, compute_signals

__all__ = ["NOISE_SCALE", "augmented_views", "mean_signal"]

#: Noise standard deviation as a share of each feature's spread.
NOISE_SCALE = 0.05
_SHIFTS = ((0, 1), (0, -1), (1, 1), (1, -1))  # (spatial axis after C, step)


def _shifted(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """``x`` moved by ``step`` pixels along a spatial axis, the vacated edge repeating its neighbour."""
    dim = x.ndim - 2 + axis
    out = torch.roll(x, shifts=step, dims=dim)
    edge = 0 if step > 0 else x.shape[dim] - 1
    out.narrow(dim, edge, 1).copy_(x.narrow(dim, edge, 1))
    return out


def augmented_views(
    x: torch.Tensor, k: int, *, seed: int, spread: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """``k`` nearby copies of every example of ``x`` (see the module docstring), seeded.

    Args:
        x: (n, ...) float inputs.
        k: number of views (0 gives none).
        seed: seed of the noise.
        spread: per-feature standard deviation (shape ``x.shape[1:]``) the noise is scaled by;
            default: that of ``x`` itself. Pass one spread for every role so that forget and
            test examples are perturbed alike.
    """
    if k <= 0:
        return []
    x = x.float()
    if spread is None:
        spread = x.std(dim=0) if x.shape[0] > 1 else torch.ones(x.shape[1:])
    image = x.ndim == 4 and min(x.shape[2:]) >= 8
    views = [_shifted(x, axis, step) for axis, step in _SHIFTS[:k]] if image else []
    gen = torch.Generator().manual_seed(int(seed))
    while len(views) < k:
        noise = torch.randn(x.shape, generator=gen) * (NOISE_SCALE * spread)
        views.append(x + noise)
    return views


def mean_signal(
    model: torch.nn.Module,
    views: list[torch.Tensor],
    y: torch.Tensor,
    *,
    name: str = "logit_margin",
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The per-example signal ``name`` of ``model`` averaged over ``views`` (each (n, ...))."""
    total = None
    for view in views:
        logits = compute_logits(model, view, batch_size=batch_size, device=device)
        value = getattr(compute_signals(logits, y), name)
        total = value.copy() if total is None else total + value
    if total is None:
        raise ValueError("mean_signal needs at least one view")
    return total / len(views)
