"""GA: gradient ascent on the forget set's cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._common import Progress, sgd_finetune
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method


def _negative_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -F.cross_entropy(logits, y)


@register_method("gradient_ascent")
@dataclass(frozen=True)
class GradientAscent(UnlearningMethod):
    """GA (NegGrad): maximise cross-entropy on the forget set by SGD on ``-CE``.

    As in Unlearn-Sparse ``unlearn/GA.py`` (Thudi et al. 2022 style): only the forget set is
    used, so nothing anchors the rest of the model and the loss is unbounded. GA is very
    sensitive to the learning rate: the paper's 1e-4 is a typo (Unlearn-Sparse issue #5) and the
    maintainers recommend 5e-4 to 1e-3 (Unlearn-Saliency issues #8, #10); the default is 5e-4 with
    5 epochs. Too many steps destroy the model (AMUN's forget-only table: test accuracy 5%).

    Hyperparameters:
        lr: SGD learning rate (5e-4).
        epochs: passes over the forget set (5).
        batch_size: samples per step (128).
        momentum: SGD momentum (0.9).
        weight_decay: SGD L2 weight decay (5e-4).

    Reads: forget. Approximate.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget"})

    lr: float = param(5e-4, "SGD learning rate (GA is very lr-sensitive)")
    epochs: int = param(5, "passes over the forget set")
    batch_size: int = param(128, "samples per step")
    momentum: float = param(0.9, "SGD momentum")
    weight_decay: float = param(5e-4, "SGD L2 weight decay")

    def _run(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> RunResult:
        sgd_finetune(
            self,
            model,
            data.forget_x,
            data.forget_y,
            generator=generator,
            device=device,
            progress=progress,
            loss_fn=_negative_ce,
        )
        return RunResult(model=model, touched=("forget",))
