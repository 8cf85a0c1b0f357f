"""Standard and adversarial training loops.

Adversarial training follows Madry et al. 2018 (PGD inner maximisation, L-inf) or Wong et al.
2020 ("fast is better than free": one FGSM step from a uniform random start, step 1.25*eps).
Runs are repeatable on CPU: the model is initialised and the batches are drawn under ``seed``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from attacks.threat import THREAT_MODELS, threat_model
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError
from unlearn_audit.progress import ProgressFn
from unlearn_audit.torchutil import evaluation_mode, predict_labels

log = logging.getLogger(__name__)

ADVERSARIAL_MODES = ("pgd", "fgsm")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe. Checkpoints record it so reference models can be trained the same way."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3  # Adam default; SGD runs usually want 0.01-0.1
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    adversarial: str | None = None  # None | "pgd" | "fgsm"
    eps: float = THREAT_MODELS["mnist"].eps  # L-inf radius in [0, 1] pixels; default_config: the family's
    alpha: float | None = None  # step size; PGD default 2.5*eps/steps, FGSM default 1.25*eps
    steps: int = 10  # PGD steps during training
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.adversarial is not None and self.adversarial not in ADVERSARIAL_MODES:
            raise ConfigError(f"unknown adversarial training {self.adversarial!r}; use pgd or fgsm")
        if self.adversarial and not self.eps > 0:
            raise ConfigError(f"adversarial training needs eps > 0, got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


def default_config(arch: str, dataset_family: str, **overrides: object) -> TrainConfig:
    """Recipes that reach good accuracy on CPU in minutes for the built-in data sets."""
    base = TrainConfig()
    if arch in ("cnn", "mlp", "logreg"):
        # 15 epochs of batch 64 take the cnn to 100% training and ~97.8% test accuracy on mnist-5k.
        base = replace(base, epochs=15, batch_size=64)
    if arch == "resnet18":
        base = replace(base, optimizer="sgd", lr=0.05, weight_decay=5e-4, epochs=15)
    # Adversarial training defends against the attack the audit evaluates with: the family's threat model.
    base = replace(base, eps=threat_model(dataset_family).eps)
    if dataset_family in ("tabular", "text"):
        # Tables and texts: small models that fit in a few passes (adversarial training in those
        # spaces is not wired into the training loop yet).
        base = replace(base, epochs=20 if dataset_family == "tabular" else 8, batch_size=64, lr=1e-3)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **clean)


@dataclass(frozen=True)
class TrainResult:
    """What a training run did: per-epoch loss and accuracy on the (clean) training data, and time."""

    losses: tuple[float, ...]
    accuracies: tuple[float, ...]
    seconds: float
    config: dict = field(default_factory=dict)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _adversarial_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
):
    from attacks.adversarial import fgsm_perturb, pgd_perturb

    if cfg.adversarial == "fgsm":
        alpha = cfg.alpha if cfg.alpha is not None else 1.25 * cfg.eps
        return fgsm_perturb(model, x, y, cfg.eps, random_start=True, alpha=alpha, generator=gen)
    alpha = cfg.alpha if cfg.alpha is not None else 2.5 * cfg.eps / cfg.steps
    return pgd_perturb(
        model, x, y, cfg.eps, alpha=alpha, steps=cfg.steps, norm="linf", random_start=True, generator=gen
    )


def train_model(
    model: nn.Module,
    data: TensorSet,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``cfg``; returns the training history.

    ``progress(done, total)`` is called after every batch. Batches are drawn from a generator
    seeded with ``cfg.seed``; the caller seeds initialisation (``build_model(seed=...)``).
    """
    if len(data) == 0:
        raise ConfigError("cannot train on an empty set")
    device = torch.device(device)
    model.to(device)
    opt = make_optimizer(model.parameters(), cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    attack_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    n = len(data)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    done = 0
    losses, accs = [], []
    start = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = data.x[idx].to(device)
            y = data.y[idx].to(device)
            if cfg.adversarial:
                x_in = _adversarial_batch(model, x, y, cfg, attack_gen)
            else:
                x_in = x
            logits = model(x_in)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y).sum())
            done += 1
            if progress is not None:
                progress(done, total)
        losses.append(loss_sum / n)
        accs.append(correct / n)
        log.info("epoch %d/%d: loss %.4f acc %.4f", epoch + 1, cfg.epochs, losses[-1], accs[-1])
    model.eval()
    return TrainResult(tuple(losses), tuple(accs), time.perf_counter() - start, cfg.to_dict())


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: torch.device | str = "cpu"):
    """Predicted labels for ``x`` (model put in eval mode for the pass, its mode restored)."""
    with evaluation_mode(model):
        return predict_labels(model, x, batch_size=batch_size, device=device)


def accuracy(model: nn.Module, data: TensorSet, *, device: torch.device | str = "cpu") -> float:
    if len(data) == 0:
        return float("nan")
    return float((predict(model, data.x, device=device) == data.y).float().mean())
