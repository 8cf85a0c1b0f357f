"""l1-sparse (Jia et al., NeurIPS 2023): fine-tune on the retain set with a decaying l1 penalty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from unlearn_audit.methods._common import Progress, l1_norm, sgd_finetune
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method


def l1_alpha(alpha: float, epoch: int, epochs: int, no_l1_epochs: int) -> float:
    """Unlearn-Sparse's decay: ``alpha * (1 - epoch / (E - no_l1))``, then 0 in the last ``no_l1`` epochs."""
    active = epochs - no_l1_epochs
    if epoch >= active:
        return 0.0
    return alpha * (1.0 - epoch / active)


@register_method("l1_sparse")
@dataclass(frozen=True)
class L1Sparse(UnlearningMethod):
    """l1-sparse: FT on the retain set plus ``alpha_t * ||theta||_1``, alpha decaying linearly to 0.

    Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023
    (Unlearn-Sparse ``unlearn/FT.py: FT_l1``). The penalty weight for epoch ``t`` (0-based) is
    ``alpha * (1 - t / (epochs - no_l1_epochs))`` and 0 in the last ``no_l1_epochs`` epochs; the
    l1 norm runs over all trainable parameters. (AMUN's re-implementation compounds the decay
    multiplicatively, a quirk not copied here.) Defaults: lr 0.01, 10 epochs, alpha 5e-4 (the
    value AMUN and later papers use), SGD momentum 0.9, wd 5e-4, batch 128.

    Hyperparameters:
        alpha: initial l1 weight (5e-4, per parameter-sum of |theta|).
        no_l1_epochs: final epochs without the penalty (0).
        lr: SGD learning rate (0.01).
        epochs: passes over the retain set (10).
        batch_size: samples per step (128).
        momentum: SGD momentum (0.9).
        weight_decay: SGD L2 weight decay (5e-4).

    Reads: retain. Approximate.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget", "retain"})

    alpha: float = param(5e-4, "initial l1 penalty weight, decays linearly to 0")
    no_l1_epochs: int = param(0, "last epochs trained without the l1 penalty")
    lr: float = param(0.01, "SGD learning rate")
    epochs: int = param(10, "passes over the retain set")
    batch_size: int = param(128, "samples per step")
    momentum: float = param(0.9, "SGD momentum")
    weight_decay: float = param(5e-4, "SGD L2 weight decay")

    def _validate(self) -> None:
        if self.alpha < 0:
            raise self._bad("alpha", ">= 0")
        if not 0 <= self.no_l1_epochs <= self.epochs:
            raise self._bad("no_l1_epochs", f"in [0, epochs={self.epochs}]")

    def _run(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> RunResult:
        assert data.retain_x is not None and data.retain_y is not None

        def penalty(m: nn.Module, epoch: int) -> torch.Tensor:
            return l1_alpha(self.alpha, epoch, self.epochs, self.no_l1_epochs) * l1_norm(m)

        sgd_finetune(
            self,
            model,
            data.retain_x,
            data.retain_y,
            generator=generator,
            device=device,
            progress=progress,
            penalty=penalty,
        )
        return RunResult(model=model, touched=("retain",))
