"""Retrain: the exact-unlearning gold standard (train from scratch on the retain set)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from unlearn_audit.methods._common import Progress, fit_epochs, make_optimizer, reinitialize, trainable
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method

logger = logging.getLogger(__name__)


@register_method("retrain")
@dataclass(frozen=True)
class Retrain(UnlearningMethod):
    """Exact unlearning: re-initialise every layer, then train from scratch on the retain set only.

    Every submodule with a ``reset_parameters()`` method (Linear, Conv, BatchNorm, ...) is
    re-initialised under the run's seed, so the result does not depend on the input model's
    weights, only on its architecture. The forget set is never read.

    The papers retrain with their original recipe (e.g. 182 epochs of SGD lr 0.1 on CIFAR-10,
    OPTML; 201 epochs in AMUN). That is far too slow as a default for an audit tool on CPU, so the
    defaults are a short Adam schedule that fits small models (MLPs, small CNNs on 8x8 - 32x32
    images) in seconds to minutes; raise ``epochs`` to match how the original model was trained.

    Hyperparameters:
        lr: Adam learning rate (1e-3).
        epochs: passes over the retain set (10).
        batch_size: samples per step (128).
        weight_decay: Adam L2 weight decay (0).

    Reads: retain. Exact (up to the stochasticity of training).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget", "retain"})

    lr: float = param(1e-3, "Adam learning rate")
    epochs: int = param(10, "passes over the retain set")
    batch_size: int = param(128, "samples per step")
    weight_decay: float = param(0.0, "Adam L2 weight decay")

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
        notes: list[str] = []
        skipped = reinitialize(model)
        if skipped:
            msg = (
                f"modules without reset_parameters() kept their original weights: {', '.join(skipped)}; "
                "the retrained model is not independent of the original there"
            )
            logger.warning(msg)
            notes.append(msg)
        optimizer = make_optimizer(trainable(model), kind="adam", lr=self.lr, weight_decay=self.weight_decay)
        fit_epochs(
            self,
            model,
            data.retain_x,
            data.retain_y,
            optimizer=optimizer,
            generator=generator,
            device=device,
            progress=progress,
        )
        return RunResult(model=model, touched=("retain",), notes=tuple(notes))
