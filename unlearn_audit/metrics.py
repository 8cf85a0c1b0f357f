"""Pure metric functions: accuracies with intervals, parameter distances, output divergences.

Everything takes tensors or arrays and returns plain numbers or frozen dataclasses; nothing
here trains, loads or prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------- output divergences


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> float:
    """Mean over examples of KL(p || q) between the softmax outputs, computed in float64 from logits."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"logit shapes differ: {tuple(logits_p.shape)} vs {tuple(logits_q.shape)}")
    if logits_p.numel() == 0:
        return float("nan")
    lp = torch.log_softmax(logits_p.double(), dim=1)
    lq = torch.log_softmax(logits_q.double(), dim=1)
    return float((lp.exp() * (lp - lq)).sum(dim=1).clamp_min(0).mean())


# --------------------------------------------------------------------------- parameter distances


@dataclass(frozen=True)
class ParameterDistance:
    """Distance between two models of the same architecture.

    ``l2`` is ||a - b|| over all floating-point parameters and buffers; ``relative`` divides it
    by ||a||; ``cosine`` is the cosine similarity of the flattened vectors. ``per_layer`` maps
    each tensor name to its own L2 distance.
    """

    comparable: bool
    l2: float | None = None
    relative: float | None = None
    cosine: float | None = None
    per_layer: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "comparable": self.comparable,
            "l2": self.l2,
            "relative": self.relative,
            "cosine": self.cosine,
            "per_layer": self.per_layer,
            "note": self.note,
        }


#: Elements per step of :func:`pair_sums`: bounds the float64 copies it makes on the device.
CHUNK = 1 << 22


def _accumulator(device: torch.device) -> torch.dtype:
    """float64 for sums of squares, except on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _chunks(first: torch.Tensor, *others: torch.Tensor):
    """Matching slices of the flattened tensors, in the accumulator dtype on ``first``'s device;
    the others are moved there a slice at a time, never whole."""
    dtype = _accumulator(first.device)
    flat = [t.detach().reshape(-1) for t in (first, *others)]
    for start in range(0, flat[0].numel(), CHUNK):
        yield [f[start : start + CHUNK].to(device=first.device, dtype=dtype) for f in flat]


def pair_sums(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[sum((a-b)^2), sum(a^2), sum(b^2), sum(a*b)]`` of two same-size tensors, on ``a``'s device.

    Computed chunk by chunk (:data:`CHUNK` elements) and left on the device, so a caller summing
    over a whole model copies a few numbers per tensor to the host, not the model.
    """
    out = torch.zeros(4, dtype=_accumulator(a.device), device=a.device)
    for x, y in _chunks(a, b):
        out += torch.stack([torch.sum((x - y) ** 2), torch.sum(x**2), torch.sum(y**2), torch.sum(x * y)])
    return out


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum((a-b)^2)`` as a 0-d tensor on ``a``'s device, chunk by chunk like :func:`pair_sums`."""
    out = torch.zeros((), dtype=_accumulator(a.device), device=a.device)
    for x, y in _chunks(a, b):
        out += torch.sum((x - y) ** 2)
    return out


def squared_norm(a: torch.Tensor) -> torch.Tensor:
    """``sum(a^2)`` as a 0-d tensor on ``a``'s device, chunk by chunk like :func:`pair_sums`."""
    out = torch.zeros((), dtype=_accumulator(a.device), device=a.device)
    for (x,) in _chunks(a):
        out += torch.sum(x**2)
    return out


def _float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in module.state_dict().items() if torch.is_floating_point(v)}


def parameter_distance(a: nn.Module, b: nn.Module) -> ParameterDistance:
    """Parameter distances between ``a`` and ``b``, computed on ``a``'s device.

    Every tensor's sums stay on the device (:func:`pair_sums`); only its four sums come back to
    the host. Models whose state_dicts differ in names or shapes are not comparable: the
    result says so.
    """
    sa, sb = _float_state(a), _float_state(b)
    if not sa:
        return ParameterDistance(False, note="the model exposes no parameters (e.g. a scripted function)")
    if sa.keys() != sb.keys():
        return ParameterDistance(
            False, note="architectures differ (parameter names differ); distances skipped"
        )
    mismatched = [k for k in sa if sa[k].shape != sb[k].shape]
    if mismatched:
        return ParameterDistance(
            False, note=f"architectures differ (shape of {mismatched[0]}); distances skipped"
        )
    sums = [pair_sums(ta, sb[name]).cpu().tolist() for name, ta in sa.items()]
    per_layer: dict[str, float] = {}
    sq_diff = sq_a = sq_b = dot = 0.0
    for name, (d, qa, qb, ab) in zip(sa, sums, strict=True):
        per_layer[name] = math.sqrt(d)
        sq_diff += d
        sq_a += qa
        sq_b += qb
        dot += ab
    l2 = math.sqrt(sq_diff)
    norm_a, norm_b = math.sqrt(sq_a), math.sqrt(sq_b)
    return ParameterDistance(
        True,
        l2=l2,
        relative=l2 / norm_a if norm_a > 0 else None,
        cosine=dot / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else None,
        per_layer=per_layer,
    )


# --------------------------------------------------------------------------- proportion intervals
# Score intervals keep their width when every example agrees (all correct, no change), where a
# bootstrap of a proportion collapses to a single point and overstates the evidence.


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def wilson_interval(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1")
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_difference_ci(
    a: np.ndarray, b: np.ndarray, *, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """``mean(a) - mean(b)`` of two independent 0/1 samples, Newcombe's hybrid score interval.

    Newcombe (1998), "Interval estimation for the difference between independent proportions",
    method 10: Wilson intervals of each proportion combined in quadrature.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    p1, p2 = float(a.mean()), float(b.mean())
    l1, u1 = wilson_interval(int(a.sum()), a.size, level=level)
    l2, u2 = wilson_interval(int(b.sum()), b.size, level=level)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, (lo, hi)


def paired_proportion_difference_ci(
    a: np.ndarray, b: np.ndarray, *, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """``mean(a) - mean(b)`` of paired 0/1 outcomes on the same examples, Newcombe's score interval.

    Newcombe (1998), "Improved confidence intervals for the difference between binomial
    proportions based on paired data", method 10, with the correlation ``phi`` of the 2x2
    table (0 when a margin is empty).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired proportions need two non-empty arrays of the same shape")
    n = a.size
    both = int(np.sum(a & b))
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, level=level)
    l2, u2 = wilson_interval(both + only_b, n, level=level)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0
    if margins > 0:
        # Newcombe's continuity-corrected numerator: max(ad - bc - n/2, 0) when ad > bc.
        ad_bc = both * neither - only_a * only_b
        num = max(ad_bc - n / 2, 0) if ad_bc > 0 else ad_bc
        phi = num / math.sqrt(margins)
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return d, (max(-1.0, lo), min(1.0, hi))
