"""FT: fine-tune on the retain set (catastrophic forgetting as unlearning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from unlearn_audit.methods._common import Progress, sgd_finetune
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method


@register_method("finetune")
@dataclass(frozen=True)
class Finetune(UnlearningMethod):
    """FT: continue training the original model with cross-entropy on the retain set only.

    Baseline of Warnecke et al. / Golatkar et al. as re-implemented in Unlearn-Sparse
    (``unlearn/FT.py``) and AMUN (``adversarial_unlearn.py``): the forget set is never shown
    again and is meant to fade by catastrophic forgetting. Defaults follow Unlearn-Sparse
    (lr 0.01, 10 epochs, SGD momentum 0.9, wd 5e-4; batch 128 as in its Table A1), with a
    constant learning rate.

    Hyperparameters:
        lr: SGD learning rate (0.01).
        epochs: passes over the retain set (10).
        batch_size: samples per step (128).
        momentum: SGD momentum (0.9).
        weight_decay: SGD L2 weight decay (5e-4).

    Reads: retain. Approximate.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget", "retain"})

    lr: float = param(0.01, "SGD learning rate")
    epochs: int = param(10, "passes over the retain set")
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
        assert data.retain_x is not None and data.retain_y is not None
        sgd_finetune(
            self, model, data.retain_x, data.retain_y, generator=generator, device=device, progress=progress
        )
        return RunResult(model=model, touched=("retain",))
