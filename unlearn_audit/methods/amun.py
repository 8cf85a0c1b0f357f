"""AMUN (Ebrahimpour-Boroojeny et al., ICML 2025): unlearning with minimal-epsilon adversarial examples."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.errors import ConfigError, DataError
from unlearn_audit.methods._common import (
    Progress,
    fit_epochs,
    frozen_copy,
    model_dtype,
    n_batches,
    sgd_optimizer,
)
from unlearn_audit.methods.base import RunResult, UnlearnData, UnlearningMethod, param
from unlearn_audit.methods.registry import register_method
from unlearn_audit.methods.salun import saliency_mask
from unlearn_audit.torchutil import evaluation_mode

__all__ = ["AdversarialSet", "Amun", "AmunSalun", "build_adversarial_set"]

logger = logging.getLogger(__name__)

_GRAD_FLOOR = 1e-10  # keeps the per-sample gradient normalisation finite when a gradient vanishes


@dataclass(frozen=True)
class AdversarialSet:
    """The adversarial set D_A built from a forget set, one row per forget sample.

    Attributes:
        x_adv: ``(N, ...)`` adversarial images in ``[0, 1]``, the first iterate the model
            misclassified (the forget image itself if it was already misclassified).
        y_adv: ``(N,)`` int64, the model's prediction on ``x_adv`` (wrong wherever ``success``).
        eps: ``(N,)`` L2 radius of the round in which the sample flipped; for failures the
            last radius tried. ``||x_adv - x||_2 <= eps`` always.
        delta_norm: ``(N,)`` ``||x_adv - x||_2``.
        success: ``(N,)`` bool, False where the search hit the round cap still correct.
        max_eps: the largest radius the search may try, ``eps_init * 2 ** max_doublings``.
    """

    x_adv: torch.Tensor
    y_adv: torch.Tensor
    eps: torch.Tensor
    delta_norm: torch.Tensor
    success: torch.Tensor
    max_eps: float

    @property
    def mean_eps(self) -> float:
        """Mean radius over the successful samples (NaN if none succeeded)."""
        return float(self.eps[self.success].mean()) if bool(self.success.any()) else math.nan

    @property
    def capped_share(self) -> float:
        """Fraction of samples whose search hit the round cap without flipping."""
        return float((~self.success).float().mean())


def build_adversarial_set(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps_init: float = 0.04,
    steps: int = 50,
    max_doublings: int = 10,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> AdversarialSet:
    """AMUN's minimal-epsilon search: L2 PGD with an epsilon that doubles until the label flips.

    AMUN ``pgdl2_modified.py: PGDL2``: untargeted L2 PGD maximising ``CE(f(x_adv), y)``, no
    random start, step ``alpha = eps / 10`` along the per-sample L2-normalised gradient, then
    projection onto the L2 ball of radius ``eps`` around ``x`` and clamping to ``[0, 1]``. The
    prediction is checked before every step and after the last one; a sample leaves the batch
    as soon as it is misclassified, freezing its ``x_adv``, ``eps`` and prediction. Samples
    still correct after ``steps`` steps double ``eps`` (and ``alpha``) and continue from their
    current ``x_adv``. Unlike the official loop, which runs until every sample flips, at most
    ``max_doublings`` doublings are tried so the search always terminates.

    Args:
        model: attacked as is, in eval mode (its mode is restored afterwards; no parameter
            gradients are touched).
        x: ``(N, ...)`` images in ``[0, 1]``.
        y: ``(N,)`` int64 labels the examples must move away from.
        eps_init: first L2 radius, [0, 1] pixel units (0.04).
        steps: PGD steps per radius (50).
        max_doublings: cap on the number of doublings (10, i.e. radius up to 40.96 by default).
        batch_size: samples attacked together (128); each sample's path is independent of the batch.
        device: where to run.
        progress: optional counter; ``steps * (max_doublings + 1)`` steps per batch.

    Returns:
        An :class:`AdversarialSet` with tensors on the CPU.

    Raises:
        ConfigError: a non-positive ``eps_init``, ``steps`` or ``batch_size``, or negative ``max_doublings``.
        DataError: ``x`` and ``y`` do not have matching ``(N, ...)`` / ``(N,)`` shapes.
    """
    if not eps_init > 0:
        raise ConfigError(f"eps_init must be > 0, got {eps_init!r}")
    if steps < 1 or max_doublings < 0 or batch_size < 1:
        raise ConfigError(
            f"need steps >= 1, max_doublings >= 0 and batch_size >= 1, got steps={steps!r}, "
            f"max_doublings={max_doublings!r}, batch_size={batch_size!r}"
        )
    if x.ndim < 2 or y.shape != (len(x),):
        raise DataError(f"x must be (N, ...) and y (N,), got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    dev = torch.device(device)
    dtype = model_dtype(model)
    rounds = max_doublings + 1
    xs, ys, epss, succ = [], [], [], []
    with evaluation_mode(model):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device=dev, dtype=dtype)
            yb = y[start : start + batch_size].to(dev)
            done_steps, result = _search_batch(model, xb, yb, eps_init=eps_init, steps=steps, rounds=rounds)
            if progress is not None:
                progress.step(steps * rounds)
            xs.append(result[0].cpu())
            ys.append(result[1].cpu())
            epss.append(result[2].cpu())
            succ.append(result[3].cpu())
            logger.debug("adversarial search batch at %d: %d PGD steps", start, done_steps)
    x_adv = torch.cat(xs)
    delta = (x_adv - x.detach().cpu().to(x_adv.dtype)).flatten(1).norm(dim=1)
    return AdversarialSet(
        x_adv=x_adv,
        y_adv=torch.cat(ys),
        eps=torch.cat(epss),
        delta_norm=delta,
        success=torch.cat(succ),
        max_eps=eps_init * 2.0**max_doublings,
    )


def _search_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps_init: float, steps: int, rounds: int
) -> tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Search one batch. All still-active samples share one radius, since they double together."""
    n = len(x)
    out_x = x.clone()
    out_pred = y.clone()
    out_eps = torch.full((n,), eps_init * 2.0 ** (rounds - 1), dtype=torch.float64, device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    active = torch.arange(n, device=x.device)
    x_adv = x.clone()
    pgd_steps = 0
    for r in range(rounds):
        eps = eps_init * 2.0**r
        alpha = eps / 10.0
        for s in range(steps + 1):
            x_in = x_adv.detach().requires_grad_(True)
            logits = model(x_in)
            pred = logits.argmax(dim=1)
            flipped = pred != y[active]
            if bool(flipped.any()):
                idx = active[flipped]
                out_x[idx] = x_adv[flipped].detach()
                out_pred[idx] = pred[flipped]
                out_eps[idx] = eps
                success[idx] = True
            keep = ~flipped
            if not bool(keep.any()):
                return pgd_steps, (out_x, out_pred, out_eps, success)
            if s == steps:  # the check after the last step of this radius
                x_adv, active = x_adv[keep].detach(), active[keep]
                break
            loss = F.cross_entropy(logits[keep], y[active[keep]], reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_in)
            grad = grad[keep]
            x0 = x[active[keep]]
            norm = grad.flatten(1).norm(dim=1).clamp_min(_GRAD_FLOOR)
            moved = x_adv[keep].detach() + alpha * grad / norm.view(-1, *([1] * (grad.ndim - 1)))
            delta = moved - x0
            dnorm = delta.flatten(1).norm(dim=1)
            factor = torch.clamp(eps / dnorm.clamp_min(_GRAD_FLOOR), max=1.0)
            x_adv = (x0 + delta * factor.view(-1, *([1] * (delta.ndim - 1)))).clamp(0.0, 1.0)
            active = active[keep]
            pgd_steps += 1
    # Samples still correct at the largest radius: keep the last iterate, not adversarial.
    out_x[active] = x_adv.detach()
    return pgd_steps, (out_x, out_pred, out_eps, success)


@dataclass(frozen=True)
class _AmunBase(UnlearningMethod):
    """AMUN's hyperparameters and run; the registered subclasses decide whether to apply SalUn's mask."""

    requires: ClassVar[frozenset[str]] = frozenset({"forget"})

    eps_init: float = param(0.04, "first L2 radius of the search, [0,1] pixel units; doubles each round")
    attack_steps: int = param(50, "L2-PGD steps per radius (step size = radius/10)")
    max_doublings: int = param(10, "cap on radius doublings; capped samples are left out of D_A")
    lr: float = param(0.01, "SGD learning rate")
    epochs: int = param(10, "passes over the training mix")
    batch_size: int = param(128, "samples per step and per attack batch")
    momentum: float = param(0.9, "SGD momentum")
    weight_decay: float = param(5e-4, "SGD L2 weight decay")
    lr_step_epochs: int = param(1, "StepLR period, epochs")
    lr_gamma: float = param(0.1, "StepLR multiplicative factor (0.1: lr drops 10x every period)")
    retain: Literal["use", "none"] = param("use", "'use': D_R u D_F u D_A; 'none': D_F u D_A")

    def _validate(self) -> None:
        if not self.eps_init > 0:
            raise self._bad("eps_init", "> 0")
        if self.attack_steps < 1:
            raise self._bad("attack_steps", ">= 1")
        if not 0 <= self.max_doublings <= 30:
            raise self._bad("max_doublings", "in [0, 30]")
        if self.lr_step_epochs < 1:
            raise self._bad("lr_step_epochs", ">= 1")
        if not 0 < self.lr_gamma <= 1:
            raise self._bad("lr_gamma", "in (0, 1]")

    def _mask_ratio(self) -> float | None:
        return None

    def _run(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> RunResult:
        use_retain = self.retain == "use"
        n_forget = len(data.forget_x)
        n_train = 2 * n_forget + (len(data.retain_x) if use_retain and data.retain_x is not None else 0)
        search_steps = math.ceil(n_forget / self.batch_size) * self.attack_steps * (self.max_doublings + 1)
        ratio = self._mask_ratio()
        mask_steps = n_batches(n_forget, self.batch_size) if ratio is not None else 0
        # n_train counts every adversarial example; failed searches are dropped and finish() tops up.
        progress.add_total(search_steps + mask_steps + self.epochs * n_batches(n_train, self.batch_size))

        adv = build_adversarial_set(
            frozen_copy(model),
            data.forget_x,
            data.forget_y,
            eps_init=self.eps_init,
            steps=self.attack_steps,
            max_doublings=self.max_doublings,
            batch_size=self.batch_size,
            device=device,
            progress=progress,
        )
        flipped = int(adv.success.sum())
        mean_delta = float(adv.delta_norm[adv.success].mean()) if flipped else math.nan
        notes = [
            f"adversarial set: {flipped}/{n_forget} forget samples flipped; mean eps {adv.mean_eps:.4g} "
            f"(L2, [0,1] pixels), mean ||delta|| {mean_delta:.4g}",
            f"{adv.capped_share:.1%} of searches hit the cap of {self.max_doublings} doublings "
            f"(eps {adv.max_eps:.4g}) without flipping and were left out of D_A",
        ]
        if flipped < n_forget:
            logger.warning(notes[-1])

        mask = None
        if ratio is not None:
            mask = saliency_mask(
                model, data.forget_x, data.forget_y, ratio=ratio, device=device, batch_size=self.batch_size
            )
            progress.step(mask_steps)

        parts_x = [data.forget_x.cpu(), adv.x_adv[adv.success].to(data.forget_x.dtype)]
        parts_y = [data.forget_y.cpu(), adv.y_adv[adv.success]]
        touched: tuple[str, ...] = ("forget",)
        if use_retain:
            assert data.retain_x is not None and data.retain_y is not None
            parts_x.append(data.retain_x.cpu())
            parts_y.append(data.retain_y.cpu())
            touched = ("forget", "retain")
        x_train, y_train = torch.cat(parts_x), torch.cat(parts_y)

        optimizer = sgd_optimizer(model, self)
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=self.lr_step_epochs, gamma=self.lr_gamma
        )
        fit_epochs(
            self,
            model,
            x_train,
            y_train,
            optimizer=optimizer,
            generator=generator,
            device=device,
            progress=progress,
            count_steps=False,
            scheduler=scheduler,
            mask=mask,
        )
        return RunResult(model=model, touched=touched, notes=tuple(notes))


@register_method("amun")
@dataclass(frozen=True)
class Amun(_AmunBase):
    """AMUN: fine-tune on the forget set plus its nearest adversarial examples, labelled as predicted.

    Ebrahimpour-Boroojeny, Sundaram, Chandrasekaran, "Not All Wrong is Bad: Using Adversarial
    Examples for Unlearning", ICML 2025 (``Ali-E/AMUN``). Step 1: for every forget sample,
    :func:`build_adversarial_set` finds an adversarial example at (near-)minimal L2 distance on
    the original model and labels it with the model's wrong prediction (D_A). Step 2: fine-tune
    with plain cross-entropy on D_R u D_F u D_A (forget samples keep their true labels), or on
    D_F u D_A when the retain set is not available (``retain="none"``). The adversarial
    examples lower the model's confidence on the forget samples towards the level of unseen
    data without the catastrophic forgetting that random labels cause.

    Defaults are the official ones (``hyperparam_tune.py``, ``pgdl2_modified.py``): SGD lr 0.01,
    momentum 0.9, wd 5e-4, 10 epochs, ``StepLR(step_size=1, gamma=0.1)``, batch 128; PGD-50 with
    eps from 0.04, doubling. Adaptations, kept deliberately small: (1) the search is capped at
    ``max_doublings`` (the official loop is unbounded; 0.04 * 2**10 = 41 exceeds the L2 diameter
    of a 32x32x3 [0, 1] image, 55, only for pathological models, so the cap rarely binds);
    samples that hit it are dropped from D_A and counted in the notes. (2) No crop/flip
    augmentation of D_R u D_F: inputs are plain tensors whose layout the method does not know.
    (3) D_A is built for the forget samples only (the official code builds it once for all
    training samples and indexes it; the forget rows are the same).

    Small data sets: the defaults are kept, but they were tuned for CIFAR-10, where one epoch
    is ~400 steps; the lr drops 10x after every epoch, so a small set gets only a handful of
    effective steps. On a 784-128-10 MLP with 400 forget / 3,600 retain MNIST digits the
    defaults leave the forget set as confident as before (mean true-class probability 0.99,
    retraining gives 0.92), whereas ``lr_gamma=1 lr=0.05 batch_size=32`` reaches 0.95 with
    retain accuracy 0.99. Tune ``lr``/``lr_gamma``/``batch_size`` for small models.

    Hyperparameters:
        eps_init: first L2 radius of the search, [0, 1] pixel units (0.04).
        attack_steps: L2-PGD steps per radius, step = radius / 10 (50).
        max_doublings: cap on radius doublings (10); capped samples are left out of D_A.
        lr: SGD learning rate (0.01).
        epochs: passes over the training mix (10).
        batch_size: samples per step and per attack batch (128).
        momentum: SGD momentum (0.9).
        weight_decay: SGD L2 weight decay (5e-4).
        lr_step_epochs: StepLR period in epochs (1).
        lr_gamma: StepLR factor (0.1): the lr drops 10x after every epoch by default.
        retain: "use" = D_R u D_F u D_A (needs the retain set), "none" = D_F u D_A.

    Reads: forget (+ retain). Approximate.
    """


@register_method("amun_salun")
@dataclass(frozen=True)
class AmunSalun(_AmunBase):
    """AMUN+SalUn: AMUN whose fine-tuning only updates the most forget-salient weights (SalUn mask).

    AMUN's ``amun_sa`` mode: identical to :class:`Amun`, but every step's gradient is multiplied
    by SalUn's weight-saliency mask (:func:`~unlearn_audit.methods.salun.saliency_mask`: the top
    ``mask_ratio`` of weights by forget-loss gradient magnitude on the original model) and
    masked-out weights are held at their original values. It is the best method in the paper's
    forget-only table.

    Hyperparameters: those of :class:`Amun`, plus
        mask_ratio: fraction of weights that may change (0.5).

    Reads: forget (+ retain). Approximate.
    """

    mask_ratio: float = param(0.5, "fraction of weights (largest forget-loss gradients) that may change")

    def _validate(self) -> None:
        super()._validate()
        if not 0 < self.mask_ratio <= 1:
            raise self._bad("mask_ratio", "in (0, 1]")

    def _mask_ratio(self) -> float | None:
        return self.mask_ratio
