"""Boundary Shrink (Chen et al., CVPR 2023): relabel forget samples with their nearest wrong class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._common import (
    Progress,
    fit,
    frozen_copy,
    make_optimizer,
    model_dtype,
    n_batches,
    trainable,
)
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method


def fgsm_neighbour_labels(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bound: float,
    device: torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    """Boundary Shrink's "nearest wrong class": ``argmax f(FGSM(x, y, bound))``.

    One L-infinity FGSM step of size ``bound`` on ``model`` (used as is: pass a frozen,
    eval-mode copy), clamped to ``[0, 1]``. Returns int64 labels ``(N,)`` on the CPU; where the
    attack fails the label equals ``y``.
    """
    dtype = model_dtype(model)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device=device, dtype=dtype).requires_grad_(True)
        yb = y[i : i + batch_size].to(device)
        loss = F.cross_entropy(model(xb), yb, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        x_adv = (xb.detach() + bound * grad.sign()).clamp(0.0, 1.0)
        with torch.no_grad():
            out.append(model(x_adv).argmax(dim=1).cpu())
    return torch.cat(out)


@register_method("boundary_shrink")
@dataclass(frozen=True)
class BoundaryShrink(UnlearningMethod):
    """BS: fine-tune each forget sample toward the class an FGSM step pushes it into.

    Chen et al., "Boundary Unlearning", CVPR 2023 (``boundary_unlearning.py: boundary_shrink``;
    ports in Unlearn-Saliency ``boundary_sh.py`` and AMUN). For each forget sample, FGSM with
    L-infinity step ``bound`` on the frozen original model gives ``x_adv``; the neighbour label
    is ``argmax f_orig(x_adv)``; the model is then trained with ``CE(f(x), y_nbr)`` on the clean
    forget images. As the original model is frozen, the neighbour labels are computed once.
    Differences from the official code: no rounding of ``x_adv`` to 1/255 (inputs here need not
    be 8-bit images), and no optional curvature/weighting terms. Defaults are the official
    ones (SGD lr 1e-5, momentum 0.9, no weight decay, 10 epochs, batch 64), which were tuned for
    class-wise forgetting; OPTML-style evaluations grid-search ``lr``.

    Hyperparameters:
        bound: FGSM L-infinity step in [0, 1] pixel units (0.1).
        lr: SGD learning rate (1e-5).
        epochs: passes over the forget set (10).
        batch_size: samples per step (64).
        momentum: SGD momentum (0.9).
        weight_decay: SGD L2 weight decay (0).

    Reads: forget. Approximate.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget"})

    bound: float = param(0.1, "FGSM L-inf step, [0,1] pixel units")
    lr: float = param(1e-5, "SGD learning rate")
    epochs: int = param(10, "passes over the forget set")
    batch_size: int = param(64, "samples per step")
    momentum: float = param(0.9, "SGD momentum")
    weight_decay: float = param(0.0, "SGD L2 weight decay")

    def _validate(self) -> None:
        if not 0 < self.bound <= 1:
            raise self._bad("bound", "in (0, 1]")

    def _run(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> RunResult:
        y_nbr = fgsm_neighbour_labels(
            frozen_copy(model), data.forget_x, data.forget_y, bound=self.bound, device=device
        )
        unchanged = float((y_nbr == data.forget_y.cpu()).float().mean())
        optimizer = make_optimizer(
            trainable(model), kind="sgd", lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        progress.add_total(self.epochs * n_batches(len(data.forget_x), self.batch_size))
        fit(
            model,
            data.forget_x,
            y_nbr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=optimizer,
            generator=generator,
            device=device,
            progress=progress,
        )
        progress.finish()
        note = f"FGSM (bound {self.bound:g}) left {unchanged:.1%} of forget samples on their own label"
        return RunResult(model=model, touched=("forget",), notes=(note,))
