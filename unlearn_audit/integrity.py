"""Is a model the original in disguise? Name-agnostic parameter change and output residual.

A supplier who hands back the original can rename its tensors (re-export as ``.pt2``,
TorchScript, safetensors with a prefix), nudge every weight by a tiny amount, permute hidden
units, or wrap it in a module that rescales or shifts its logits. Two measurements see through
this, neither of which looks at names or formats:

* :func:`relative_parameter_change`: the floating tensors (parameters and buffers) of both
  models matched by shape, pairing within a shape group by least distance, and
  ``||theta - theta_original|| / ||theta_original||`` over the matched set. Renaming and
  re-exporting leave it at 0; different architectures are "not comparable".
* :func:`output_residual`: the logits on every role, each example's shift removed (softmax does
  not see it) and one global positive scale fitted: the share of the original's centred logits
  that no temperature or constant explains. Permuting hidden units or wrapping the original
  leaves it near 0.

A model below either threshold is the original up to packaging or post-processing. The
thresholds sit far below what any bundled approximate unlearning method leaves
(``benchmarks/bench_integrity.py`` measures it); they are constants, not policy values, because
no setting of them between "exact copy" and "smallest honest change" would be a policy choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from unlearn_audit.metrics import squared_distance, squared_norm

MIN_RELATIVE_CHANGE = 3e-5
"""Relative parameter change below which a model counts as the original's weights.

``benchmarks/bench_integrity.py``: the smallest change a bundled approximate method makes with
its defaults is 3.7e-4 (``boundary_shrink``, digits + MLP; 1.2e-3 on mnist-5k + CNN), over 10x
above; a re-exported copy is 0, one weight moved by 1e-6 is ~5e-8.
"""

MIN_OUTPUT_RESIDUAL = 5e-4
"""Output residual below which a model counts as the original up to a logit scale and shift.

``benchmarks/bench_integrity.py``: the smallest residual a bundled approximate method leaves is
7.9e-3 (``boundary_shrink``, digits + MLP; 4.2e-2 on mnist-5k + CNN), over 10x above; an
exported, scripted or permuted copy of the original is below 1e-6.
"""


@dataclass(frozen=True)
class ParameterChange:
    """How far a model's weights moved from the original's, matched by shape, not by name.

    ``relative`` is ``None`` when the two models are not comparable (their tensors' shapes do
    not match one to one), and ``note`` says why.
    """

    comparable: bool
    relative: float | None = None
    matched_tensors: int = 0
    note: str = ""


def float_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Every distinct floating tensor a module holds (parameters, buffers), whatever its format.

    Native modules, the ``torch.export`` wrapper (its graph module keeps the state as parameters
    and buffers), TorchScript modules and modules filled from safetensors all expose their state
    through ``state_dict``; tensors shared under two names are counted once. They stay where the
    module keeps them (no copy to the host).
    """
    seen: set[int] = set()
    out = []
    for tensor in module.state_dict(keep_vars=False).values():
        if not isinstance(tensor, torch.Tensor) or not torch.is_floating_point(tensor) or tensor.numel() == 0:
            continue
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        out.append(tensor.detach())
    return out


def _by_shape(tensors: list[torch.Tensor]) -> dict[tuple[int, ...], list[torch.Tensor]]:
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(tuple(t.shape), []).append(t)
    return groups


def _matched_squared_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Sum of squared differences of the pairing of ``a`` with ``b`` (same shape) that minimises it."""
    cost = np.array([[float(squared_distance(x, y)) for y in b] for x in a])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


def relative_parameter_change(original: nn.Module, other: nn.Module) -> ParameterChange:
    """``||delta|| / ||theta_original||`` with tensors paired by shape (least distance within a shape).

    Names and formats are ignored, so a renamed or re-exported copy of the original scores 0.
    """
    ta, tb = float_tensors(original), float_tensors(other)
    if not ta or not tb:
        return ParameterChange(False, note="a model exposes no floating tensors; only outputs are compared")
    ga, gb = _by_shape(ta), _by_shape(tb)
    counts_a = {shape: len(g) for shape, g in ga.items()}
    counts_b = {shape: len(g) for shape, g in gb.items()}
    if counts_a != counts_b:
        return ParameterChange(
            False, note="the tensor shapes differ (another architecture); only outputs are compared"
        )
    sq_diff = sum(_matched_squared_difference(ga[s], gb[s]) for s in ga)
    sq_norm = sum(float(squared_norm(t)) for t in ta)
    if sq_norm == 0:
        return ParameterChange(False, note="the original's weights are all zero")
    return ParameterChange(True, relative=math.sqrt(sq_diff / sq_norm), matched_tensors=len(ta))


def output_residual(original: torch.Tensor, other: torch.Tensor) -> float:
    """Share of the original's logits no positive scale and per-example shift of ``other`` explains.

    Both ``(n, classes)`` logit matrices are centred per example (softmax ignores a shift); with
    ``s`` the least-squares non-negative scale, the result is ``||A - s B|| / ||A||``: the sine of
    the angle between the centred matrices, and 1 when no positive scale helps.
    """
    a = original.double()
    b = other.double()
    if a.shape != b.shape:
        raise ValueError(f"logit shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    scale = max(0.0, float(torch.sum(a * b)) / (nb * nb))
    return float((a - scale * b).norm()) / na
