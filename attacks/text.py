"""PGD on texts in embedding space: token ids have no gradient, their embeddings do.

The threat model (``attacks.threat``, family ``text``): every non-padding token's embedding
vector may move by at most ``eps`` in each coordinate (L-inf), padding positions never move.
It is a continuous relaxation of word substitution (a nearby vector need not be any word), so
it bounds from above what small lexical changes could do; it is the usual setting of adversarial
training for text (Miyato et al. 2017, "Adversarial training methods for semi-supervised text
classification", perturb the embeddings).

The model must expose the split at its embedding (see ``unlearn_audit.archs.TextBag``):
``embed(tokens) -> N x L x E`` and ``classify_embedded(embedded, tokens) -> N x K`` with
``forward(tokens) == classify_embedded(embed(tokens), tokens)``. A model without it (e.g. a
TorchScript export) cannot be attacked this way: :func:`has_embedding_hook` says so first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.pgd import sample_like
from attacks.tabular import BatchOutcome

__all__ = ["embedding_pgd", "has_embedding_hook"]


def has_embedding_hook(model: nn.Module) -> bool:
    return callable(getattr(model, "embed", None)) and callable(getattr(model, "classify_embedded", None))


def _step(
    model: nn.Module, embedded: Tensor, delta: Tensor, tokens: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Logits at ``embedded + delta`` and the gradient of the summed cross-entropy w.r.t. ``delta``."""
    delta = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.classify_embedded(embedded + delta, tokens)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        grad = torch.autograd.grad(loss, delta, allow_unused=True)[0] if loss.requires_grad else None
    return logits.detach(), torch.zeros_like(delta) if grad is None else grad.detach()


def embedding_pgd(
    model: nn.Module,
    tokens: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    pad_id: int = 0,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> BatchOutcome:
    """PGD L-inf on the embeddings of one batch; an example is fooled if any iterate is misclassified.

    The model's mode and gradients are the caller's business (``attacks.robust.attack_guard``).
    """
    y = y.long()
    embedded = model.embed(tokens).detach()
    mask = (tokens != pad_id).unsqueeze(-1).to(embedded.dtype)
    delta = torch.zeros_like(embedded)
    logits, grad = _step(model, embedded, delta, tokens, y)
    clean = logits.argmax(1) == y
    zero = grad.flatten(1).abs().amax(dim=1) == 0
    fooled = ~clean
    if random_start:
        delta = (2.0 * sample_like(torch.rand, embedded, generator) - 1.0) * eps * mask
    for _ in range(steps + 1):
        logits, grad = _step(model, embedded, delta, tokens, y)
        fooled |= logits.argmax(1) != y
        if bool(fooled.all()):
            break
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps) * mask
    return BatchOutcome(clean_correct=clean, robust_correct=~fooled, zero_gradient=zero)
