"""Unlearnable examples: sample-wise error-minimising noise (Huang et al., ICLR 2021).

This is data protection, not machine unlearning: the owner adds imperceptible noise ``delta``
to their samples *before* release, chosen so that the samples are already "solved" by a noise
shortcut and a model trained on them learns (almost) nothing about their content. There is no
model to edit and nothing to unlearn afterwards, so it is not a registered method; these
functions generate the noise and measure what it does.

Noise (``HanxunH/Unlearnable-Examples``, ``perturbation.py``): a bi-level min-min problem

    min_theta  E[ min_{||delta_i||_inf <= eps} CE(f_theta(x_i + delta_i), y_i) ]

solved by alternating ``train_steps`` SGD steps on the perturbed data with a PGD pass that
*minimises* the loss over every ``delta_i`` (``steps`` signed steps of ``step_size``, projected
to the L-inf ball and to ``[0, 1]`` pixels), until the error on the perturbed data falls below
``stop_error``. Defaults: eps 8/255, 20 steps of 0.8/255, 10 model steps per round, stop at 1%
error (sample-wise), SGD lr 0.1, momentum 0.9, wd 5e-4.

:func:`protected_share_study` reproduces the "accuracy vs share of unlearnable data" experiment
(Huang et al., Table 2; seed 000): for each protected share ``p``, train on the clean part
``D_c`` alone and on ``D_c`` plus the protected part ``D_u`` (with noise), and report clean test
accuracy of both and the accuracy on the protected samples' clean versions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.errors import ConfigError, DataError
from unlearn_audit.methods._common import batches, clone_model
from unlearn_audit.torchutil import predict_labels

__all__ = ["ShareResult", "UnlearnableNoise", "error_minimizing_noise", "protected_share_study"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnlearnableNoise:
    """Error-minimising noise for a data set.

    Attributes:
        delta: ``(N, ...)`` noise with ``||delta_i||_inf <= eps`` and ``x + delta`` in ``[0, 1]``.
        rounds: alternations run (model steps + PGD pass).
        train_error: error of the noise-generating model on ``x + delta`` at the end.
        seconds: wall time.
    """

    delta: torch.Tensor
    rounds: int
    train_error: float
    seconds: float


def _minimise_delta(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    delta: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
) -> torch.Tensor:
    d = delta.clone()
    for _ in range(steps):
        d.requires_grad_(True)
        loss = F.cross_entropy(model(torch.clamp(x + d, 0, 1)), y)
        (g,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            d = torch.clamp(d - step_size * g.sign(), -eps, eps)
            d = torch.clamp(x + d, 0, 1) - x
    return d.detach()


def _error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    wrong = predict_labels(model, x, batch_size=batch_size, device=x.device) != y.cpu()
    return int(wrong.sum()) / max(1, len(y))


class _Noise:
    """The noise being searched: one delta per sample, or one per class shared by its samples."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, *, eps: float, perturbation: str, gen: torch.Generator
    ):
        self.x, self.y, self.eps, self.perturbation = x, y, eps, perturbation
        classes = int(y.max()) + 1
        shape = (len(y) if perturbation == "samplewise" else classes, *x.shape[1:])
        # uniform random start in the eps-ball, as perturbation.py's random_noise
        self.noise = ((torch.rand(shape, generator=gen, dtype=x.dtype) * 2 - 1) * eps).to(x.device)

    def delta(self) -> torch.Tensor:
        """The per-sample delta, with ``x + delta`` kept in ``[0, 1]``."""
        raw = self.noise if self.perturbation == "samplewise" else self.noise[self.y]
        return torch.clamp(self.x + raw, 0, 1) - self.x

    def update(self, idx: torch.Tensor, found: torch.Tensor) -> None:
        """Take the deltas ``found`` for samples ``idx`` (class-wise: their per-class means)."""
        if self.perturbation == "samplewise":
            self.noise[idx] = found
            return
        for c in torch.unique(self.y[idx]).tolist():
            self.noise[c] = torch.clamp(found[self.y[idx] == c].mean(dim=0), -self.eps, self.eps)


