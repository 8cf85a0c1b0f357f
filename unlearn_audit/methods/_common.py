"""Building blocks shared by the unlearning methods: copying, seeding, batching, training.

Nothing here is specific to one paper. The one training loop, :func:`fit`, covers every
method that is "minimise some loss over shuffled mini-batches for a few epochs"
(retrain, FT, GA, RL, BS, l1-sparse, SalUn, AMUN); :func:`fit_epochs` runs it for a method's
own ``epochs`` and ``batch_size`` as the last part of a run, and :func:`sgd_finetune` adds the
SGD optimizer built from the method's ``lr``, ``momentum`` and ``weight_decay``. SCRUB and
influence distillation write their own loops from :func:`batches`, :func:`optimizer_step` and
:class:`Progress`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.errors import ModelError

__all__ = [
    "EpochRecipe",
    "Progress",
    "SgdRecipe",
    "batches",
    "clone_model",
    "fit",
    "fit_epochs",
    "frozen_copy",
    "l1_norm",
    "make_optimizer",
    "model_dtype",
    "n_batches",
    "optimizer_step",
    "random_wrong_labels",
    "reinitialize",
    "seeded",
    "sgd_finetune",
    "sgd_optimizer",
    "trainable",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits, targets) -> scalar``."""

ParamMask = dict[str, torch.Tensor]
"""Parameter name -> bool tensor of the parameter's shape; True = may change."""

Penalty = Callable[[nn.Module, int], torch.Tensor]
"""``penalty(model, epoch) -> scalar`` added to every batch loss."""


class EpochRecipe(Protocol):
    """A method whose fields say how long to train: ``epochs`` passes of ``batch_size`` samples."""

    @property
    def epochs(self) -> int: ...

    @property
    def batch_size(self) -> int: ...


class SgdRecipe(EpochRecipe, Protocol):
    """A method trained with SGD whose fields give ``lr``, ``momentum`` and ``weight_decay``."""

    @property
    def lr(self) -> float: ...

    @property
    def momentum(self) -> float: ...

    @property
    def weight_decay(self) -> float: ...


class Progress:
    """Counts units of work and forwards ``(done, total)`` to an optional callback.

    ``total`` may grow with :meth:`add_total` before the work starts; :meth:`finish` makes the
    last report read ``(total, total)`` even when some planned steps were skipped.
    """

    def __init__(self, callback: Callable[[int, int], None] | None) -> None:
        self._callback = callback
        self.done = 0
        self.total = 0

    def add_total(self, steps: int) -> None:
        self.total += steps

    def step(self, k: int = 1) -> None:
        self.done = min(self.done + k, self.total)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def finish(self) -> None:
        if self.done < self.total:
            self.step(self.total - self.done)


