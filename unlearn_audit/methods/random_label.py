"""RL: fine-tune on the forget set relabelled with random wrong classes (plus the retain set)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from unlearn_audit.methods._common import Progress, random_wrong_labels, sgd_finetune
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method


@register_method("random_label")
@dataclass(frozen=True)
class RandomLabel(UnlearningMethod):
    """RL: fine-tune on the forget set with uniformly random wrong labels, mixed with the retain set.

    Golatkar et al. 2020's baseline as re-implemented in AMUN (``RLDataset``, ``ConcatDataset``):
    each forget sample gets a label drawn uniformly from the other ``num_classes - 1`` classes,
    redrawn every epoch, and the relabelled forget set is concatenated with the retain set
    (true labels) and shuffled. With ``retain="none"`` only the relabelled forget set is used
    (AMUN's forget-only setting). Defaults follow AMUN/OPTML: SGD lr 0.01, 10 epochs, momentum
    0.9, wd 5e-4, batch 128, constant lr.

    Hyperparameters:
        lr: SGD learning rate (0.01).
        epochs: passes over the training mix (10).
        batch_size: samples per step (128).
        momentum: SGD momentum (0.9).
        weight_decay: SGD L2 weight decay (5e-4).
        retain: "use" = mix in the retain set (needs it), "none" = forget set only.

    Reads: forget (+ retain). Approximate.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget"})

    lr: float = param(0.01, "SGD learning rate")
    epochs: int = param(10, "passes over the training mix")
    batch_size: int = param(128, "samples per step")
    momentum: float = param(0.9, "SGD momentum")
    weight_decay: float = param(5e-4, "SGD L2 weight decay")
    retain: Literal["use", "none"] = param("use", "'use': add the retain set; 'none': forget set only")

    def _run(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> RunResult:
        x, labels_for_epoch, touched = relabelled_mix(
            data, use_retain=self.retain == "use", generator=generator
        )
        sgd_finetune(self, model, x, labels_for_epoch, generator=generator, device=device, progress=progress)
        return RunResult(model=model, touched=touched)


def relabelled_mix(
    data: UnlearnData, *, use_retain: bool, generator: torch.Generator
) -> tuple[torch.Tensor, Callable[[int], torch.Tensor], tuple[str, ...]]:
    """Inputs ``forget (+ retain)`` and a per-epoch label function: random wrong forget labels
    (redrawn each epoch from ``generator``) followed by the true retain labels."""
    forget_y = data.forget_y.cpu()
    if use_retain:
        assert data.retain_x is not None and data.retain_y is not None
        x = torch.cat([data.forget_x, data.retain_x.to(data.forget_x.device)])
        retain_y = data.retain_y.cpu()
        touched: tuple[str, ...] = ("forget", "retain")
    else:
        x = data.forget_x
        retain_y = forget_y[:0]
        touched = ("forget",)

    def labels_for_epoch(epoch: int) -> torch.Tensor:
        return torch.cat([random_wrong_labels(forget_y, data.num_classes, generator), retain_y])

    return x, labels_for_epoch, touched