def _check_noise_request(x: torch.Tensor, y: torch.Tensor, perturbation: str, **positive: float) -> None:
    if len(x) != len(y) or len(y) == 0:
        raise DataError(f"x and y must hold the same positive number of samples, got {len(x)} and {len(y)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise DataError(
            f"x must hold pixels in [0, 1], got min {float(x.min()):.3g} and max {float(x.max()):.3g}"
        )
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value!r}")
    if perturbation not in ("samplewise", "classwise"):
        raise ConfigError(f"perturbation must be 'samplewise' or 'classwise', got {perturbation!r}")


def error_minimizing_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 8 / 255,
    steps: int = 20,
    step_size: float = 0.8 / 255,
    train_steps: int = 10,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    stop_error: float = 0.01,
    max_rounds: int = 50,
    perturbation: Literal["samplewise", "classwise"] = "samplewise",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> UnlearnableNoise:
    """Error-minimising noise (Huang et al. 2021), generated with a copy of ``model``.

    Args:
        model: the noise-generating model (a fresh, untrained model in the paper); not modified.
        x: ``(N, C, H, W)`` pixels in ``[0, 1]``; y: ``(N,)`` int64 labels.
        eps: L-inf radius in pixel units (8/255).
        steps, step_size: PGD steps per pass and their size (20, 0.8/255).
        train_steps: SGD steps on the perturbed data per round (10).
        batch_size, lr, momentum, weight_decay: SGD of the generating model (128, 0.1, 0.9, 5e-4).
        stop_error: stop when the model's error on ``x + delta`` falls below this (0.01).
        max_rounds: give up after this many rounds (the last noise is returned) (50).
        perturbation: ``samplewise`` (one delta per sample) or ``classwise`` (one delta per class:
            after each batch's PGD pass a class's delta becomes the mean of its samples' deltas, as
            in ``perturbation.py``; the paper stops class-wise search at 10% error) (samplewise).
        seed: the uniform random start in the eps-ball and the batch order.

    Raises:
        DataError: pixels outside ``[0, 1]`` or mismatched lengths.
        ConfigError: non-positive eps, steps or rounds.
    """
    _check_noise_request(
        x, y, perturbation, eps=eps, steps=steps, max_rounds=max_rounds, train_steps=train_steps
    )
    dev = torch.device(device)
    start = time.perf_counter()
    work = clone_model(model, dev)
    work.requires_grad_(True)
    xd, yd = x.to(dev), y.to(dev)
    gen = torch.Generator().manual_seed(seed)
    noise = _Noise(xd, yd, eps=eps, perturbation=perturbation, gen=gen)
    delta = noise.delta()
    opt = torch.optim.SGD(work.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    queue: list[torch.Tensor] = []
    error = 1.0
    rounds = 0
    for rounds in range(1, max_rounds + 1):  # noqa: B007 - the count is reported
        work.train()
        for _ in range(train_steps):
            if not queue:
                queue = batches(len(yd), batch_size, gen)
            idx = queue.pop(0).to(dev)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(work(torch.clamp(xd[idx] + delta[idx], 0, 1)), yd[idx]).backward()
            opt.step()
        work.eval()
        for idx in batches(len(yd), batch_size, shuffle=False):
            idx = idx.to(dev)
            noise.update(
                idx, _minimise_delta(work, xd[idx], yd[idx], noise.delta()[idx], eps, steps, step_size)
            )
        delta = noise.delta()
        error = _error(work, torch.clamp(xd + delta, 0, 1), yd)
        logger.debug("unlearnable round %d: error on perturbed data %.4f", rounds, error)
        if error < stop_error:
            break
    return UnlearnableNoise(
        delta=delta.cpu(), rounds=rounds, train_error=error, seconds=time.perf_counter() - start
    )


@dataclass(frozen=True)
class ShareResult:
    """One protected share of :func:`protected_share_study` (accuracies in [0, 1], NaN when undefined).

    Attributes:
        share: fraction of the training set protected with noise.
        n_protected: number of protected samples.
        test_acc_clean_only: test accuracy of a model trained on the clean part ``D_c`` only.
        test_acc_with_protected: test accuracy of a model trained on ``D_c`` plus the protected
            part ``D_u`` (noisy).
        protected_acc_with_protected: accuracy of that model on the *clean* versions of the
            protected samples (it trained on their noisy versions).
        protected_acc_clean_only: accuracy of the clean-only model on the same samples (never seen):
            what "learned nothing from them" looks like.
    """

    share: float
    n_protected: int
    test_acc_clean_only: float
    test_acc_with_protected: float
    protected_acc_with_protected: float
    protected_acc_clean_only: float


def _fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float, seed: int
) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in batches(len(y), batch_size, gen):
            idx = idx.to(x.device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float("nan") if len(y) == 0 else 1.0 - _error(model, x, y)


def protected_share_study(
    make_model: Callable[[int], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    shares: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    noise: UnlearnableNoise | None = None,
    noise_kwargs: dict | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[ShareResult, ...]:
    """Clean and protected accuracy as the protected share of the training set grows.

    The noise is generated once for the whole training set (``noise``, or
    :func:`error_minimizing_noise` on ``make_model(seed)`` with ``noise_kwargs``); share ``p``
    protects the first ``round(p N)`` samples of a seeded permutation. Each model is
    ``make_model(seed)`` trained with Adam (``epochs``, ``batch_size``, ``lr``).

    Args:
        make_model: ``seed -> fresh model``.
        x, y: training set; test_x, test_y: clean test set.

    Returns:
        One :class:`ShareResult` per share, in the order given.

    Raises:
        ConfigError: a share outside ``[0, 1]``.
        DataError: ``noise.delta`` does not match ``x``.
    """
    if any(not 0 <= s <= 1 for s in shares):
        raise ConfigError(f"shares must lie in [0, 1], got {list(shares)}")
    dev = torch.device(device)
    if noise is None:
        noise = error_minimizing_noise(make_model(seed), x, y, seed=seed, device=dev, **(noise_kwargs or {}))
    if noise.delta.shape != x.shape:
        raise DataError(f"noise.delta has shape {tuple(noise.delta.shape)} but x has {tuple(x.shape)}")
    xd, yd, test = x.to(dev), y.to(dev), (test_x.to(dev), test_y.to(dev))
    poisoned = torch.clamp(xd + noise.delta.to(dev), 0, 1)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(dev)

    def train(xs: torch.Tensor, ys: torch.Tensor) -> nn.Module:
        model = make_model(seed).to(dev)
        return _fit(model, xs, ys, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)

    out = []
    for share in shares:
        k = int(round(share * len(y)))
        prot, clean = perm[:k], perm[k:]
        clean_only = train(xd[clean], yd[clean]) if len(clean) else None
        mixed = train(torch.cat([xd[clean], poisoned[prot]]), torch.cat([yd[clean], yd[prot]]))
        out.append(_share_result(share, k, clean_only, mixed, test=test, protected=(xd[prot], yd[prot])))
    return tuple(out)


def _share_result(
    share: float,
    k: int,
    clean_only: nn.Module | None,
    mixed: nn.Module,
    *,
    test: tuple[torch.Tensor, torch.Tensor],
    protected: tuple[torch.Tensor, torch.Tensor],
) -> ShareResult:
    """The accuracies of one share's two models (NaN for the clean-only model when nothing is clean)."""
    return ShareResult(
        share=float(share),
        n_protected=k,
        test_acc_clean_only=_acc(clean_only, *test) if clean_only is not None else math.nan,
        test_acc_with_protected=_acc(mixed, *test),
        protected_acc_with_protected=_acc(mixed, *protected),
        protected_acc_clean_only=_acc(clean_only, *protected) if clean_only is not None else math.nan,
    )