def clone_model(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A deep copy of ``model`` (parameters, buffers, hooks, train flag), moved to ``device``.

    Raises:
        ModelError: the model cannot be deep-copied (e.g. it holds an open file handle).
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        clone = copy.deepcopy(model)
    except Exception as exc:  # deepcopy raises whatever the offending attribute raises
        raise ModelError(
            f"cannot copy model of type {type(model).__name__} ({exc}); unlearning never modifies the "
            "input model, so it must be deep-copyable"
        ) from exc
    return clone.to(device) if device is not None else clone


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with gradients off: a fixed teacher or attack target."""
    frozen = clone_model(model)
    frozen.eval()
    frozen.requires_grad_(False)
    return frozen


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (CPU, and ``device`` if CUDA) inside the block, restore it after.

    The global RNG drives dropout and ``reset_parameters``; batch order uses explicit
    ``torch.Generator`` objects instead.
    """
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer (float32 if none)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def reinitialize(model: nn.Module) -> list[str]:
    """Call ``reset_parameters()`` on every submodule that has one, in place.

    Returns the names of submodules that own parameters directly but have no
    ``reset_parameters`` (their parameters keep their old values).
    """
    skipped: list[str] = []
    for name, module in model.named_modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        elif any(True for _ in module.parameters(recurse=False)):
            skipped.append(name or type(module).__name__)
    return skipped


def n_batches(n: int, batch_size: int) -> int:
    """How many batches :func:`batches` yields for ``n`` samples."""
    if n <= 0:
        return 0
    k = -(-n // batch_size)
    if k > 1 and n - (k - 1) * batch_size == 1:
        k -= 1  # a trailing singleton is merged into the previous batch
    return k


def batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, *, shuffle: bool = True
) -> list[torch.Tensor]:
    """Index tensors that split ``range(n)`` into mini-batches.

    A trailing batch of a single sample is merged into the one before it, because BatchNorm
    in train mode cannot normalise one sample. Shuffling uses ``generator`` (CPU).
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
        chunks.pop()
    return chunks


def make_optimizer(
    params: Sequence[nn.Parameter],
    *,
    kind: Literal["sgd", "adam"],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam over ``params``."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def sgd_optimizer(model: nn.Module, recipe: SgdRecipe) -> torch.optim.Optimizer:
    """SGD over ``model``'s trainable parameters with the recipe's lr, momentum and weight decay."""
    return make_optimizer(
        trainable(model), kind="sgd", lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """Parameters with ``requires_grad`` (frozen layers stay frozen)."""
    return [p for p in model.parameters() if p.requires_grad]


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    *,
    mask: ParamMask | None = None,
    anchor: dict[str, torch.Tensor] | None = None,
) -> None:
    """``zero_grad``, ``backward``, step; with a mask, only masked-in entries may change.

    SalUn multiplies gradients by the mask. That alone lets weight decay and momentum still
    move masked-out weights (Unlearn-Saliency issue #32), so after the step those entries
    are reset to ``anchor`` (their values before unlearning) and their optimizer state
    (momentum, Adam moments) is zeroed, as in the fix of PR #33.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if mask is None:
        optimizer.step()
        return
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        grad = params[name].grad
        if grad is not None:
            grad.mul_(keep)
    optimizer.step()
    assert anchor is not None, "a mask needs the anchor values of the masked-out weights"
    with torch.no_grad():
        for name, keep in mask.items():
            p = params[name]
            p.copy_(torch.where(keep, p, anchor[name]))
            for key, buf in optimizer.state.get(p, {}).items():
                if key != "step" and isinstance(buf, torch.Tensor) and buf.shape == p.shape:
                    buf.mul_(keep)


def l1_norm(model: nn.Module) -> torch.Tensor:
    """``||theta||_1`` over all trainable parameters (Unlearn-Sparse's ``l1_regularization``)."""
    return torch.stack([p.abs().sum() for p in trainable(model)]).sum()


def random_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label, a class drawn uniformly from the ``num_classes - 1`` other classes."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | Callable[[int], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
    progress: Progress,
    loss_fn: LossFn = F.cross_entropy,
    penalty: Penalty | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    mask: ParamMask | None = None,
) -> None:
    """Train ``model`` in place: ``epochs`` passes of shuffled mini-batches over ``(x, y)``.

    Args:
        x: inputs ``(N, ...)`` (any device; batches are moved to ``device``).
        y: int64 targets ``(N,)``, or a function ``epoch -> targets`` (random-label methods
            redraw their labels every epoch).
        loss_fn: ``loss(logits, targets)``; default cross-entropy. Gradient ascent passes ``-CE``.
        penalty: if given, ``penalty(model, epoch)`` is added to every batch loss (l1-sparse).
        scheduler: stepped once at the end of every epoch.
        mask: SalUn weight-saliency mask (see :func:`optimizer_step`).

    The caller has registered ``epochs * n_batches(len(x), batch_size)`` steps with ``progress``.
    The model is left in train mode; the caller's wrapper sets eval mode at the end.
    """
    dtype = model_dtype(model)
    anchor = None
    if mask is not None:
        params = dict(model.named_parameters())
        anchor = {name: params[name].detach().clone() for name in mask}
    model.train()
    for epoch in range(epochs):
        targets = y(epoch) if callable(y) else y
        for idx in batches(len(x), batch_size, generator):
            xb = x[idx.to(x.device)].to(device=device, dtype=dtype)
            yb = targets[idx.to(targets.device)].to(device)
            loss = loss_fn(model(xb), yb)
            if penalty is not None:
                loss = loss + penalty(model, epoch)
            optimizer_step(model, optimizer, loss, mask=mask, anchor=anchor)
            progress.step()
        if scheduler is not None:
            scheduler.step()
        logger.debug("epoch %d/%d done, last batch loss %.4f", epoch + 1, epochs, float(loss.detach()))


def fit_epochs(
    recipe: EpochRecipe,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | Callable[[int], torch.Tensor],
    *,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
    progress: Progress,
    count_steps: bool = True,
    loss_fn: LossFn = F.cross_entropy,
    penalty: Penalty | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    mask: ParamMask | None = None,
) -> None:
    """The last part of a run: :func:`fit` for ``recipe.epochs`` epochs of ``recipe.batch_size``.

    First registers the ``recipe.epochs * n_batches(len(x), recipe.batch_size)`` steps with
    ``progress``, unless ``count_steps`` is False (the caller registered them up front together
    with its other work); after training calls ``progress.finish()``. The other arguments are
    :func:`fit`'s.
    """
    if count_steps:
        progress.add_total(recipe.epochs * n_batches(len(x), recipe.batch_size))
    fit(
        model,
        x,
        y,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        optimizer=optimizer,
        generator=generator,
        device=device,
        progress=progress,
        loss_fn=loss_fn,
        penalty=penalty,
        scheduler=scheduler,
        mask=mask,
    )
    progress.finish()


def sgd_finetune(
    recipe: SgdRecipe,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | Callable[[int], torch.Tensor],
    *,
    generator: torch.Generator,
    device: torch.device,
    progress: Progress,
    loss_fn: LossFn = F.cross_entropy,
    penalty: Penalty | None = None,
) -> None:
    """A whole run of SGD fine-tuning (FT, GA, RL, l1-sparse): :func:`fit_epochs`, :func:`sgd_optimizer`."""
    fit_epochs(
        recipe,
        model,
        x,
        y,
        optimizer=sgd_optimizer(model, recipe),
        generator=generator,
        device=device,
        progress=progress,
        loss_fn=loss_fn,
        penalty=penalty,
    )
