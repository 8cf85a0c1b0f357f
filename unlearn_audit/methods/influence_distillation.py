"""Influence distillation: distil the original on the retain set, pushed away from it on the forget set."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._common import (
    Progress,
    batches,
    frozen_copy,
    make_optimizer,
    model_dtype,
    n_batches,
    optimizer_step,
    reinitialize,
    trainable,
)
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method


def per_sample_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(t) || softmax(s))`` for each row, shape ``(B,)``, in nats."""
    log_p_t = F.log_softmax(teacher_logits, dim=1)
    log_p_s = F.log_softmax(student_logits, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


@register_method("influence_distillation")
@dataclass(frozen=True)
class InfluenceDistillation(UnlearningMethod):
    """Influence distillation: logit-match the original on retain data, minus a bounded KL on forget data.

    From the "Influence distillation" method of the Machine Unlearning course project
    (Agrawal, Jain, Saransh, Vivek; seed notes): offline distillation with logit matching from
    the original (teacher) into a student, where instead of a Hessian-based influence function
    the forget set enters through a cheap penalty that rewards the student for disagreeing
    with the teacher there. The student is trained "fresh" (``student_init="reinit"``, every
    layer re-initialised under the seed; the project's main variant) or starts as a copy of the
    teacher (``"copy"``, the project's cheaper "pretend the teacher is the student" variant).
    The project's student could be smaller; here it keeps the teacher's architecture. The
    project describes its influence term only as "the negative of [the] loss on the teacher
    model"; here it is the bounded negative divergence from the teacher on the forget set.
    A re-initialised student needs about as many epochs as training from scratch; the
    default 10 is a short schedule for small models. The loss of one step, on a retain batch
    R and a forget batch F (forget batches are cycled), is::

        match(s(R), t(R)) + ce_weight * CE(s(R), y_R)
            - forget_weight * mean_{x in F} min(KL(t(x) || s(x)), kl_bound)

    with ``match`` the mean squared logit difference (``distill="mse"``) or
    ``T^2 * KL_T(t || s)`` (``distill="kl"``). The per-sample clamp makes the penalty bounded:
    a forget sample stops being pushed once the student's prediction is ``kl_bound`` nats from
    the teacher's (default ``ln(num_classes)``: a confident teacher label then gets no more than
    chance probability), so the objective cannot run away as gradient ascent does.

    Relation to naive fine-tuning: the project found that fine-tuning the teacher on a
    forget-only objective ("naive fine-tuning") forgets everything, because nothing in the loss
    keeps what was learnt on the other data. The distillation term on the retain set is that
    anchor. With ``student_init="copy"`` and ``forget_weight=0`` the method reduces to
    fine-tuning on the retain set with the teacher's logits as (soft) targets, i.e. FT
    (:class:`~unlearn_audit.methods.finetune.Finetune`) plus self-distillation; with
    ``"reinit"`` and ``forget_weight=0`` it is retraining on the retain set with a teacher,
    which may still leak forget-set information through the teacher's logits on similar data.

    Hyperparameters:
        student_init: "reinit" (fresh student) or "copy" (start from the original).
        distill: "mse" (logit matching) or "kl" (temperature-scaled KL).
        temperature: temperature for ``distill="kl"`` (4).
        ce_weight: weight of the retain cross-entropy (NLL) term (1.0).
        forget_weight: weight of the forget-set penalty (1.0).
        kl_bound: per-sample cap of the forget KL, nats; None = ln(num_classes).
        lr: Adam learning rate (1e-3).
        epochs: passes over the retain set (10).
        batch_size: retain samples per step (128).
        forget_batch_size: forget samples per step, cycled (32).
        weight_decay: Adam L2 weight decay (0).

    Reads: forget and retain. Approximate.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget", "retain"})

    student_init: Literal["reinit", "copy"] = param(
        "reinit", "'reinit': fresh student; 'copy': start from the original"
    )
    distill: Literal["mse", "kl"] = param(
        "mse", "retain loss: 'mse' logit matching or 'kl' (temperature-scaled)"
    )
    temperature: float = param(4.0, "temperature for distill='kl'")
    ce_weight: float = param(1.0, "weight of retain cross-entropy (NLL)")
    forget_weight: float = param(1.0, "weight of the forget-set influence penalty")
    kl_bound: float | None = param(None, "per-sample cap of the forget KL, nats; none = ln(num_classes)")
    lr: float = param(1e-3, "Adam learning rate")
    epochs: int = param(10, "passes over the retain set")
    batch_size: int = param(128, "retain samples per step")
    forget_batch_size: int = param(32, "forget samples per step (cycled)")
    weight_decay: float = param(0.0, "Adam L2 weight decay")

    def _validate(self) -> None:
        if not self.temperature > 0:
            raise self._bad("temperature", "> 0")
        if self.ce_weight < 0:
            raise self._bad("ce_weight", ">= 0")
        if self.forget_weight < 0:
            raise self._bad("forget_weight", ">= 0")
        if self.kl_bound is not None and not self.kl_bound > 0:
            raise self._bad("kl_bound", "> 0 or none")
        if self.forget_batch_size < 1:
            raise self._bad("forget_batch_size", ">= 1")

    def _retain_match(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.distill == "mse":
            return F.mse_loss(s, t)
        return per_sample_kl(t / self.temperature, s / self.temperature).mean() * self.temperature**2

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
        teacher = frozen_copy(model)
        notes: list[str] = []
        if self.student_init == "reinit":
            skipped = reinitialize(model)
            if skipped:
                notes.append(
                    f"modules without reset_parameters() kept the teacher's weights: {', '.join(skipped)}"
                )
        bound = self.kl_bound if self.kl_bound is not None else math.log(data.num_classes)
        dtype = model_dtype(model)
        optimizer = make_optimizer(trainable(model), kind="adam", lr=self.lr, weight_decay=self.weight_decay)
        progress.add_total(self.epochs * n_batches(len(data.retain_x), self.batch_size))
        forget_queue: list[torch.Tensor] = []
        model.train()
        for _ in range(self.epochs):
            for idx in batches(len(data.retain_x), self.batch_size, generator):
                xr = data.retain_x[idx.to(data.retain_x.device)].to(device=device, dtype=dtype)
                yr = data.retain_y[idx.to(data.retain_y.device)].to(device)
                if not forget_queue:
                    forget_queue = batches(len(data.forget_x), self.forget_batch_size, generator)
                fidx = forget_queue.pop(0)
                xf = data.forget_x[fidx.to(data.forget_x.device)].to(device=device, dtype=dtype)
                with torch.no_grad():
                    tr, tf = teacher(xr), teacher(xf)
                sr, sf = model(xr), model(xf)
                loss = self._retain_match(sr, tr) + self.ce_weight * F.cross_entropy(sr, yr)
                if self.forget_weight > 0:
                    loss = loss - self.forget_weight * per_sample_kl(tf, sf).clamp(max=bound).mean()
                optimizer_step(model, optimizer, loss)
                progress.step()
        progress.finish()
        notes.append(f"forget KL bound {bound:.4g} nats per sample")
        return RunResult(model=model, touched=("forget", "retain"), notes=tuple(notes))
