"""SalUn (Fan et al., ICLR 2024): random-label unlearning restricted to salient weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._common import (
    ParamMask,
    Progress,
    batches,
    fit_epochs,
    model_dtype,
    n_batches,
    sgd_optimizer,
)
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.random_label import relabelled_mix
from unlearn_audit.methods.registry import register_method
from unlearn_audit.torchutil import evaluation_mode


def saliency_mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    ratio: float,
    device: torch.device,
    batch_size: int = 128,
) -> ParamMask:
    """SalUn's weight-saliency mask: the top ``ratio`` of weights by ``|d CE(forget) / d theta|``.

    Unlearn-Saliency ``generate_mask.py: save_gradient_ratio``: one pass over the forget set in
    eval mode, gradients of the forget loss summed over batches (the sign of SalUn's ``-CE`` does
    not change ``|g|``), ranked globally across all trainable parameters. Returns, for every
    trainable parameter name, a bool tensor of its shape (True = salient, may be updated). The
    model's mode and ``.grad`` fields are left as they were.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    dtype = model_dtype(model)
    with evaluation_mode(model):
        for idx in batches(len(x), batch_size, shuffle=False):
            xb = x[idx.to(x.device)].to(device=device, dtype=dtype)
            yb = y[idx.to(y.device)].to(device)
            loss = F.cross_entropy(model(xb), yb)
            for (name, _), g in zip(
                params.items(), torch.autograd.grad(loss, list(params.values())), strict=True
            ):
                grads[name] += g
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    k = int(len(flat) * ratio)
    keep_flat = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    if k > 0:
        keep_flat[torch.topk(flat, k, sorted=False).indices] = True
    mask: ParamMask = {}
    offset = 0
    for name, g in grads.items():
        mask[name] = keep_flat[offset : offset + g.numel()].view_as(g)
        offset += g.numel()
    return mask


@register_method("salun")
@dataclass(frozen=True)
class Salun(UnlearningMethod):
    """SalUn: random-label fine-tuning that only updates the most forget-salient half of the weights.

    Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency",
    ICLR 2024 (Unlearn-Saliency ``generate_mask.py`` + ``unlearn/RL.py``; AMUN's ``salun``
    re-implementation). Step 1: :func:`saliency_mask` keeps the top ``ratio`` (0.5, the README's
    ``with_0.5.pt``) of weights by forget-loss gradient magnitude. Step 2: RL as in
    :class:`~unlearn_audit.methods.random_label.RandomLabel` (forget set with random wrong labels,
    redrawn each epoch, concatenated with the retain set), where gradients are multiplied by the
    mask and masked-out weights are held at their original values with zeroed momentum (the fix
    of Unlearn-Saliency PR #33). Following AMUN's re-implementation, labels are drawn from the
    wrong classes and the two sets are shuffled together (the official CIFAR-10 loop draws from
    all classes and runs forget and retain passes one after another). Defaults: README lr 0.013,
    10 epochs, batch 256, SGD momentum 0.9, wd 5e-4.

    Hyperparameters:
        ratio: fraction of weights that may change (0.5).
        lr: SGD learning rate (0.013).
        epochs: passes over the training mix (10).
        batch_size: samples per step (256).
        momentum: SGD momentum (0.9).
        weight_decay: SGD L2 weight decay (5e-4).
        retain: "use" = mix in the retain set (needs it), "none" = forget set only.

    Reads: forget (+ retain). Approximate.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget"})

    ratio: float = param(0.5, "fraction of weights (largest forget-loss gradients) that may change")
    lr: float = param(0.013, "SGD learning rate")
    epochs: int = param(10, "passes over the training mix")
    batch_size: int = param(256, "samples per step")
    momentum: float = param(0.9, "SGD momentum")
    weight_decay: float = param(5e-4, "SGD L2 weight decay")
    retain: Literal["use", "none"] = param("use", "'use': add the retain set; 'none': forget set only")

    def _validate(self) -> None:
        if not 0 < self.ratio <= 1:
            raise self._bad("ratio", "in (0, 1]")

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
        mask_steps = n_batches(len(data.forget_x), self.batch_size)
        progress.add_total(mask_steps + self.epochs * n_batches(len(x), self.batch_size))
        mask = saliency_mask(
            model, data.forget_x, data.forget_y, ratio=self.ratio, device=device, batch_size=self.batch_size
        )
        progress.step(mask_steps)
        fit_epochs(
            self,
            model,
            x,
            labels_for_epoch,
            optimizer=sgd_optimizer(model, self),
            generator=generator,
            device=device,
            progress=progress,
            count_steps=False,
            mask=mask,
        )
        share = float(sum(int(m.sum()) for m in mask.values())) / max(
            1, sum(m.numel() for m in mask.values())
        )
        return RunResult(
            model=model, touched=touched, notes=(f"saliency mask frees {share:.1%} of the weights",)
        )
