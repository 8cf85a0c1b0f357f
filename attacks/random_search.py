"""A gradient-free attack: random search for a lower classification margin inside the eps ball.

It only queries the model's logits, so masking the gradient (rounding, a detached output, a hard
argmax) does not stop it. That is its whole purpose here: an example it fools but PGD does not
is evidence that PGD's robust accuracy is an over-estimate (Carlini et al. 2019, "On evaluating
adversarial robustness"; Croce & Hein 2020 use the Square attack the same way in AutoAttack).

The search follows the Square attack in spirit (Andriushchenko et al. 2020) with a simpler
proposal that works for any input shape: L-inf starts at a random vertex of the ball and then
redraws the signs of a random subset of coordinates, L2 adds Gaussian noise on a random subset
and projects back; a proposal is kept when it lowers the margin. The subset shrinks as the
search goes on, from coarse to fine moves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.pgd import project, sample_like
from attacks.spec import NORMS, check_choice, check_count, check_eps

__all__ = ["random_search_perturb"]

# Share of the coordinates redrawn by the first proposals; later ones redraw fewer (see _share).
_FIRST_SHARE = 0.1


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Logit of the true class minus the best other logit: negative once the model is fooled."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.amax(dim=1)


def _share(query: int, queries: int, dim: int) -> float:
    """Coordinates to redraw at ``query``: halved at every eighth of the budget, at least one."""
    return max(_FIRST_SHARE * 0.5 ** (8 * query // max(queries, 1)), 1.0 / dim)


def _propose(
    x_best: Tensor, x0: Tensor, eps: float, norm: str, share: float, generator: torch.Generator | None
) -> Tensor:
    """A random move of ``x_best`` on about ``share`` of its coordinates, inside the threat model."""
    chosen = sample_like(torch.rand, x0, generator) < share
    if norm == "linf":
        signs = torch.where(sample_like(torch.rand, x0, generator) < 0.5, -eps, eps)
        return project(torch.where(chosen, x0 + signs, x_best), x0, eps, norm)
    step = sample_like(torch.randn, x0, generator) * chosen * (eps / max(share * x0[0].numel(), 1.0) ** 0.5)
    return project(x_best + step, x0, eps, norm)


@torch.no_grad()
def random_search_perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    queries: int = 300,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Adversarial inputs found with up to ``queries`` model queries per example, no gradients.

    An example stops being queried once it is misclassified. Like the other attacks it leaves the
    model's mode alone (the caller decides) and does not mutate ``x`` or ``y``.

    Args:
        model: returns logits ``N x K`` for inputs in [0, 1].
        x: ``N x ...`` float in [0, 1]; y: ``N`` class indices.
        eps: radius in pixel units, >= 0.
        norm: ``"linf"`` (default) or ``"l2"``.
        queries: proposals per example after the random start (>= 0).
        generator: ``torch.Generator`` for the proposals (default: the global RNG).

    Returns:
        Detached adversarial inputs, same shape, dtype and device as ``x``.
    """
    eps = check_eps(eps)
    norm = check_choice(norm, NORMS, "norm")
    check_count(queries, "queries", 0)
    x0 = x.detach()
    if eps == 0.0 or x0.shape[0] == 0:
        return x0.clone()
    x_best = _propose(x0, x0, eps, norm, 1.0, generator)
    best = _margin(model(x_best), y)
    for query in range(queries):
        active = (best >= 0).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        share = _share(query, queries, x0[0].numel())
        candidate = _propose(x_best[active], x0[active], eps, norm, share, generator)
        margin = _margin(model(candidate), y[active])
        better = margin < best[active]
        x_best[active[better]] = candidate[better]
        best[active[better]] = margin[better]
    return x_best.detach()
